//! [`PeerClient`]: calls to other nodes' peer listeners over one HTTP/2 connection per
//! peer (mutual TLS, or cleartext in the loopback-only benchmark mode), made on first use
//! and made again once closed. A connection is dialed for a node id: with TLS, the
//! handshake fails unless the far end proves it is that node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio::time::Instant;

use super::rpc::{self, PeerRpc, RpcError};
use super::{NODE_HEADER, PROTOCOL, PROTOCOL_HEADER, protocol_mismatch, tls};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One open connection; its driver task ends with it.
struct Conn {
    send: SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
    ended: Ended,
}

/// Why a connection ended, once it has: hyper reports a request on a dead connection as
/// "connection closed"; the driver knows the cause (say, a TLS alert from the peer).
type Ended = tokio::sync::watch::Receiver<Option<End>>;

#[derive(Debug, Clone)]
struct End {
    reason: String,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// The connection to one node at one address.
struct Slot {
    conn: tokio::sync::Mutex<Option<Conn>>,
}

struct Inner {
    me: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// By (node, address): callers may dial a node at an address it does not prove
    /// (stale gossip, say) without disturbing the connection that works.
    pool: Mutex<HashMap<(String, String), Arc<Slot>>>,
}

/// Calls to other nodes. Cheap to clone; the connections are shared.
#[derive(Clone)]
pub struct PeerClient {
    inner: Arc<Inner>,
}

impl PeerClient {
    /// `tls: None` is the cleartext benchmark mode (the node refuses it off loopback).
    pub fn new(me: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        PeerClient { inner: Arc::new(Inner { me: me.to_string(), tls, pool: Mutex::new(HashMap::new()) }) }
    }

    pub fn me(&self) -> &str {
        &self.inner.me
    }

    /// A typed call: `POST R::PATH` with the encoded request, the reply decoded.
    pub async fn call<R: PeerRpc>(
        &self,
        node: &str,
        addr: &str,
        req: &R,
        timeout: Duration,
    ) -> Result<R::Reply, RpcError> {
        let deadline = Instant::now() + timeout;
        let body = rpc::encode(R::CODEC, req)
            .map_err(|e| RpcError::NotSent { node: node.into(), reason: format!("encoding the request: {e}") })?;
        let req = http::Request::builder()
            .method(Method::POST)
            .uri(R::PATH)
            .body(Full::new(body))
            .map_err(|e| RpcError::NotSent { node: node.into(), reason: e.to_string() })?;
        let bytes = self.read(node, self.send(node, addr, req, timeout).await?, R::MAX_REPLY, deadline).await?;
        rpc::decode(R::CODEC, &bytes).map_err(|e| RpcError::Decode { node: node.into(), reason: e })
    }

    /// `GET path` on a peer, the whole answer up to `max` bytes.
    pub async fn fetch(
        &self,
        node: &str,
        addr: &str,
        path: &str,
        max: usize,
        timeout: Duration,
    ) -> Result<Bytes, RpcError> {
        let deadline = Instant::now() + timeout;
        let req = http::Request::builder()
            .method(Method::GET)
            .uri(path)
            .body(Full::new(Bytes::new()))
            .map_err(|e| RpcError::NotSent { node: node.into(), reason: e.to_string() })?;
        let resp = self.send(node, addr, req, timeout).await?;
        self.read(node, resp, max, deadline).await
    }

    async fn read(
        &self,
        node: &str,
        resp: http::Response<Incoming>,
        max: usize,
        deadline: Instant,
    ) -> Result<Bytes, RpcError> {
        let (parts, body) = resp.into_parts();
        let read = tokio::time::timeout_at(deadline, crate::http::read_body(body, max)).await;
        let bytes = match read {
            Err(_) => {
                return Err(RpcError::Failed { node: node.into(), reason: "the answer did not arrive in time".into() });
            }
            Ok(Ok(b)) => b,
            Ok(Err(crate::http::BodyError::TooLarge(_))) => {
                let reason = format!("the answer is longer than {max} bytes");
                return Err(RpcError::Decode { node: node.into(), reason });
            }
            Ok(Err(crate::http::BodyError::Slow(e))) => {
                return Err(RpcError::Failed { node: node.into(), reason: format!("reading the answer: {e}") });
            }
            Ok(Err(crate::http::BodyError::Read(e))) => {
                return Err(RpcError::Failed { node: node.into(), reason: format!("reading the answer: {e}") });
            }
        };
        if parts.status != StatusCode::OK {
            return Err(RpcError::refused(node, parts.status.as_u16(), &bytes));
        }
        Ok(bytes)
    }

