//! Mutual TLS between nodes: both ends present a certificate issued by the cluster CA,
//! and a certificate's only DNS name is its node's id. A client dials a node *by id*:
//! the handshake succeeds only if the far end holds that node's key, wherever the address
//! came from. A server learns who is calling from the client certificate
//! ([`identity_of`]). TLS 1.3 only (both ends are nanogrid), ALPN `h2`.

use std::sync::Arc;

use anyhow::Context as _;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS settings of one node, both directions.
#[derive(Clone)]
pub struct PeerTls {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
}

fn roots(ca: &CertificateDer<'static>) -> anyhow::Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).context("the cluster CA certificate is not usable as a trust anchor")?;
    Ok(Arc::new(roots))
}

impl PeerTls {
    /// Trust `ca`, present `cert` with `key` (a node's own; see
    /// [`super::secrets::ClusterSecrets::peer_tls`]).
    pub fn new(
        ca: &CertificateDer<'static>,
        cert: &CertificateDer<'static>,
        key: &rustls::pki_types::PrivateKeyDer<'static>,
    ) -> anyhow::Result<PeerTls> {
        let roots = roots(ca)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .context("building the client certificate verifier")?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert.clone()], key.clone_key())
            .context("the node certificate and key do not match")?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        let client = client_config(ca, cert.clone(), key.clone_key())?;
        Ok(PeerTls { server: Arc::new(server), client })
    }
}

/// A client that trusts `ca` and presents `cert` (the node's own; tests also make clients
/// with certificates of other CAs to check they are refused).
pub fn client_config(
    ca: &CertificateDer<'static>,
    cert: CertificateDer<'static>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> anyhow::Result<Arc<ClientConfig>> {
    let mut client = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(vec![cert], key)
        .context("the certificate and key do not match")?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(client))
}

/// The node id a certificate names: its one DNS subject alternative name.
pub fn identity_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    let mut dns = san.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::DNSName(d) => Some(*d),
        _ => None,
    });
    let first = dns.next()?;
    dns.next().is_none().then(|| first.to_string())
}

/// When a certificate expires, in seconds since the epoch.
pub fn expiry_of(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.validity().not_after.timestamp())
}

/// Check that `cert` chains to `ca`, is valid now, and names `node`.
pub fn check_chain(ca: &CertificateDer<'static>, cert: &CertificateDer<'_>, node: &str) -> anyhow::Result<()> {
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(roots(ca)?, provider()).build()?;
    let name = ServerName::try_from(node.to_string())?;
    verifier.verify_server_cert(cert, &[], &name, &[], UnixTime::now())?;
    Ok(())
}

/// The server name a client expects when dialing node `id`.
pub fn server_name(id: &str) -> Option<ServerName<'static>> {
    ServerName::try_from(id.to_string()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::secrets::ClusterSecrets;

    #[test]
    fn a_node_certificate_names_its_node_and_chains_to_its_ca() {
        let d = tempfile::tempdir().unwrap();
        super::super::secrets::init(d.path()).unwrap();
        super::super::secrets::add_node(d.path(), "n7", false).unwrap();
        let s = ClusterSecrets::load(d.path(), "n7").unwrap();
        assert_eq!(identity_of(&s.node_cert).as_deref(), Some("n7"));
        check_chain(&s.ca, &s.node_cert, "n7").unwrap();
        let wrong = check_chain(&s.ca, &s.node_cert, "n8").unwrap_err().to_string();
        assert!(wrong.contains("not valid for name \"n8\""), "{wrong}");
        assert_eq!(identity_of(&s.ca), None, "the CA names no node");
        s.peer_tls().unwrap();
    }
}
