//! The peer listener's accept loop: a TLS handshake that requires a client certificate of
//! the cluster CA, the caller's node id read from that certificate, then HTTP/2. A
//! request reaches its route only if it names its sender (`x-nanogrid-node`) and that is
//! the node the certificate names. In the cleartext benchmark mode (loopback only) the
//! named sender is taken as it is.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use super::{NODE_HEADER, tls};
use crate::http::{self as h, Body};
use crate::ratelog::RateLimited;
use crate::server::ServerLimits;

/// The authenticated sender of a peer request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub node: String,
}

/// Why the peer listener refused a connection or request (metric labels).
pub const REFUSALS: [&str; 4] = ["handshake", "no-identity", "no-sender", "wrong-node"];

/// Counts of what the peer listener refused, by [`REFUSALS`] reason.
#[derive(Default)]
pub struct PeerStats {
    refused: [AtomicU64; 4],
    pub accepted: AtomicU64,
}

impl PeerStats {
    fn refuse(&self, reason: &'static str) {
        if let Some(i) = REFUSALS.iter().position(|r| *r == reason) {
            self.refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (reason, count) for every reason.
    pub fn refused(&self) -> Vec<(&'static str, u64)> {
        REFUSALS.iter().zip(&self.refused).map(|(r, c)| (*r, c.load(Ordering::Relaxed))).collect()
    }
}

/// Serve the peer listener until `shutdown` turns true. `tls: None` is cleartext.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ServerLimits,
    stats: Arc<PeerStats>,
    mut shutdown: watch::Receiver<bool>,
    handler: H,
) where
    H: Fn(Peer, http::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = http::Response<Body>> + Send + 'static,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let conns = Arc::new(Semaphore::new(limits.max_connections));
    let log = Arc::new(RateLimited::new(Duration::from_secs(10)));
    loop {
        let permit = tokio::select! {
            p = conns.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let (tcp, from) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(listener = "peer", error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let (tls, stats, log, handler) = (tls.clone(), stats.clone(), log.clone(), handler.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            h2.timer(TokioTimer::new())
                .max_concurrent_streams(1024)
                .initial_stream_window_size(4 << 20)
                .initial_connection_window_size(16 << 20)
                .max_frame_size(1 << 20)
                .max_header_list_size(limits.max_head_bytes as u32)
                .keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(10));
            let Some(tls) = tls else {
                let svc = service_fn(move |req| authorize(None, stats.clone(), handler.clone(), req));
                let _ = watcher.watch(h2.serve_connection(TokioIo::new(tcp), svc)).await;
                return;
            };
            let accept = tokio_rustls::TlsAcceptor::from(tls).accept(tcp);
            let stream = match tokio::time::timeout(limits.header_read_timeout, accept).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return refuse(&stats, &log, "handshake", &from, &e.to_string()),
                Err(_) => return refuse(&stats, &log, "handshake", &from, "no handshake in time"),
            };
            let identity = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(tls::identity_of);
            let Some(node) = identity else {
                return refuse(&stats, &log, "no-identity", &from, "the client certificate names no node");
            };
            stats.accepted.fetch_add(1, Ordering::Relaxed);
            let svc = service_fn(move |req| authorize(Some(node.clone()), stats.clone(), handler.clone(), req));
            if let Err(e) = watcher.watch(h2.serve_connection(TokioIo::new(stream), svc)).await {
                tracing::debug!(listener = "peer", %from, error = %e, "peer connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!(listener = "peer", "drained"),
        _ = tokio::time::sleep(limits.drain_timeout) => tracing::warn!(listener = "peer", "drain timed out; closing connections"),
    }
}

fn refuse(stats: &PeerStats, log: &RateLimited, reason: &'static str, from: &std::net::SocketAddr, detail: &str) {
    stats.refuse(reason);
    if let Some(dropped) = log.allow(reason) {
        tracing::warn!(%from, reason, detail, dropped, "refused a peer connection");
    }
}

/// Check that a request names its sender and that the certificate agrees, then route it.
async fn authorize<H, F>(
    identity: Option<String>,
    stats: Arc<PeerStats>,
    handler: H,
    req: http::Request<Incoming>,
) -> Result<http::Response<Body>, Infallible>
where
    H: Fn(Peer, http::Request<Incoming>) -> F,
    F: Future<Output = http::Response<Body>>,
{
    let rid = h::incoming_request_id(req.headers()).unwrap_or_else(|| "peer".into());
    let claimed = req.headers().get(NODE_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
    let Some(claimed) = claimed else {
        stats.refuse("no-sender");
        h::drain(req.into_body()).await;
        let msg = format!("peer requests name their sender in {NODE_HEADER}");
        return Ok(h::error(StatusCode::BAD_REQUEST, "no-sender", &msg, &rid));
    };
    if let Some(node) = identity.as_deref()
        && node != claimed
    {
        stats.refuse("wrong-node");
        h::drain(req.into_body()).await;
        let msg = format!("the client certificate names node {node:?}, but the request says it is from {claimed:?}");
        return Ok(h::error(StatusCode::FORBIDDEN, "wrong-node", &msg, &rid));
    }
    Ok(handler(Peer { node: claimed }, req).await)
}
