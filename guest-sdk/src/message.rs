//! Requests and responses: the generated WIT records plus helpers.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
/// What a handler receives, and what [`invoke`](crate::invoke) and
/// [`barrier`](crate::barrier) send: `method`, `path` (query string included), `headers`
/// and a raw `body`. Build one with [`new`](Request::new), [`get`](Request::get) or
/// [`post_json`](Request::post_json) and the `with_*` methods; read one with
/// [`route`](Request::route), [`query_param`](Request::query_param),
/// [`header`](Request::header), [`text`](Request::text) and [`json`](Request::json).
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::{Error, Request, Response, Service};
///
/// struct Echo;
///
/// impl Service for Echo {
///     fn handle(req: Request) -> Result<Response, Error> {
///         Ok(Response::text(200, format!("{} {}: {}", req.method, req.route(), req.text()?)))
///     }
/// }
/// # fn main() {}
/// ```
///
/// # In `wit/service.wit`
///
pub use crate::bindings::nanogrid::service::types::Request;

/// What a handler returns, and what a call through [`invoke`](crate::invoke) answers: an
/// HTTP `status`, `headers` and a raw `body`. Build one with [`text`](Response::text),
/// [`json`](Response::json) or [`new`](Response::new); a handler's `Err` is answered with
/// the response [`from_error`](Response::from_error) builds.
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::{Error, Request, Response, Service};
///
/// struct Health;
///
/// impl Service for Health {
///     fn handle(_req: Request) -> Result<Response, Error> {
///         Ok(Response::json(200, &serde_json::json!({ "status": "ok" }))?.with_header("cache-control", "no-store"))
///     }
/// }
/// # fn main() {}
/// ```
pub use crate::bindings::nanogrid::service::types::Response;

impl Request {
    /// A request with the given method and path and no headers or body.
    /// # Example
    ///
    /// ```no_run
    /// use nanogrid_sdk::{Error, Request, Response, invoke};
    ///
    /// // Reset another service's counter.
    /// fn reset(key: &str) -> Result<Response, Error> {
    ///     invoke::call("counter", &Request::new("DELETE", &format!("/{key}")))
    /// }
    /// # fn main() {}
    /// ```
    pub fn new(method: &str, path: &str) -> Self {
        Request { method: method.to_string(), path: path.to_string(), headers: Vec::new(), body: Vec::new() }
    }

    /// A `GET` request for `path`.
    /// # Example
    ///
    /// ```
    /// use nanogrid_sdk::Request;
    ///
    /// let req = Request::get("/items?limit=3");
    /// assert_eq!(req.method, "GET");
    /// assert_eq!(req.query_param("limit"), Some("3"));
    /// ```
    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    /// A `POST` request for `path` with a JSON body.
    /// # Example
    ///
    /// ```no_run
    /// use nanogrid_sdk::{Error, Request, Response, invoke};
    ///
    /// fn count_words(text: &str) -> Result<Response, Error> {
    ///     let req = Request::post_json("/?top=3", &serde_json::json!({ "text": text }))?;
    ///     invoke::call("wordcount", &req)
    /// }
    /// # fn main() {}
    /// ```
    pub fn post_json<T: Serialize>(path: &str, value: &T) -> Result<Self, Error> {
        Ok(Self::new("POST", path)
            .with_header("content-type", "application/json")
            .with_body(serde_json::to_vec(value)?))
    }

    /// Add a header (builder style).
    ///
    /// # Example
    ///
    /// ```no_run
    /// use nanogrid_sdk::{Error, Request, Response, invoke};
    ///
    /// fn upload(csv: &str) -> Result<Response, Error> {
    ///     let req = Request::new("PUT", "/reports/today").with_header("content-type", "text/csv").with_body(csv);
    ///     invoke::call("reports", &req)
    /// }
    /// # fn main() {}
    /// ```
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Route the call to the node holding `key`'s data in the callee's kv namespace
    /// (the `x-nanogrid-key` header): processing runs next to its data.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use nanogrid_sdk::{Error, Request, Response, invoke};
    ///
    /// // Run the user's recount on the node that holds `user/{id}` in `profiles`.
    /// fn recount(id: &str) -> Result<Response, Error> {
    ///     invoke::call("profiles", &Request::new("POST", "/recount").with_routing_key(&format!("user/{id}")))
    /// }
    /// # fn main() {}
    /// ```
    pub fn with_routing_key(self, key: &str) -> Self {
        self.with_header("x-nanogrid-key", key)
    }