    /// Send one request to `node` at `addr`; the answer's head arrives within `timeout`
    /// (its body streams). The request's path is kept; the sender's id is added.
    pub async fn send(
        &self,
        node: &str,
        addr: &str,
        mut req: http::Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<http::Response<Incoming>, RpcError> {
        let not_sent = |reason: String| RpcError::NotSent { node: node.into(), reason };
        let deadline = Instant::now() + timeout;
        let scheme = if self.inner.tls.is_some() { "https" } else { "http" };
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        *req.uri_mut() =
            format!("{scheme}://{node}{target}").parse().map_err(|e| not_sent(format!("bad target: {e}")))?;
        let me = HeaderValue::from_str(&self.inner.me).map_err(|e| not_sent(e.to_string()))?;
        req.headers_mut().insert(NODE_HEADER, me);
        // Unless the request names one already (tests of the peer listener's refusal).
        req.headers_mut().entry(PROTOCOL_HEADER).or_insert(http::HeaderValue::from(PROTOCOL));
        let (mut send, ended) = self.sender(node, addr, deadline).await?;
        match tokio::time::timeout_at(deadline, send.ready()).await {
            Err(_) => return Err(not_sent("the connection had no room for another request in time".into())),
            Ok(Err(e)) => return Err(not_sent(format!("the connection closed: {e}"))),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout_at(deadline, send.try_send_request(req)).await {
            Err(_) => Err(RpcError::Failed { node: node.into(), reason: format!("no answer within {timeout:?}") }),
            Ok(Ok(resp)) => match protocol_mismatch(resp.headers().get(PROTOCOL_HEADER)) {
                None => Ok(resp),
                // A build that checks refused it before any route saw it: nothing ran, so
                // a forward may try the next node.
                Some(why) if resp.status() == StatusCode::CONFLICT && resp.headers().contains_key(PROTOCOL_HEADER) => {
                    Err(not_sent(format!("it refused the request: {why}")))
                }
                // The peer may have acted on it: an older build does not check.
                Some(why) => Err(RpcError::Refused {
                    node: node.into(),
                    status: resp.status().as_u16(),
                    code: "protocol-mismatch".into(),
                    message: format!("node {node} answered, but {why}"),
                }),
            },
            Ok(Err(mut e)) => {
                let unsent = e.take_message().is_some();
                // The connection's own end says more than "connection closed".
                let mut ended = ended;
                let end = tokio::time::timeout(Duration::from_millis(200), ended.wait_for(Option::is_some))
                    .await
                    .ok()
                    .and_then(|r| r.ok().and_then(|v| v.clone()));
                let why = match &end {
                    Some(end) => format!("{}: {}", chain(e.error()), end.reason),
                    None => chain(e.error()),
                };
                // Only a request hyper hands back is surely unsent; whatever ended the
                // connection after that (a TLS error included), the peer may have it.
                if unsent { Err(not_sent(why)) } else { Err(RpcError::Failed { node: node.into(), reason: why }) }
            }
        }
    }

    /// Make sure a connection to `node` at `addr` is up: with TLS, proof that the address
    /// is that node's (its certificate names it and chains to the cluster CA).
    pub async fn confirm(&self, node: &str, addr: &str, timeout: Duration) -> Result<(), RpcError> {
        self.sender(node, addr, Instant::now() + timeout).await.map(|_| ())
    }

    async fn sender(
        &self,
        node: &str,
        addr: &str,
        deadline: Instant,
    ) -> Result<(SendRequest<Full<Bytes>>, Ended), RpcError> {
        let not_sent = |reason: String| RpcError::NotSent { node: node.into(), reason };
        let slot = {
            let mut pool = self.inner.pool.lock().unwrap_or_else(|e| e.into_inner());
            let key = (node.to_string(), addr.to_string());
            pool.entry(key).or_insert_with(|| Arc::new(Slot { conn: tokio::sync::Mutex::new(None) })).clone()
        };
        let mut conn = tokio::time::timeout_at(deadline, slot.conn.lock())
            .await
            .map_err(|_| not_sent("waiting for the connection timed out".into()))?;
        if let Some(c) = conn.as_ref().filter(|c| !c.send.is_closed()) {
            return Ok((c.send.clone(), c.ended.clone()));
        }
        *conn = None;
        let made = tokio::time::timeout_at(deadline.min(Instant::now() + CONNECT_TIMEOUT), self.connect(node, addr))
            .await
            .map_err(|_| not_sent(format!("connecting to {addr} timed out")))?
            .map_err(not_sent)?;
        let got = (made.send.clone(), made.ended.clone());
        *conn = Some(made);
        // The node proved itself at this address: connections to its other addresses are
        // stale (it moved), and go with their slots.
        self.inner.pool.lock().unwrap_or_else(|e| e.into_inner()).retain(|(n, a), _| n != node || a == addr);
        Ok(got)
    }

    async fn connect(&self, node: &str, addr: &str) -> Result<Conn, String> {
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connecting to {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let mut h2 = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(16 << 20)
            .max_frame_size(1 << 20)
            .keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let (end_tx, ended) = tokio::sync::watch::channel(None);
        let (send, driver) = match &self.inner.tls {
            Some(cfg) => {
                let name = tls::server_name(node).ok_or_else(|| format!("{node:?} is not a valid node id"))?;
                let mut stream = tokio_rustls::TlsConnector::from(cfg.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake with {addr} failed (expected node {node}): {e}"))?;
                // TLS 1.3 settles this node's certificate only after the client is done: wait
                // for the peer's first bytes (its HTTP/2 settings, sent at once) so a refusal
                // shows here, as the alert it is, before any request is sent.
                let mut first = vec![0u8; 16 << 10];
                let n = match stream.read(&mut first).await {
                    Ok(0) => return Err(format!("{addr} closed the connection right after the TLS handshake")),
                    Ok(n) => n,
                    Err(e) if is_tls(&e) => return Err(format!("the peer refused this node's certificate: {e}")),
                    Err(e) => return Err(format!("reading from {addr} after the TLS handshake: {e}")),
                };
                first.truncate(n);
                let io = Rewind { first: Bytes::from(first), inner: stream };
                let (send, conn) = h2.handshake(TokioIo::new(io)).await.map_err(|e| e.to_string())?;
                (send, tokio::spawn(drive(conn, end_tx.clone())))
            }
            None => {
                let (send, conn) = h2.handshake(TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
                (send, tokio::spawn(drive(conn, end_tx.clone())))
            }
        };
        tracing::debug!(%node, %addr, "connected to peer");
        Ok(Conn { send, driver, ended })
    }
}

/// A stream whose first bytes were already read: they are read again first.
struct Rewind<S> {
    first: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.first.is_empty() {
            let n = self.first.len().min(buf.remaining());
            let chunk = self.first.split_to(n);
            buf.put_slice(&chunk);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

async fn drive<C: std::future::Future<Output = hyper::Result<()>>>(
    conn: C,
    ended: tokio::sync::watch::Sender<Option<End>>,
) {
    let end = match conn.await {
        Ok(()) => End { reason: "the connection closed".into() },
        Err(e) => {
            tracing::debug!(error = %chain(&e), "peer connection ended");
            End { reason: chain(&e) }
        }
    };
    let _ = ended.send(Some(end));
}

/// An error with its causes, for messages (hyper's own text is only the outermost).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// Whether an I/O error is a TLS one (from rustls, through tokio-rustls).
fn is_tls(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.downcast_ref::<rustls::Error>().is_some())
}
