//! Call other services by name. On the same node the call runs in-process; the request id
//! travels with it.
//!
//! ```no_run
//! use nanogrid_sdk::{Error, Request, Response, invoke};
//!
//! fn handle(req: Request) -> Result<Response, Error> {
//!     let stats = invoke::post_json("wordcount", "/?top=3", &serde_json::json!({ "text": req.text()? }))?;
//!     if !stats.is_success() {
//!         return Err(Error::Unavailable(format!("wordcount answered {}", stats.status)));
//!     }
//!     Ok(stats)
//! }
//! # fn main() {}
//! ```

use serde::Serialize;

use crate::bindings::nanogrid::service::invoke as wit;
use crate::{Error, Request, Response};

/// Send `req` to `service` and wait for its response. An error status from the callee is
/// an `Ok` response; `Err` means the call itself failed (unknown service, overload, …).
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::{Error, Request, Response, invoke};
///
/// // Forward a request to the service that holds the item's data.
/// fn handle(req: Request) -> Result<Response, Error> {
///     let item = req.route().trim_matches('/').to_string();
///     invoke::call("items", &req.with_routing_key(&item))
/// }
/// # fn main() {}
/// ```
pub fn call(service: &str, req: &Request) -> Result<Response, Error> {
    wit::call(service, req)
}

/// `GET path` on `service`.
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::{Error, invoke};
///
/// fn documents() -> Result<i64, Error> {
///     let resp = invoke::get("counter", "/docs")?;
///     let v: serde_json::Value = resp.json_body()?;
///     v["value"].as_i64().ok_or_else(|| Error::internal("counter sent no value"))
/// }
/// # fn main() {}
/// ```
pub fn get(service: &str, path: &str) -> Result<Response, Error> {
    call(service, &Request::get(path))
}

/// `POST path` on `service` with a JSON body.
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::{Error, invoke};
///
/// fn word_count(text: &str) -> Result<u64, Error> {
///     let resp = invoke::post_json("wordcount", "/", &serde_json::json!({ "text": text }))?;
///     let v: serde_json::Value = resp.json_body()?;
///     v["words"].as_u64().ok_or_else(|| Error::internal("wordcount sent no count"))
/// }
/// # fn main() {}
/// ```
pub fn post_json<T: Serialize>(service: &str, path: &str, value: &T) -> Result<Response, Error> {
    call(service, &Request::post_json(path, value)?)
}

/// Run several calls concurrently; the results are in the order of `calls`.
///
/// # Example
///
/// ```no_run
/// use nanogrid_sdk::{Error, Request, Response, invoke};
///
/// // Fan out to two services at once and combine their answers.
/// fn handle(req: Request) -> Result<Response, Error> {
///     let calls = vec![
///         ("wordcount".to_string(), Request::post_json("/", &serde_json::json!({ "text": req.text()? }))?),
///         ("counter".to_string(), Request::new("POST", "/docs")),
///     ];
///     let mut bodies = Vec::new();
///     for result in invoke::call_all(&calls) {
///         bodies.push(result?.json_body::<serde_json::Value>()?);
///     }
///     Response::json(200, &serde_json::json!({ "stats": bodies[0], "documents": bodies[1]["value"] }))
/// }
/// # fn main() {}
/// ```
pub fn call_all(calls: &[(String, Request)]) -> Vec<Result<Response, Error>> {
    wit::call_all(calls)
}
