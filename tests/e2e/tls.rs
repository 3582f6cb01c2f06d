//! HTTPS on the ingress and admin listeners (issue 14): HTTP/2 or HTTP/1.1 by ALPN, and a
//! renewed certificate picked up without a restart, on a file change or on SIGHUP.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use nanogrid::client::Client;
use serde_json::json;

use crate::support::{TestNode, eventually};

/// A new CA: (its PEM, an issuer for certificates).
fn ca(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let pem = params.self_signed(&key).unwrap().pem();
    (pem, rcgen::Issuer::new(params, key))
}

/// Write a certificate for 127.0.0.1 that `issuer` signed, replacing the files at once.
fn write_cert(dir: &Path, issuer: &rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .unwrap()
        .signed_by(&key, issuer)
        .unwrap();
    for (name, text) in [("key.pem", key.serialize_pem()), ("cert.pem", cert.pem())] {
        std::fs::write(dir.join(format!("{name}.new")), text).unwrap();
        std::fs::rename(dir.join(format!("{name}.new")), dir.join(name)).unwrap();
    }
}

/// Whether a client trusting only `ca_pem` gets an answer from `url`.
async fn trusted_by(ca_pem: &str, url: &str) -> bool {
    let r = Client::with_ca_pem(ca_pem.as_bytes()).send(Method::GET, url, &[], Bytes::new()).await;
    r.is_ok_and(|r| r.status == 200)
}

/// The protocol the server picks when the client offers `alpn`.
async fn negotiated(addr: &str, ca_pem: &str, alpn: &[&[u8]]) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap()).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await.unwrap();
    tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

#[tokio::test]
async fn listeners_speak_https_and_pick_up_a_renewed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (first_ca, first) = ca("first CA");
    write_cert(dir.path(), &first);
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let args = ["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
    let mut node = TestNode::start_with_args(true, &args).await;
    assert!(node.ingress.starts_with("https://") && node.admin_url.starts_with("https://"), "{}", node.ingress);
    node.trust(first_ca.as_bytes());
    node.deploy("hello", "hello", json!({})).await;
    let hello = format!("{}/hello/x", node.ingress);
    assert!(trusted_by(&first_ca, &hello).await);
    // A wasi:http component over HTTP/2 (the authority is in the URI, not a Host header),
    // seeing the https scheme.
    node.deploy("web", "http-hello", json!({})).await;
    let r = node.get("/web/").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let addr = node.ingress.trim_start_matches("https://").to_string();
    assert_eq!(negotiated(&addr, &first_ca, &[b"h2", b"http/1.1"]).await.as_deref(), Some(&b"h2"[..]));
    assert_eq!(negotiated(&addr, &first_ca, &[b"http/1.1"]).await.as_deref(), Some(&b"http/1.1"[..]));
    // Plain HTTP to the TLS port (which accepts the connection) gets no HTTP answer.
    let got = crate::support::raw_exchange(&addr, b"GET /hello/x HTTP/1.1\r\nhost: x\r\n\r\n");
    assert!(!got.starts_with(b"HTTP/"), "plain HTTP was answered: {:?}", String::from_utf8_lossy(&got));

    // Renewed by another CA: the node serves it once it sees the files change.
    let (second_ca, second) = ca("second CA");
    write_cert(dir.path(), &second);
    eventually("the node serves the renewed certificate", Duration::from_secs(15), || async {
        trusted_by(&second_ca, &hello).await.then_some(())
    })
    .await;
    assert!(!trusted_by(&first_ca, &hello).await, "the old certificate is gone");

    // On SIGHUP, even when the files' times did not change.
    let stamps: Vec<_> = [&cert, &key].iter().map(|p| std::fs::metadata(p).unwrap().modified().unwrap()).collect();
    let (third_ca, third) = ca("third CA");
    write_cert(dir.path(), &third);
    for (p, t) in [&cert, &key].iter().zip(&stamps) {
        std::fs::File::options().write(true).open(p).unwrap().set_modified(*t).unwrap();
    }
    unsafe { libc::kill(node.pid() as i32, libc::SIGHUP) };
    eventually("the node serves the certificate SIGHUP loaded", Duration::from_secs(15), || async {
        trusted_by(&third_ca, &hello).await.then_some(())
    })
    .await;

    // A renewal that does not load keeps the certificate in use.
    std::fs::write(&key, "not a key").unwrap();
    unsafe { libc::kill(node.pid() as i32, libc::SIGHUP) };
    eventually("the node reports the broken renewal", Duration::from_secs(15), || async {
        node.log().contains("the new TLS certificate does not load; keeping the old one").then_some(())
    })
    .await;
    assert!(trusted_by(&third_ca, &hello).await);
}
