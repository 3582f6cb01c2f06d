//! Guests' outgoing HTTP (issue 14): HTTPS with an extra CA, and names that resolve to
//! loopback or link-local addresses refused unless the grant names the address.

use std::sync::Arc;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::TestNode;

/// A CA and a certificate for 127.0.0.1 it signed: (CA PEM, server config).
fn tls_server_config() -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
    let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], der)
        .unwrap();
    (ca_cert.pem(), Arc::new(cfg))
}

/// An HTTPS server on 127.0.0.1 answering `body` to every request; returns its address.
async fn https_server(cfg: Arc<rustls::ServerConfig>, body: &'static str) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let acceptor = tokio_rustls::TlsAcceptor::from(cfg.clone());
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else { return };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let reply =
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn https_out_trusts_the_extra_ca_and_names_resolving_inward_are_refused() {
    let (ca, trusted_cfg) = tls_server_config();
    let (_, untrusted_cfg) = tls_server_config();
    let trusted = https_server(trusted_cfg, "hello over tls").await;
    let untrusted = https_server(untrusted_cfg, "never").await;
    let files = tempfile::tempdir().unwrap();
    let ca_path = files.path().join("ca.pem");
    std::fs::write(&ca_path, ca).unwrap();
    let args = ["--extra-ca", ca_path.to_str().unwrap(), "--resolve", "metadata.test=169.254.169.254"];
    let node = TestNode::start_with_args(true, &args).await;
    let admin_port = node.admin_url.rsplit(':').next().unwrap().to_string();
    let grants =
        json!({ "outbound_http": [trusted, untrusted, format!("localhost:{admin_port}"), "metadata.test:80"] });
    node.deploy("fetch", "http-fetch", json!({ "grants": grants })).await;

    let r = node.get(&format!("/fetch/fetchs/{trusted}/x")).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "hello over tls".to_string()));
    let r = node.get(&format!("/fetch/fetchs/{untrusted}/x")).await;
    assert_eq!(r.status, 403);
    assert!(r.text().contains("TlsCertificateError"), "a CA nobody trusts: {}", r.text());
    // Granted by name, but the name is this node's admin listener on loopback.
    let r = node.get(&format!("/fetch/fetch/localhost:{admin_port}/v1/health")).await;
    assert_eq!(r.status, 403);
    assert!(r.text().contains("DestinationIpProhibited"), "{}", r.text());
    // Granted by name, resolving to the link-local metadata address.
    let r = node.get("/fetch/fetch/metadata.test:80/latest/meta-data").await;
    assert_eq!(r.status, 403);
    assert!(r.text().contains("DestinationIpProhibited"), "{}", r.text());
    assert!(node.log().contains("169.254.169.254"), "the refusal names the address");
}
