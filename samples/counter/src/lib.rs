//! `counter`: a per-key counter kept in kv.
//!
//! - `POST /{key}` (or `POST /{key}?by=N`) increments and returns `{"key":…,"value":…}`
//! - `GET /{key}` reads without changing it
//! - `DELETE /{key}` resets it
//! - `GET /` lists the counters
//!
//! Increments are compare-and-swap loops, so concurrent requests never lose a count.

use nanogrid_sdk::{Error, Request, Response, Service, kv};
use serde_json::json;

struct Counter;

fn read(key: &str) -> Result<i64, Error> {
    match kv::get(key)? {
        Some(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::internal(format!("counter {key:?} holds a non-integer"))),
        None => Ok(0),
    }
}

impl Service for Counter {
    fn handle(req: Request) -> Result<Response, Error> {
        let key = req.route().trim_matches('/');
        if key.is_empty() {
            if req.method != "GET" {
                return Err(Error::invalid("name a counter: /counter/{key}"));
            }
            let keys = kv::list_keys("", None, 1000)?;
            return Response::json(200, &json!({ "counters": keys }));
        }
        let value = match req.method.as_str() {
            "POST" | "PUT" => {
                let by = match req.query_param("by") {
                    Some(s) => s.parse::<i64>().map_err(|_| Error::invalid(format!("by={s} is not an integer")))?,
                    None => 1,
                };
                kv::increment(key, by)?
            }
            "GET" => read(key)?,
            "DELETE" => {
                kv::delete(key)?;
                0
            }
            other => return Err(Error::invalid(format!("method {other} is not supported; use GET, POST or DELETE"))),
        };
        Response::json(200, &json!({ "key": key, "value": value }))
    }
}

nanogrid_sdk::export!(Counter);
