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
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::http::Body;
use crate::ratelog::RateLimited;

#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// Most connections from one client address, an IPv6 /64 counting as one (then new
    /// ones are closed at once; 0: no limit). Behind a proxy, raise it to what the proxy
    /// opens.
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

/// The key an address is counted under: itself for IPv4, its /64 for IPv6 (one host
/// usually holds a whole /64, so counting single addresses would not limit it).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

impl PerIp {
    /// A slot for `ip`, unless it already has `max`.
    pub fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let ip = client_key(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.get(&ip).copied().unwrap_or(0);
        if n >= max {
            return None;
        }
        counts.insert(ip, n + 1);
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
    cores: Option<crate::cores::Cores>,
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
        let Some((permit, stream, peer)) = accept_next(name, &listener, &conns, &mut shutdown).await else { break };
        // 0: no limit per address.
        let slot = match limits.max_connections_per_ip {
            0 => None,
            max => match per_ip.take(peer.ip(), max) {
                Some(s) => Some(s),
                None => {
                    if let Some(dropped) = log.allow("per-ip") {
                        tracing::warn!(listener = name, %peer, limit = max, dropped, "too many connections from one address; closing new ones");
                    }
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (handler, watcher, tls, stop) = (handler.clone(), graceful.watcher(), tls.clone(), shutdown.clone());
        let (stream, rt, on_core) = match &cores {
            None => (Moving::Here(stream), tokio::runtime::Handle::current(), None),
            Some(c) => {
                let (rt, on) = c.next();
                (Moving::to_thread(stream), rt.clone(), Some(on))
            }
        };
        tasks.spawn_on(async move {
            let _held = (permit, slot, on_core);
            let stream = match stream.arrive() {
                Ok(s) => s,
                Err(e) => return tracing::debug!(listener = name, %peer, error = %e, "connection lost moving to its thread"),
            };
            let Some(tls) = tls else {
                return serve_http1(name, peer, stream, limits, watcher, handler).await;
            };
            let accept = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
            match tokio::time::timeout(limits.header_read_timeout, accept).await {
                Ok(Ok(s)) if s.get_ref().1.alpn_protocol() == Some(b"h2") => {
                    serve_http2(name, peer, s, limits, stop, handler).await;
                }
                Ok(Ok(s)) => serve_http1(name, peer, s, limits, watcher, handler).await,
                Ok(Err(e)) => tracing::debug!(listener = name, %peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(listener = name, %peer, "no TLS handshake in time"),
            }
        }, &rt);
    }
    drop(listener);
    // Requests in flight finish (HTTP/1 connections through `graceful`, HTTP/2 ones on
    // their own once told), then whatever is left is cut.
    let drained = async {
        graceful.shutdown().await;
        while tasks.join_next().await.is_some() {}
    };
    tokio::select! {
        _ = drained => tracing::info!(listener = name, "drained"),
        _ = tokio::time::sleep(limits.drain_timeout) => tracing::warn!(listener = name, "drain timed out; closing connections"),
    }
    tasks.abort_all();
    if let Some(cores) = cores {
        cores.stop().await;
    }
}

/// An accepted connection on its way to the runtime that serves it: a stream belongs to
/// the runtime whose I/O driver it was registered with, so one bound for a connection
/// thread ([`crate::cores`]) is let go here and registered again there.
enum Moving {
    Here(TcpStream),
    ToThread(std::io::Result<std::net::TcpStream>),
}

impl Moving {
    fn to_thread(stream: TcpStream) -> Moving {
        Moving::ToThread(stream.into_std())
    }

    /// The stream, on the runtime this runs on.
    fn arrive(self) -> std::io::Result<TcpStream> {
        match self {
            Moving::Here(s) => Ok(s),
            Moving::ToThread(s) => TcpStream::from_std(s?),
        }
    }
}

/// The next connection `listener` accepts, with one of `conns`' permits held for it;
/// `None` once `shutdown` turns true (or its sender is gone). A failed accept (usually
/// out of file descriptors) is logged and tried again 50 ms later instead of spinning.
pub(crate) async fn accept_next(
    name: &'static str,
    listener: &TcpListener,
    conns: &Arc<Semaphore>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(OwnedSemaphorePermit, TcpStream, SocketAddr)> {
    let permit = tokio::select! {
        p = conns.clone().acquire_owned() => p.ok()?,
        _ = shutdown.changed() => return None,
    };
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => return Some((permit, stream, peer)),
                Err(e) => {
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return None,
        }
    }
}

/// One HTTP/1.1 connection (keep-alive; the next request's head must come within the
/// header read timeout).
async fn serve_http1<S, H, F>(
    name: &'static str,
    peer: SocketAddr,
    stream: S,
    limits: ServerLimits,
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
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        // Head and body copied into one buffer and written with one `write`, not handed
        // to `writev` as separate pieces: less CPU per answer for small ones (reused
        // `hello` -3 %, wasi:http -8 %, WASI 0.3 -6 %; docs/BENCHMARKS.md, "Why a reused
        // WASI 0.3 guest costs more"), and what hyper advises for TLS streams anyway.
        .writev(false)
        .max_headers(limits.max_headers)
        .max_header_size(limits.max_head_bytes)
        .max_buf_size(limits.max_head_bytes.max(8192))
        .serve_connection(TokioIo::new(stream), svc);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(listener = name, %peer, error = %e, "connection ended with an error");
    }
}

/// How long an HTTP/2 connection may stay without a request before it is closed (HTTP/1
/// keep-alive connections are held to the header read timeout instead).
const H2_IDLE: Duration = Duration::from_secs(60);

/// One HTTP/2 connection (TLS, by ALPN): closed gracefully when the server stops or when
/// no request has run on it for [`H2_IDLE`], so idle connections cannot pile up.
async fn serve_http2<S, H, F>(
    name: &'static str,
    peer: SocketAddr,
    stream: S,
    limits: ServerLimits,
    mut stop: watch::Receiver<bool>,
    handler: H,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(http::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = http::Response<Body>> + Send + 'static,
{
    let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let last = Arc::new(Mutex::new(tokio::time::Instant::now()));
    let (a, l) = (active.clone(), last.clone());
    let svc = service_fn(move |req| {
        let (handler, a, l) = (handler.clone(), a.clone(), l.clone());
        async move {
            a.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let resp = handler(req).await;
            a.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            *l.lock().unwrap_or_else(|e| e.into_inner()) = tokio::time::Instant::now();
            Ok::<_, Infallible>(resp)
        }
    });
    // At most 256 requests at once on one connection, as a browser opens (HTTP/1 clients
    // get one per connection; the per-address cap bounds connections).
    let conn = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(limits.max_head_bytes as u32)
        .keep_alive_interval(Duration::from_secs(30))
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(H2_IDLE / 4);
    let mut closing = false;
    let ended = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            _ = stop.changed(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tick.tick(), if !closing => {
                let idle = last.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
                if active.load(std::sync::atomic::Ordering::Relaxed) == 0 && idle >= H2_IDLE {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    };
    if let Err(e) = ended {
        tracing::debug!(listener = name, %peer, error = %e, "connection ended with an error");
    }
}
