//! TLS for the ingress and admin listeners (`--tls-cert`, `--tls-key`): HTTP/2 and
//! HTTP/1.1 by ALPN, and a certificate that is read again on SIGHUP or when its files
//! change (checked every 2 s), so a renewed certificate needs no restart. A renewal that
//! does not load (a key that does not match, say) is logged and the old one kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

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
