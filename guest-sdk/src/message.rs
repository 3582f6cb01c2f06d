//! Requests and responses: the generated WIT records plus helpers.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
pub use crate::bindings::nanogrid::service::types::{Request, Response};

impl Request {
    /// A request with the given method and path and no headers or body.
    pub fn new(method: &str, path: &str) -> Self {
        Request { method: method.to_string(), path: path.to_string(), headers: Vec::new(), body: Vec::new() }
    }

    /// A `GET` request for `path`.
    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    /// A `POST` request for `path` with a JSON body.
    pub fn post_json<T: Serialize>(path: &str, value: &T) -> Result<Self, Error> {
        Ok(Self::new("POST", path)
            .with_header("content-type", "application/json")
            .with_body(serde_json::to_vec(value)?))
    }

    /// Add a header (builder style).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Route the call to the node holding `key`'s data in the callee's kv namespace
    /// (the `x-nanogrid-key` header): processing runs next to its data.
    pub fn with_routing_key(self, key: &str) -> Self {
        self.with_header("x-nanogrid-key", key)
    }

    /// Replace the body (builder style).
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The path without its query string: `/items` for `/items?limit=3`.
    pub fn route(&self) -> &str {
        self.path.split_once('?').map_or(self.path.as_str(), |(p, _)| p)
    }

    /// The raw query string, if any: `limit=3` for `/items?limit=3`.
    pub fn query(&self) -> Option<&str> {
        self.path.split_once('?').map(|(_, q)| q)
    }

    /// The first value of a query parameter (no percent-decoding).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }

    /// The first header with this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<&str, Error> {
        Ok(std::str::from_utf8(&self.body)?)
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(serde_json::from_slice(&self.body)?)
    }
}

impl Response {
    /// A response with a status and raw body.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Response { status, headers: Vec::new(), body: body.into() }
    }

    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self::new(status, body.into().into_bytes()).with_header("content-type", "text/plain; charset=utf-8")
    }

    /// An `application/json` response.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Result<Self, Error> {
        Ok(Self::new(status, serde_json::to_vec(value)?).with_header("content-type", "application/json"))
    }

    /// The JSON error response for `err`, in the platform's `{"error":{code,message}}` shape.
    pub fn from_error(err: &Error) -> Self {
        let body = serde_json::json!({ "error": { "code": err.code(), "message": err.message() } });
        Self::new(err.status(), body.to_string()).with_header("content-type", "application/json")
    }

    /// Add a header (builder style).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The first header with this name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 text.
    pub fn text_body(&self) -> Result<&str, Error> {
        Ok(std::str::from_utf8(&self.body)?)
    }

    /// The body parsed as JSON.
    pub fn json_body<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_helpers() {
        let req =
            Request::get("/items/7?limit=3&flag&x=y").with_header("Content-Type", "text/plain").with_body("héllo");
        assert_eq!(req.route(), "/items/7");
        assert_eq!(req.query(), Some("limit=3&flag&x=y"));
        assert_eq!(req.query_param("limit"), Some("3"));
        assert_eq!(req.query_param("flag"), Some(""));
        assert_eq!(req.query_param("nope"), None);
        assert_eq!(req.header("content-type"), Some("text/plain"));
        assert_eq!(req.text().unwrap(), "héllo");
        assert!(req.json::<serde_json::Value>().is_err());
    }

    #[test]
    fn error_responses_have_the_platform_shape() {
        let resp = Response::from_error(&Error::not_found("no such item"));
        assert_eq!(resp.status, 404);
        let v: serde_json::Value = resp.json_body().unwrap();
        assert_eq!(v["error"]["code"], "not-found");
        assert_eq!(v["error"]["message"], "no such item");
        assert_eq!(Response::from_error(&Error::Timeout).status, 504);
    }

    #[test]
    fn json_round_trip() {
        let req = Request::post_json("/", &serde_json::json!({ "a": 1 })).unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.json::<serde_json::Value>().unwrap()["a"], 1);
        let resp = Response::json(201, &[1, 2]).unwrap();
        assert!(resp.is_success());
        assert_eq!(resp.header("CONTENT-TYPE"), Some("application/json"));
    }
}
