//! A small HTTP client for the admin API and ingress, used by the CLI and the tests. It
//! speaks HTTP and HTTPS (HTTP/2 when the server offers it), trusting the Mozilla roots
//! and the CA in the file `NANOGRID_CA` names, for a node with its own certificate.

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("response is not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The error body, if this is one (from the platform or a guest).
    pub fn error(&self) -> Option<crate::http::ErrorDetail> {
        serde_json::from_slice::<crate::http::ErrorBody>(&self.body).ok().map(|b| b.error)
    }

    /// The `error.code` of an error body, if it is one.
    pub fn error_code(&self) -> Option<String> {
        self.error().map(|e| e.code)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

#[derive(Clone)]
pub struct Client {
    http: HyperClient<Connector, Full<Bytes>>,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// A client trusting the Mozilla roots and, if `NANOGRID_CA` names a readable PEM
    /// file, the CAs in it (an unreadable one is reported on stderr and skipped).
    pub fn new() -> Self {
        let extra = match std::env::var_os("NANOGRID_CA") {
            Some(path) => match std::fs::read(&path) {
                Ok(pem) => pem,
                Err(e) => {
                    eprintln!("warning: NANOGRID_CA {}: {e}; not trusting it", std::path::Path::new(&path).display());
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        Self::with_ca_pem(&extra)
    }

    /// A client that also trusts the CA certificates in `pem` (PEM; may be empty).
    pub fn with_ca_pem(pem: &[u8]) -> Self {
        use rustls::pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem).flatten() {
            let _ = roots.add(cert);
        }
        let tls =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Client { http: HyperClient::builder(TokioExecutor::new()).pool_max_idle_per_host(64).build(connector) }
    }

    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> anyhow::Result<Reply> {
        let mut req = http::Request::builder().method(method.clone()).uri(url);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req.body(Full::new(body)).with_context(|| format!("building request {method} {url}"))?;
        let resp =
            self.http.request(req).await.with_context(|| format!("{method} {url} failed (is the node running?)"))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.with_context(|| format!("reading the response of {method} {url}"))?.to_bytes();
        Ok(Reply { status: parts.status, headers: parts.headers, body })
    }
}

/// The admin API of one node.
#[derive(Clone)]
pub struct AdminClient {
    pub base: String,
    pub token: Option<String>,
    client: Client,
}

impl AdminClient {
    pub fn new(base: &str, token: Option<String>) -> Self {
        Self::with_client(base, token, Client::new())
    }

    /// An admin client over a given HTTP client (one that trusts a node's own CA, say).
    pub fn with_client(base: &str, token: Option<String>, client: Client) -> Self {
        AdminClient { base: base.trim_end_matches('/').to_string(), token, client }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> anyhow::Result<Reply> {
        let mut headers = Vec::new();
        if let Some(t) = &self.token {
            headers.push(("authorization", format!("Bearer {t}")));
        }
        if let Some(ct) = content_type {
            headers.push(("content-type", ct.to_string()));
        }
        self.client.send(method, &format!("{}{path}", self.base), &headers, body).await
    }

    pub async fn call_json(&self, method: Method, path: &str, body: &Value) -> anyhow::Result<Reply> {
        self.call(method, path, Some("application/json"), Bytes::from(body.to_string())).await
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        self.call(Method::GET, path, None, Bytes::new()).await
    }

    pub async fn upload(&self, wasm: Vec<u8>) -> anyhow::Result<Reply> {
        self.call(Method::PUT, "/v1/components", Some("application/wasm"), Bytes::from(wasm)).await
    }
}
