//! A small HTTP client for the admin API and ingress, used by the CLI and the tests.

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

    /// The `error.code` of a platform error body, if it is one.
    pub fn error_code(&self) -> Option<String> {
        self.json().ok()?.get("error")?.get("code")?.as_str().map(str::to_string)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }
}

#[derive(Clone)]
pub struct Client {
    http: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
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
        AdminClient { base: base.trim_end_matches('/').to_string(), token, client: Client::new() }
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
