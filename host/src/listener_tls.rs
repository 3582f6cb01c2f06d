//! TLS for the ingress and admin listeners (`--tls-cert`, `--tls-key`): HTTP/2 and
//! HTTP/1.1 by ALPN, and a certificate that is read again on SIGHUP or when its files
//! change (checked every 2 s), so a renewed certificate needs no restart. A renewal that
//! does not load (a key that does not match, say) is logged and the old one kept.
//! [`handshake`] runs a connection thread's handshakes on the shared runtime.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;

/// Where the listeners' certificate and key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The certificate the listeners present, replaced when the files change.
#[derive(Debug)]
pub struct CertFiles {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
    provider: Arc<CryptoProvider>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load(files: &TlsFiles, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("reading the TLS certificate {}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", files.cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", files.cert.display());
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("reading the TLS key {} (a PEM private key)", files.key.display()))?;
    let key = provider
        .key_provider
        .load_private_key(key)
        .with_context(|| format!("{} is not a usable private key", files.key.display()))?;
    let certified = CertifiedKey::new(chain, key);
    certified.keys_match().with_context(|| {
        format!("the key {} does not belong to the certificate {}", files.key.display(), files.cert.display())
    })?;
    Ok(certified)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl CertFiles {
    pub fn load(files: TlsFiles) -> anyhow::Result<Arc<CertFiles>> {
        let provider = provider();
        let first = load(&files, &provider)?;
        Ok(Arc::new(CertFiles { files, current: RwLock::new(Arc::new(first)), provider }))
    }

    /// A server config presenting this certificate, offering HTTP/2 and HTTP/1.1.
    pub fn server_config(self: &Arc<Self>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// Read the files again; keep the current certificate if they do not load.
    pub fn reload(&self) -> anyhow::Result<()> {
        let fresh = load(&self.files, &self.provider)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        Ok(())
    }

    /// Reload on SIGHUP or when either file's modification time changes, until `stop`.
    pub async fn watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let stamp = |f: &TlsFiles| (modified(&f.cert), modified(&f.key));
        let mut seen = stamp(&self.files);
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        // After a failed load, try again every tick: a renewal written in two steps may
        // load on the second try without the files' times changing again.
        let mut failed = false;
        loop {
            let why = tokio::select! {
                _ = stop.changed() => return,
                _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => "SIGHUP",
                _ = tokio::time::sleep(Duration::from_secs(2)) => {
                    if stamp(&self.files) == seen && !failed { continue }
                    "the files changed"
                }
            };
            let now = stamp(&self.files);
            match self.reload() {
                Ok(()) => {
                    tracing::info!(cert = %self.files.cert.display(), why, "reloaded the TLS certificate");
                    (seen, failed) = (now, false);
                }
                // Logged once per failed renewal (and on every SIGHUP), not every tick.
                Err(e) if !failed || why == "SIGHUP" => {
                    tracing::error!(error = %format!("{e:#}"), why, "the new TLS certificate does not load; keeping the old one");
                    (seen, failed) = (now, true);
                }
                Err(_) => seen = now,
            }
        }
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// A TLS connection's TCP stream, which can leave the runtime whose I/O driver it is
/// registered with (taken out, it reads and writes nothing: `NotConnected`).
#[derive(Debug)]
pub struct Relocatable(Option<TcpStream>);

impl Relocatable {
    /// `poll` on the stream, or `NotConnected` while it is out.
    fn with<T>(
        self: Pin<&mut Self>,
        poll: impl FnOnce(Pin<&mut TcpStream>) -> Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match self.get_mut().0.as_mut() {
            Some(s) => poll(Pin::new(s)),
            None => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncRead for Relocatable {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        self.with(|s| s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Relocatable {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.with(|s| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.with(|s| s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.with(|s| s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.with(|s| s.poll_shutdown(cx))
    }
}

/// Why a connection got no TLS session.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake failed: {0}")]
    Failed(std::io::Error),
    #[error("no TLS handshake within {0:?}")]
    TimedOut(Duration),
    #[error("the connection could not move between runtimes: {0}")]
    Moving(std::io::Error),
}

/// The server side of a TLS handshake on `stream`, within `limit`. With `offload` (the
/// node's shared multi-threaded runtime, for a connection on a connection thread) the
/// handshake runs there and the session comes back to the runtime this runs on: a
/// handshake is ~200 µs of CPU, which on a thread pinned to its core cannot move to an
/// idle one (docs/BENCHMARKS.md, "Over TLS"). The offloaded handshake is aborted if this
/// future is dropped.
pub async fn handshake(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    limit: Duration,
    offload: Option<&tokio::runtime::Handle>,
) -> Result<TlsStream<Relocatable>, HandshakeError> {
    let accept = move |tcp: TcpStream| async move {
        let accept = tokio_rustls::TlsAcceptor::from(config).accept(Relocatable(Some(tcp)));
        match tokio::time::timeout(limit, accept).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(HandshakeError::Failed(e)),
            Err(_) => Err(HandshakeError::TimedOut(limit)),
        }
    };
    let Some(rt) = offload else {
        return accept(stream).await;
    };
    let std = stream.into_std().map_err(HandshakeError::Moving)?;
    // A set of one: dropping it (this future dropped) aborts the handshake.
    let mut task = tokio::task::JoinSet::new();
    task.spawn_on(
        async move {
            let tcp = TcpStream::from_std(std).map_err(HandshakeError::Moving)?;
            let mut session = accept(tcp).await?;
            let tcp = session
                .get_mut()
                .0
                .0
                .take()
                .ok_or_else(|| HandshakeError::Moving(std::io::ErrorKind::NotConnected.into()))?;
            Ok::<_, HandshakeError>((session, tcp.into_std().map_err(HandshakeError::Moving)?))
        },
        rt,
    );
    let (mut session, std) = match task.join_next().await {
        Some(Ok(done)) => done?,
        // The task panicked or was cut short by the runtime's shutdown.
        Some(Err(e)) => return Err(HandshakeError::Moving(std::io::Error::other(e))),
        // Not reached (one task is in the set), but no panic for it.
        None => return Err(HandshakeError::Moving(std::io::ErrorKind::NotFound.into())),
    };
    session.get_mut().0.0 = Some(TcpStream::from_std(std).map_err(HandshakeError::Moving)?);
    Ok(session)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// `CertFiles`' certificate, noting the thread each handshake asks for it on.
    #[derive(Debug)]
    struct Noting(Arc<CertFiles>, Mutex<Vec<String>>);

    impl ResolvesServerCert for Noting {
        fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            let thread = std::thread::current().name().unwrap_or("?").to_string();
            self.1.lock().unwrap_or_else(|e| e.into_inner()).push(thread);
            self.0.resolve(hello)
        }
    }

    /// A connection on a connection thread has its handshake on the runtime `serve` runs
    /// on (here a worker named `shared-rt`), then is served on its connection thread.
    #[test]
    fn handshakes_of_connection_threads_run_on_the_shared_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&key).unwrap();
        let files = TlsFiles { cert: dir.path().join("cert.pem"), key: dir.path().join("key.pem") };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        let noting = Arc::new(Noting(CertFiles::load(files).unwrap(), Mutex::default()));
        let server_cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(noting.clone());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let client_cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("shared-rt")
            .enable_all()
            .build()
            .unwrap();
        let answer = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let cores = crate::cores::Cores::start("t-tls", 2).unwrap();
            let (stop, stopped) = watch::channel(false);
            let handler = |_req: http::Request<hyper::body::Incoming>| async {
                http::Response::new(crate::http::full(std::thread::current().name().unwrap_or("?").to_string()))
            };
            let limits = crate::server::ServerLimits::default();
            let server = tokio::spawn(crate::server::serve(
                "test",
                listener,
                limits,
                Some(Arc::new(server_cfg)),
                stopped,
                Some(cores),
                handler,
            ));
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(client_cfg));
            let mut tls = connector.connect(name, tcp).await.unwrap();
            tls.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").await.unwrap();
            let mut got = Vec::new();
            tls.read_to_end(&mut got).await.unwrap();
            stop.send(true).unwrap();
            server.await.unwrap();
            String::from_utf8_lossy(&got).into_owned()
        });
        let asked = noting.1.lock().unwrap().clone();
        assert_eq!(asked.len(), 1, "one handshake: {asked:?}");
        assert!(asked[0].starts_with("shared-rt"), "the handshake ran on {asked:?}");
        let body = answer.rsplit("\r\n\r\n").next().unwrap_or_default();
        assert!(body.starts_with("t-tls-"), "served on a connection thread: {answer}");
    }
}
