//! Accept loop shared by the ingress and admin listeners: HTTP/1.1 with keep-alive (and,
//! over TLS, HTTP/2 when the client offers it by ALPN), a header read timeout, a
//! connection cap overall and per client address, and graceful shutdown that lets
//! requests in flight finish. Request bodies are paced by the handlers
//! ([`crate::pace`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::http::Body;
use crate::ratelog::RateLimited;

#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// Most connections from one client address (then new ones are closed at once).
    pub max_connections_per_ip: usize,
    /// How long shutdown waits for requests in flight.
    pub drain_timeout: Duration,
    /// Most request headers (then 431).
    pub max_headers: usize,
    /// Largest request head (request line + headers), in bytes (then 431).
    pub max_head_bytes: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_connections_per_ip: 256,
            drain_timeout: Duration::from_secs(30),
            max_headers: 100,
            max_head_bytes: 64 << 10,
        }
    }
}

/// Open connections (or handshakes) per client address, each counted until its
/// [`IpSlot`] drops.
#[derive(Default)]
pub struct PerIp {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

pub struct IpSlot {
    ip: IpAddr,
    all: Arc<PerIp>,
}

impl PerIp {
    /// A slot for `ip`, unless it already has `max`.
    pub fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot { ip, all: self.clone() })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.all.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Serve `handler` on `listener` until `shutdown` turns true, then drain. With `tls`,
/// every connection starts with a TLS handshake (the certificate comes from `tls`, which
/// may change while serving).
pub async fn serve<H, F>(
    name: &'static str,
    listener: TcpListener,
    limits: ServerLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut shutdown: watch::Receiver<bool>,
    handler: H,
) where
    H: Fn(http::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = http::Response<Body>> + Send + 'static,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let conns = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = Arc::new(PerIp::default());
    let log = RateLimited::new(Duration::from_secs(10));
    // Every connection's task, so none outlives the listener.
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = conns.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Some(slot) = per_ip.take(peer.ip(), limits.max_connections_per_ip) else {
            if let Some(dropped) = log.allow("per-ip") {
                tracing::warn!(listener = name, %peer, limit = limits.max_connections_per_ip, dropped, "too many connections from one address; closing new ones");
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (handler, watcher, tls) = (handler.clone(), graceful.watcher(), tls.clone());
        tasks.spawn(async move {
            let _held = (permit, slot);
            let Some(tls) = tls else {
                return serve_conn(name, peer, stream, limits, false, watcher, handler).await;
            };
            let accept = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
            match tokio::time::timeout(limits.header_read_timeout, accept).await {
                Ok(Ok(s)) => {
                    let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
                    serve_conn(name, peer, s, limits, h2, watcher, handler).await;
                }
                Ok(Err(e)) => tracing::debug!(listener = name, %peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(listener = name, %peer, "no TLS handshake in time"),
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!(listener = name, "drained"),
        _ = tokio::time::sleep(limits.drain_timeout) => tracing::warn!(listener = name, "drain timed out; closing connections"),
    }
    tasks.abort_all();
}

/// One connection, HTTP/2 if ALPN chose it, else HTTP/1.1.
async fn serve_conn<S, H, F>(
    name: &'static str,
    peer: SocketAddr,
    stream: S,
    limits: ServerLimits,
    h2: bool,
    watcher: hyper_util::server::graceful::Watcher,
    handler: H,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(http::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = http::Response<Body>> + Send + 'static,
{
    let svc = service_fn(move |req| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(handler(req).await) }
    });
    let io = TokioIo::new(stream);
    let ended = if h2 {
        let conn = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_concurrent_streams(256)
            .max_header_list_size(limits.max_head_bytes as u32)
            .keep_alive_interval(Duration::from_secs(30))
            .serve_connection(io, svc);
        watcher.watch(conn).await
    } else {
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(true)
            .max_headers(limits.max_headers)
            .max_header_size(limits.max_head_bytes)
            .max_buf_size(limits.max_head_bytes.max(8192))
            .serve_connection(io, svc);
        watcher.watch(conn).await
    };
    if let Err(e) = ended {
        tracing::debug!(listener = name, %peer, error = %e, "connection ended with an error");
    }
}
