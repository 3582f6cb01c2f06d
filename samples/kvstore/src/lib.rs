//! `kvstore`: a key-value store over HTTP, at the consistency level the caller asks for.
//!
//! - `PUT /{key}` stores the body; `GET /{key}` reads it (404 when absent); `DELETE /{key}`
//! - `?consistency=one|quorum|all` on any of them (default `quorum`)
//! - `POST /{key}?cas` with `{"expected": "old" | null, "new": "value"}` replaces the value
//!   only if it is still `expected` (`null`: the key must be absent) → `{"swapped": bool}`
//! - `GET /` lists keys: `?prefix=`, `?after=`, `?limit=` (default 100)
//!
//! On a cluster, `quorum` and `all` writes survive the loss of any minority of a key's
//! replicas; `one` answers fastest and may be lost with its primary.

use nanogrid_sdk::kv::{self, Consistency};
use nanogrid_sdk::{Error, Request, Response, Service};
use serde::Deserialize;
use serde_json::json;

struct KvStore;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Cas {
    expected: Option<String>,
    new: String,
}

fn level(req: &Request) -> Result<Consistency, Error> {
    match req.query_param("consistency") {
        None | Some("quorum") => Ok(Consistency::Quorum),
        Some("one") => Ok(Consistency::One),
        Some("all") => Ok(Consistency::All),
        Some(other) => Err(Error::invalid(format!("consistency={other} is not one of one, quorum, all"))),
    }
}

impl Service for KvStore {
    fn handle(req: Request) -> Result<Response, Error> {
        let key = req.route().trim_start_matches('/').to_string();
        let c = level(&req)?;
        if key.is_empty() {
            if req.method != "GET" {
                return Err(Error::invalid("name a key: /kvstore/{key}"));
            }
            let limit = match req.query_param("limit") {
                Some(s) => s.parse().map_err(|_| Error::invalid(format!("limit={s} is not a number")))?,
                None => 100,
            };
            let keys = kv::list_keys(req.query_param("prefix").unwrap_or(""), req.query_param("after"), limit)?;
            return Response::json(200, &json!({ "keys": keys }));
        }
        match req.method.as_str() {
            "GET" => match kv::get_with(&key, c)? {
                Some(v) => Ok(Response::new(200, v)),
                None => Err(Error::not_found(format!("no key {key:?}"))),
            },
            "PUT" => {
                kv::set_with(&key, &req.body, c)?;
                Response::json(200, &json!({ "key": key, "stored": req.body.len() }))
            }
            "DELETE" => {
                kv::delete_with(&key, c)?;
                Response::json(200, &json!({ "key": key, "deleted": true }))
            }
            "POST" if req.query_param("cas").is_some() || req.query().is_some_and(|q| q.split('&').any(|p| p == "cas")) => {
                let cas: Cas = req.json()?;
                let swapped = kv::compare_and_swap(&key, cas.expected.as_deref().map(str::as_bytes), cas.new.as_bytes())?;
                Response::json(200, &json!({ "key": key, "swapped": swapped }))
            }
            other => Err(Error::invalid(format!(
                "{other} /{key} is not supported; use GET, PUT, DELETE, or POST with ?cas"
            ))),
        }
    }
}

nanogrid_sdk::export!(KvStore);
