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

use super::{NODE_HEADER, PROTOCOL, PROTOCOL_HEADER, protocol_mismatch, tls};
use crate::http::{self as h, Body};
use crate::ratelog::RateLimited;
use crate::server::ServerLimits;

/// The authenticated sender of a peer request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub node: String,
}

/// Why the peer listener refused a connection or request (metric labels).
pub const REFUSALS: [&str; 6] = ["handshake", "busy", "no-identity", "no-sender", "wrong-node", "protocol"];

/// Counts of what the peer listener refused, by [`REFUSALS`] reason.
#[derive(Default)]
pub struct PeerStats {
    refused: [AtomicU64; 6],
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

/// TLS handshakes in progress at once, and from one address: anyone who can connect can
/// start one, so they get a small budget of their own (an established peer connection is
/// long-lived and needs none), and a short deadline.
const MAX_HANDSHAKES: usize = 256;
const MAX_HANDSHAKES_PER_IP: usize = 16;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

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
    let budget = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let handshakes = Arc::new(crate::server::PerIp::default());
    let log = Arc::new(RateLimited::new(Duration::from_secs(10)));
    // Every connection's task, so none outlives the listener.
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let Some((permit, tcp, from)) = crate::server::accept_next("peer", &listener, &conns, &mut shutdown).await
        else {
            break;
        };
        let slot = budget.clone().try_acquire_owned().ok().zip(handshakes.take(from.ip(), MAX_HANDSHAKES_PER_IP));
        let Some(slot) = slot else {
            refuse(&stats, &log, "busy", &from, "too many TLS handshakes under way");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let conn = Connection { tls: tls.clone(), stats: stats.clone(), log: log.clone(), limits, from };
        let (handler, watcher) = (handler.clone(), graceful.watcher());
        tasks.spawn(async move {
            let _permit = permit;
            conn.serve(tcp, slot, watcher, handler).await;
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!(listener = "peer", "drained"),
        _ = tokio::time::sleep(limits.drain_timeout) => tracing::warn!(listener = "peer", "drain timed out; closing connections"),
    }
    tasks.abort_all();
}

/// One accepted connection.
struct Connection {
    tls: Option<Arc<rustls::ServerConfig>>,
    stats: Arc<PeerStats>,
    log: Arc<RateLimited>,
    limits: ServerLimits,
    from: std::net::SocketAddr,
}

impl Connection {
    async fn serve<H, F>(
        self,
        tcp: tokio::net::TcpStream,
        slot: (tokio::sync::OwnedSemaphorePermit, crate::server::IpSlot),
        watcher: hyper_util::server::graceful::Watcher,
        handler: H,
    ) where
        H: Fn(Peer, http::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = http::Response<Body>> + Send + 'static,
    {
        let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(1024)
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(16 << 20)
            .max_frame_size(1 << 20)
            .max_header_list_size(self.limits.max_head_bytes as u32)
            .keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(10));
        let stats = self.stats.clone();
        let Some(tls) = self.tls else {
            drop(slot);
            let svc = service_fn(move |req| authorize(None, stats.clone(), handler.clone(), req));
            let _ = watcher.watch(h2.serve_connection(TokioIo::new(tcp), svc)).await;
            return;
        };
        let (from, log) = (self.from, &self.log);
        let accept = tokio_rustls::TlsAcceptor::from(tls).accept(tcp);
        let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return refuse(&stats, log, "handshake", &from, &e.to_string()),
            Err(_) => return refuse(&stats, log, "handshake", &from, "no handshake in time"),
        };
        drop(slot);
        let identity = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(tls::identity_of);
        let Some(node) = identity else {
            return refuse(&stats, log, "no-identity", &from, "the client certificate names no node");
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let svc = service_fn(move |req| authorize(Some(node.clone()), stats.clone(), handler.clone(), req));
        if let Err(e) = watcher.watch(h2.serve_connection(TokioIo::new(stream), svc)).await {
            tracing::debug!(listener = "peer", %from, error = %e, "peer connection ended with an error");
        }
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
    let mut resp = checked(identity, &stats, handler, req).await;
    resp.headers_mut().insert(PROTOCOL_HEADER, http::HeaderValue::from(PROTOCOL));
    Ok(resp)
}

/// [`authorize`]'s checks: the sender, its certificate, its peer protocol.
async fn checked<H, F>(
    identity: Option<String>,
    stats: &PeerStats,
    handler: H,
    req: http::Request<Incoming>,
) -> http::Response<Body>
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
        return h::error(StatusCode::BAD_REQUEST, "no-sender", &msg, &rid);
    };
    if let Some(node) = identity.as_deref()
        && node != claimed
    {
        stats.refuse("wrong-node");
        h::drain(req.into_body()).await;
        let msg = format!("the client certificate names node {node:?}, but the request says it is from {claimed:?}");
        return h::error(StatusCode::FORBIDDEN, "wrong-node", &msg, &rid);
    }
    if let Some(why) = protocol_mismatch(req.headers().get(PROTOCOL_HEADER)) {
        stats.refuse("protocol");
        h::drain(req.into_body()).await;
        let msg = format!("refused a request from node {claimed}: {why}");
        // A node of another release sends many (Raft heartbeats alone, ten a second).
        static LOG: std::sync::LazyLock<RateLimited> =
            std::sync::LazyLock::new(|| RateLimited::new(Duration::from_secs(10)));
        if let Some(dropped) = LOG.allow("protocol") {
            tracing::error!(node = %claimed, dropped, "{msg}");
        }
        return h::error(StatusCode::CONFLICT, "protocol-mismatch", &msg, &rid);
    }
    handler(Peer { node: claimed }, req).await
}
