//! `gateway`: composes `wordcount` and `counter` through `invoke`.
//!
//! `POST /` with text in the body: counts its words with `wordcount` and bumps the
//! `gateway-docs` counter with `counter`, both calls running concurrently through
//! `invoke::call_all`, and returns both results:
//! `{"request_id": …, "trace_id": …, "stats": {…wordcount…}, "documents": N}`.

use nanogrid_sdk::{Error, Request, Response, Service, context, invoke};
use serde_json::{Value, json};

struct Gateway;

fn body_json(service: &str, resp: Result<Response, Error>) -> Result<Value, Error> {
    let resp = resp?;
    if !resp.is_success() {
        return Err(Error::Unavailable(format!(
            "{service} answered {}: {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        )));
    }
    resp.json_body()
}

impl Service for Gateway {
    fn handle(req: Request) -> Result<Response, Error> {
        let text = req.text()?.to_string();
        let calls = vec![
            ("wordcount".to_string(), Request::post_json("/", &json!({ "text": text }))?),
            ("counter".to_string(), Request::new("POST", "/gateway-docs")),
        ];
        let mut results = invoke::call_all(&calls).into_iter();
        let stats = body_json("wordcount", results.next().expect("two results"))?;
        let docs = body_json("counter", results.next().expect("two results"))?;
        Response::json(
            200,
            &json!({
                "request_id": context::request_id(),
                "trace_id": context::trace_id(),
                "stats": stats,
                "documents": docs["value"],
            }),
        )
    }
}

nanogrid_sdk::export!(Gateway);
