//! `{{name}}`: a counter per key, kept in kv.
//!
//! - `POST /{{name}}/{key}` adds one (compare-and-swap: concurrent requests lose no count)
//! - `GET /{{name}}/{key}` reads it; `GET /{{name}}/` lists the keys
//!
//! Build with `nanogrid build`, try it with `nanogrid dev` (see README.md).

use nanogrid_sdk::{Error, Request, Response, Service, kv};
use serde_json::json;

struct App;

/// The key a request names, or `None` for the listing.
fn key_of(route: &str) -> Option<&str> {
    Some(route.trim_matches('/')).filter(|k| !k.is_empty())
}

impl Service for App {
    fn handle(req: Request) -> Result<Response, Error> {
        let Some(key) = key_of(req.route()) else {
            return Response::json(200, &json!({ "keys": kv::list_keys("", None, 1000)? }));
        };
        let value = match req.method.as_str() {
            "POST" => kv::increment(key, 1)?,
            "GET" => match kv::get(key)? {
                Some(v) => String::from_utf8_lossy(&v).parse().map_err(|_| Error::internal("not a number"))?,
                None => 0,
            },
            other => return Err(Error::invalid(format!("{other} is not supported here; use GET or POST"))),
        };
        Response::json(200, &json!({ "key": key, "value": value }))
    }
}

nanogrid_sdk::export!(App);

#[cfg(test)]
mod tests {
    #[test]
    fn routes_name_keys() {
        assert_eq!(super::key_of("/visits"), Some("visits"));
        assert_eq!(super::key_of("/"), None);
    }
}