    /// Replace the body (builder style).
    ///
    /// # Example
    ///
    /// ```
    /// use nanogrid_sdk::Request;
    ///
    /// let req = Request::new("PUT", "/notes/1").with_body("buy milk");
    /// assert_eq!(req.text().unwrap(), "buy milk");
    /// ```
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The path without its query string: `/items` for `/items?limit=3`.
    ///
    /// # Example
    ///
    /// ```
    /// use nanogrid_sdk::{Error, Request};
    ///
    /// fn key(req: &Request) -> Result<&str, Error> {
    ///     match req.route().trim_matches('/') {
    ///         "" => Err(Error::invalid("name a key: /{key}")),
    ///         key => Ok(key),
    ///     }
    /// }
    ///
    /// assert_eq!(key(&Request::get("/visits?by=2")).unwrap(), "visits");
    /// assert!(key(&Request::get("/")).is_err());
    /// ```
    pub fn route(&self) -> &str {
        self.path.split_once('?').map_or(self.path.as_str(), |(p, _)| p)
    }

    /// The raw query string, if any: `limit=3` for `/items?limit=3`.
    ///
    /// # Example
    ///
    /// ```
    /// use nanogrid_sdk::Request;
    ///
    /// let req = Request::get("/items?limit=3&cas");
    /// assert_eq!(req.query(), Some("limit=3&cas"));
    /// assert!(req.query().is_some_and(|q| q.split('&').any(|p| p == "cas")));
    /// assert_eq!(Request::get("/items").query(), None);
    /// ```
    pub fn query(&self) -> Option<&str> {
        self.path.split_once('?').map(|(_, q)| q)
    }

    /// The first value of a query parameter (no percent-decoding).
    /// A parameter without `=` (`?cas`) has the value `""`.
    ///
    /// # Example
    ///
    /// ```
    /// use nanogrid_sdk::{Error, Request};
    ///
    /// fn top(req: &Request) -> Result<usize, Error> {
    ///     match req.query_param("top") {
    ///         Some(s) => s.parse().map_err(|_| Error::invalid(format!("top={s} is not a number"))),
    ///         None => Ok(5),
    ///     }
    /// }
    ///
    /// assert_eq!(top(&Request::get("/?top=10")).unwrap(), 10);
    /// assert_eq!(top(&Request::get("/")).unwrap(), 5);
    /// assert!(top(&Request::get("/?top=all")).is_err());
    /// ```
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }

    /// The first header with this name, compared case-insensitively.
    ///
    /// # Example
    ///
    /// ```
    /// use nanogrid_sdk::{Error, Request};
    ///
    /// fn require_json(req: &Request) -> Result<(), Error> {
    ///     match req.header("content-type") {
    ///         Some(t) if t.starts_with("application/json") => Ok(()),
    ///         _ => Err(Error::invalid("send application/json")),
    ///     }
    /// }
    ///
    /// let req = Request::new("POST", "/").with_header("Content-Type", "application/json");
    /// assert!(require_json(&req).is_ok());
    /// assert!(require_json(&Request::new("POST", "/")).is_err());
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 text; an `invalid` error when it is not UTF-8.
    ///
    /// # Example
    ///
    /// ```
    /// use nanogrid_sdk::{Error, Request, Response};
    ///
    /// fn shout(req: Request) -> Result<Response, Error> {
    ///     Ok(Response::text(200, req.text()?.to_uppercase()))
    /// }
    ///
    /// let resp = shout(Request::new("POST", "/").with_body("hi")).unwrap();
    /// assert_eq!(resp.text_body().unwrap(), "HI");
    /// assert_eq!(shout(Request::new("POST", "/").with_body(vec![0xff])).unwrap_err().status(), 400);
    /// ```
    pub fn text(&self) -> Result<&str, Error> {
        Ok(std::str::from_utf8(&self.body)?)
    }

    /// The body parsed as JSON; an `invalid` error when it is not the JSON of a `T`.
    ///
    /// # Example
    ///
    /// ```
    /// use nanogrid_sdk::{Error, Request, Response};
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Input {
    ///     text: String,
    /// }
    ///
    /// fn handle(req: Request) -> Result<Response, Error> {
    ///     let input: Input = req.json()?;
    ///     Ok(Response::text(200, input.text.to_lowercase()))
    /// }
    ///
    /// let req = Request::post_json("/", &serde_json::json!({ "text": "Hello" })).unwrap();
    /// assert_eq!(handle(req).unwrap().text_body().unwrap(), "hello");
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(serde_json::from_slice(&self.body)?)
    }
}

