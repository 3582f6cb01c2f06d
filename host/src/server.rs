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

/// What the accept loops of one listener share: the limits, the connection permits and
/// per-address counts, the graceful-shutdown signal and every connection's task.
struct Shared<H> {
    name: &'static str,
    limits: ServerLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: watch::Receiver<bool>,
    graceful: hyper_util::server::graceful::GracefulShutdown,
    conns: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
    log: RateLimited,
    /// Every connection's task, so none outlives the listener.
    tasks: Mutex<tokio::task::JoinSet<()>>,
    /// The runtime `serve` runs on (the node's shared one): TLS handshakes of connections
    /// on connection threads run there.
    offload: tokio::runtime::Handle,
    handler: H,
}

/// Serve `handler` on `listener` until `shutdown` turns true, then drain. With `tls`,
/// every connection starts with a TLS handshake (the certificate comes from `tls`, which
/// may change while serving). With `cores`, each connection thread accepts on its own
/// socket of the listener's address (`SO_REUSEPORT`; `reuseport_group`).
pub async fn serve<H, F>(
    name: &'static str,
    listener: TcpListener,
    limits: ServerLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: watch::Receiver<bool>,
    cores: Option<crate::cores::Cores>,
    handler: H,
) where
    H: Fn(http::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = http::Response<Body>> + Send + 'static,
{
    let shared = Arc::new(Shared {
        name,
        limits,
        tls,
        stop: shutdown.clone(),
        graceful: hyper_util::server::graceful::GracefulShutdown::new(),
        conns: Arc::new(Semaphore::new(limits.max_connections)),
        per_ip: Arc::new(PerIp::default()),
        log: RateLimited::new(Duration::from_secs(10)),
        tasks: Mutex::new(tokio::task::JoinSet::new()),
        offload: tokio::runtime::Handle::current(),
        handler,
    });
    let cores = cores.map(Arc::new);
    match cores.clone() {
        None => accept_loop(&shared, listener, shutdown, None).await,
        Some(c) => match reuseport_group(listener, c.threads()) {
            Ok(group) => {
                let loops: Vec<_> = group
                    .into_iter()
                    .enumerate()
                    .map(|(i, l)| {
                        let (shared, stop, c) = (shared.clone(), shutdown.clone(), c.clone());
                        c.handle(i).clone().spawn(async move {
                            match TcpListener::from_std(l) {
                                Ok(l) => accept_loop(&shared, l, stop, Some((&c, i))).await,
                                Err(e) => tracing::error!(listener = shared.name, error = %e, "a connection thread could not take its socket; it accepts nothing"),
                            }
                        })
                    })
                    .collect();
                for l in loops {
                    if let Err(e) = l.await {
                        tracing::error!(listener = name, error = %e, "an accept loop ended abnormally");
                    }
                }
            }
            Err((listener, e)) => {
                tracing::warn!(listener = name, error = %e, "no socket per connection thread (SO_REUSEPORT); one accept loop hands connections to the threads");
                accept_loop(&shared, listener, shutdown, Some((&c, usize::MAX))).await;
            }
        },
    }
    drain(shared).await;
    if let Some(cores) = cores.and_then(Arc::into_inner) {
        cores.stop().await;
    }
}

/// Requests in flight finish (HTTP/1 connections through `graceful`, HTTP/2 ones on their
/// own once told), then whatever is left is cut.
async fn drain<H>(shared: Arc<Shared<H>>) {
    let (name, limit) = (shared.name, shared.limits.drain_timeout);
    let (graceful, mut tasks) = match Arc::try_unwrap(shared) {
        Ok(s) => (Some(s.graceful), s.tasks.into_inner().unwrap_or_else(|e| e.into_inner())),
        // An accept loop that could not be joined still holds it (it panicked): cut.
        Err(s) => (None, std::mem::take(&mut *s.tasks.lock().unwrap_or_else(|e| e.into_inner()))),
    };
    let drained = async {
        if let Some(g) = graceful {
            g.shutdown().await;
        }
        while tasks.join_next().await.is_some() {}
    };
    tokio::select! {
        _ = drained => tracing::info!(listener = name, "drained"),
        _ = tokio::time::sleep(limit) => tracing::warn!(listener = name, "drain timed out; closing connections"),
    }
    tasks.abort_all();
}

/// Accept on `listener` until `shutdown` turns true. `on`: the connection threads and the
/// one this loop runs on (`usize::MAX`: none of them, so every connection is handed to
/// one); `None`: connections run on the runtime this loop runs on.
async fn accept_loop<H, F>(
    shared: &Arc<Shared<H>>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    on: Option<(&crate::cores::Cores, usize)>,
) where
    H: Fn(http::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = http::Response<Body>> + Send + 'static,
{
    let name = shared.name;
    loop {
        let Some((permit, stream, peer)) = accept_then_permit(name, &listener, &shared.conns, &mut shutdown).await
        else {
            break;
        };
        // 0: no limit per address.
        let slot = match shared.limits.max_connections_per_ip {
            0 => None,
            max => match shared.per_ip.take(peer.ip(), max) {
                Some(s) => Some(s),
                None => {
                    if let Some(dropped) = shared.log.allow("per-ip") {
                        tracing::warn!(listener = name, %peer, limit = max, dropped, "too many connections from one address; closing new ones");
                    }
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (stream, rt, on_core) = match on {
            None => (Moving::Here(stream), tokio::runtime::Handle::current(), None),
            Some((cores, here)) => {
                let (i, rt, on) = cores.place(here);
                let stream = if i == here { Moving::Here(stream) } else { Moving::to_thread(stream) };
                (stream, rt.clone(), Some(on))
            }
        };
        let conn = Conn {
            name,
            peer,
            limits: shared.limits,
            tls: shared.tls.clone(),
            offload: on.map(|_| shared.offload.clone()),
            stop: shared.stop.clone(),
            watcher: shared.graceful.watcher(),
            handler: shared.handler.clone(),
        };
        let conn = serve_connection(conn, stream, (permit, slot, on_core));
        let mut tasks = shared.tasks.lock().unwrap_or_else(|e| e.into_inner());
        while tasks.try_join_next().is_some() {}
        tasks.spawn_on(conn, &rt);
    }
}

/// What one connection takes from its server (not the server's shared state itself,
/// which drains once the accept loops end).
struct Conn<H> {
    name: &'static str,
    peer: SocketAddr,
    limits: ServerLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// Where its TLS handshake runs, if not where it is served (see `Shared::offload`).
    offload: Option<tokio::runtime::Handle>,
    stop: watch::Receiver<bool>,
    watcher: hyper_util::server::graceful::Watcher,
    handler: H,
}

/// The next connection `listener` accepts, then one of `conns`' permits for it; `None`
/// once `shutdown` is true (or its sender gone). While it waits for a permit this loop
/// accepts nothing more, so at the cap each accept loop holds at most one connection
/// beyond it. The permit comes second because each connection thread accepts on its own
/// socket: a permit taken before the accept (as [`accept_next`] does for the one peer
/// listener) could sit with a loop whose socket gets nothing while a connection waits on
/// another's.
async fn accept_then_permit(
    name: &'static str,
    listener: &TcpListener,
    conns: &Arc<Semaphore>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(OwnedSemaphorePermit, TcpStream, SocketAddr)> {
    let (stream, peer) = accept_retrying(name, listener, shutdown).await?;
    tokio::select! {
        p = conns.clone().acquire_owned() => Some((p.ok()?, stream, peer)),
        () = stopping(shutdown) => None,
    }
}

/// Once `shutdown` is true (at once if it is already), or its sender is gone.
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// One accepted connection, on the runtime it was placed on, holding what counts it.
async fn serve_connection<H, F>(
    c: Conn<H>,
    stream: Moving,
    _held: (OwnedSemaphorePermit, Option<IpSlot>, Option<crate::cores::OnCore>),
) where
    H: Fn(http::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = http::Response<Body>> + Send + 'static,
{
    let (name, peer) = (c.name, c.peer);
    let stream = match stream.arrive() {
        Ok(s) => s,
        Err(e) => return tracing::debug!(listener = name, %peer, error = %e, "connection lost moving to its thread"),
    };
    let Some(tls) = c.tls else {
        return serve_http1(name, peer, stream, c.limits, c.watcher, c.handler).await;
    };
    let limit = c.limits.header_read_timeout;
    match crate::listener_tls::handshake(stream, tls, limit, c.offload.as_ref()).await {
        Ok(s) if s.get_ref().1.alpn_protocol() == Some(b"h2") => {
            serve_http2(name, peer, s, c.limits, c.stop, c.handler).await;
        }
        Ok(s) => serve_http1(name, peer, s, c.limits, c.watcher, c.handler).await,
        Err(e) => tracing::debug!(listener = name, %peer, error = %e, "no TLS session"),
    }
}

/// `n` listening sockets on `listener`'s address, `listener` the first, all with
/// `SO_REUSEPORT`, so the kernel spreads new connections over them and each connection
/// thread accepts its own: no accept loop elsewhere that wakes a thread per connection
/// (docs/BENCHMARKS.md, "A new connection per request"). On an error `listener` comes
/// back unchanged but for the option, which alone changes nothing.
fn reuseport_group(
    listener: TcpListener,
    n: usize,
) -> Result<Vec<std::net::TcpListener>, (TcpListener, std::io::Error)> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and an int option of the size given.
    let set = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set != 0 {
        return Err((listener, std::io::Error::last_os_error()));
    }
    let more = || -> std::io::Result<Vec<std::net::TcpListener>> {
        let addr = listener.local_addr()?;
        (1..n)
            .map(|_| {
                let s =
                    if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
                s.set_reuseaddr(true)?;
                s.set_reuseport(true)?;
                s.bind(addr)?;
                s.listen(1024)?.into_std()
            })
            .collect()
    };
    let rest = match more() {
        Ok(rest) => rest,
        Err(e) => return Err((listener, e)),
    };
    let first = listener.into_std().map_err(|e| {
        // Not seen in practice (taking it out of the runtime's epoll failed): make a
        // fresh listener impossible to return, so say so and serve nothing more here.
        tracing::error!(error = %e, "could not move the listener to its connection thread");
        e
    });
    match first {
        Ok(first) => Ok(std::iter::once(first).chain(rest).collect()),
        Err(_) => Ok(rest),
    }
}

/// An accepted connection on its way to the runtime that serves it: a stream belongs to
/// the runtime whose I/O driver it was registered with, so one bound for another
/// connection thread ([`crate::cores`]) is let go here and registered again there.
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
        () = stopping(shutdown) => return None,
    };
    let (stream, peer) = accept_retrying(name, listener, shutdown).await?;
    Some((permit, stream, peer))
}

/// The next connection `listener` accepts; `None` once `shutdown` is true. A failed
/// accept (usually out of file descriptors) is logged and tried again 50 ms later
/// instead of spinning.
async fn accept_retrying(
    name: &'static str,
    listener: &TcpListener,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => return Some(c),
                Err(e) => {
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = stopping(shutdown) => return None,
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// One request on a new connection (`Connection: close`): the answer's body.
    async fn get_once(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        out.rsplit("\r\n\r\n").next().unwrap_or_default().to_string()
    }

    /// A server on a free loopback port with two connection threads named `{threads}-{i}`,
    /// each answer the name of the thread that served it: its address, its stop switch
    /// and its task.
    async fn start(
        threads: &str,
        limits: ServerLimits,
    ) -> (SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cores = crate::cores::Cores::start(threads, 2).unwrap();
        let (stop, stopped) = watch::channel(false);
        let handler = |_req: http::Request<Incoming>| async {
            http::Response::new(crate::http::full(std::thread::current().name().unwrap_or("?").to_string()))
        };
        (addr, stop, tokio::spawn(serve("test", listener, limits, None, stopped, Some(cores), handler)))
    }

    /// Listening IPv4 sockets on `port` (Linux's `/proc/net/tcp`, state `0A`).
    fn listening_on(port: u16) -> usize {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let local = format!(":{port:04X}");
        let listening = |l: &&str| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&local) && f[3] == "0A"
        };
        table.lines().skip(1).filter(listening).count()
    }

    /// With connection threads, each accepts on its own socket of the address (two
    /// listening sockets), and new connections one after another (so no thread ever has
    /// more open than the other, and each stays where it was accepted) reach both.
    #[tokio::test]
    async fn each_connection_thread_accepts_its_own_connections() {
        let (addr, stop, server) = start("t-accept", ServerLimits::default()).await;
        let mut threads = BTreeSet::new();
        threads.insert(get_once(addr).await);
        assert_eq!(listening_on(addr.port()), 2, "a listening socket per thread");
        for _ in 0..31 {
            threads.insert(get_once(addr).await);
        }
        let both: BTreeSet<String> = ["t-accept-0", "t-accept-1"].map(String::from).into();
        assert_eq!(threads, both, "32 connections, each on one of the two threads");
        // It stops when told, and the address is free again.
        stop.send(true).unwrap();
        server.await.unwrap();
        assert_eq!(listening_on(addr.port()), 0, "every socket of the group closed");
    }

    /// Shutdown with a keep-alive connection open and idle on a connection thread: the
    /// connection is told to close and the server ends long before its drain timeout.
    #[tokio::test]
    async fn shutdown_closes_idle_keep_alive_connections_on_connection_threads() {
        // Neither the drain nor an idle connection's own timeout would end it in time.
        let long = Duration::from_secs(60);
        let limits = ServerLimits { drain_timeout: long, header_read_timeout: long, ..ServerLimits::default() };
        let (addr, stop, server) = start("t-drain", limits).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        while !got.windows(8).any(|w| w == b"t-drain-") {
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the answer: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        stop.send(true).unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(20), server).await;
        assert!(ended.is_ok(), "the server waited for its idle connection");
        let mut rest = Vec::new();
        assert_eq!(s.read_to_end(&mut rest).await.unwrap(), 0, "the connection was closed");
    }
}