impl Response {
    /// A response with a status and raw body.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use nanogrid_sdk::{Error, Request, Response, kv};
    ///
    /// fn handle(req: Request) -> Result<Response, Error> {
    ///     match kv::get(req.route())? {
    ///         Some(bytes) => Ok(Response::new(200, bytes).with_header("content-type", "application/octet-stream")),
    ///         None => Ok(Response::new(404, Vec::new())),
    ///     }
    /// }
    /// # fn main() {}
    /// ```
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Response { status, headers: Vec::new(), body: body.into() }
    }

    /// A `text/plain` response.
    ///
    /// # Example
    ///
    /// ```
    /// use nanogrid_sdk::{Error, Request, Response};
    ///
    /// fn hello(req: Request) -> Result<Response, Error> {
    ///     let name = req.query_param("name").unwrap_or("world");
    ///     Ok(Response::text(200, format!("hello, {name}!\n")))
    /// }
    ///
    /// let resp = hello(Request::get("/?name=grid")).unwrap();
    /// assert_eq!(resp.text_body().unwrap(), "hello, grid!\n");
    /// assert_eq!(resp.header("content-type"), Some("text/plain; charset=utf-8"));
    /// ```
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self::new(status, body.into().into_bytes()).with_header("content-type", "text/plain; charset=utf-8")
    }

    /// An `application/json` response.
    ///
    /// # Example
    ///
    /// ```
    /// use nanogrid_sdk::{Error, Request, Response};
    ///
    /// #[derive(serde::Serialize)]
    /// struct Stats {
    ///     words: usize,
    /// }
    ///
    /// fn handle(req: Request) -> Result<Response, Error> {
    ///     let words = req.text()?.split_whitespace().count();
    ///     Response::json(200, &Stats { words })
    /// }
    ///
    /// let resp = handle(Request::new("POST", "/").with_body("the cat and the hat")).unwrap();
    /// assert_eq!(resp.text_body().unwrap(), r#"{"words":5}"#);
    /// ```
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Result<Self, Error> {
        Ok(Self::new(status, serde_json::to_vec(value)?).with_header("content-type", "application/json"))
    }

    /// The JSON error response for `err`, in the platform's `{"error":{code,message}}` shape.
    /// A handler's `Err` is turned into this response; call it to answer an error yourself.
    ///
    /// # Example
    ///
    /// ```
    /// use nanogrid_sdk::{Error, Response};
    ///
    /// let resp = Response::from_error(&Error::not_found("no such item"));
    /// assert_eq!(resp.status, 404);
    /// assert_eq!(resp.text_body().unwrap(), r#"{"error":{"code":"not-found","message":"no such item"}}"#);
    /// ```
    pub fn from_error(err: &Error) -> Self {
        let body = serde_json::json!({ "error": { "code": err.code(), "message": err.message() } });
        Self::new(err.status(), body.to_string()).with_header("content-type", "application/json")
    }

    /// Add a header (builder style).
    ///
    /// # Example
    ///
    /// ```
    /// use nanogrid_sdk::Response;
    ///
    /// let resp = Response::text(303, "see /items").with_header("location", "/items");
    /// assert_eq!(resp.header("Location"), Some("/items"));
    /// ```
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The first header with this name, compared case-insensitively.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use nanogrid_sdk::{Error, invoke};
    ///
    /// fn etag(service: &str, path: &str) -> Result<Option<String>, Error> {
    ///     Ok(invoke::get(service, path)?.header("etag").map(str::to_string))
    /// }
    /// # fn main() {}
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 text; an `invalid` error when it is not UTF-8.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use nanogrid_sdk::{Error, invoke};
    ///
    /// fn greeting() -> Result<String, Error> {
    ///     Ok(invoke::get("hello", "/")?.text_body()?.trim().to_string())
    /// }
    /// # fn main() {}
    /// ```
    pub fn text_body(&self) -> Result<&str, Error> {
        Ok(std::str::from_utf8(&self.body)?)
    }

    /// The body parsed as JSON; an `invalid` error when it is not the JSON of a `T`.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use nanogrid_sdk::{Error, invoke};
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Count {
    ///     value: i64,
    /// }
    ///
    /// fn visits(page: &str) -> Result<i64, Error> {
    ///     let count: Count = invoke::get("counter", &format!("/{page}"))?.json_body()?;
    ///     Ok(count.value)
    /// }
    /// # fn main() {}
    /// ```
    pub fn json_body<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// Whether the status is 2xx.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use nanogrid_sdk::{Error, invoke};
    ///
    /// fn stats(text: &str) -> Result<serde_json::Value, Error> {
    ///     let resp = invoke::post_json("wordcount", "/", &serde_json::json!({ "text": text }))?;
    ///     if !resp.is_success() {
    ///         return Err(Error::Unavailable(format!("wordcount answered {}", resp.status)));
    ///     }
    ///     resp.json_body()
    /// }
    /// # fn main() {}
    /// ```
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
