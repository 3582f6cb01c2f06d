//! Test fixture: a `wasi:http` handler that also uses nanogrid's own imports.
//! - `GET /` → `visit N` (a count kept in nanogrid kv)
//! - `GET /whoami` → `"{static count} {request id} {trace id}"` (the static shows instance
//!   reuse; the ids come from nanogrid's context)
//! - `GET /trap` → panics
//! - `GET /keep` → answers `kept`, but keeps its response body open in a static instead of
//!   finishing it (a guest holding a resource of its request past `handle`)
//! - `GET /no-answer` → drops its response slot without setting it and returns
//! - `GET /error-code` → sets an error code (`internal-error`) as its response

use std::io::Write;

use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

// Only the platform's imports: the export comes from the wasi crate's proxy world.
wit_bindgen::generate!({ world: "nanogrid:service/platform@0.1.0", path: "../../../wit", generate_all });

use nanogrid::service::context;
use nanogrid::service::kv::{self, Consistency};

struct HttpKv;

fn bump() -> Result<u64, String> {
    loop {
        let current = kv::get("visits", Consistency::Quorum).map_err(|e| format!("{e:?}"))?;
        let n = current.as_ref().and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok()).unwrap_or(0) + 1;
        if kv::compare_and_swap("visits", current.as_deref(), n.to_string().as_bytes()).map_err(|e| format!("{e:?}"))? {
            return Ok(n);
        }
    }
}

/// The body `/keep` never finishes.
static KEPT: std::sync::Mutex<Option<OutgoingBody>> = std::sync::Mutex::new(None);

fn answer(out: ResponseOutparam, status: u16, text: &str) -> OutgoingBody {
    let resp = OutgoingResponse::new(Fields::new());
    resp.set_status_code(status).expect("status");
    let body = resp.body().expect("body");
    ResponseOutparam::set(out, Ok(resp));
    body.write().expect("stream").write_all(text.as_bytes()).expect("write");
    body
}

impl wasi::exports::http::incoming_handler::Guest for HttpKv {
    fn handle(req: IncomingRequest, out: ResponseOutparam) {
        let path = req.path_with_query().unwrap_or_default();
        let (status, text) = match path.as_str() {
            "/whoami" => {
                use std::sync::atomic::{AtomicU64, Ordering};
                static RUNS: AtomicU64 = AtomicU64::new(0);
                let runs = RUNS.fetch_add(1, Ordering::Relaxed) + 1;
                (200, format!("{runs} {} {}", context::request_id(), context::trace_id()))
            }
            "/trap" => panic!("http-kv was asked to trap"),
            "/no-answer" => {
                drop(out);
                return;
            }
            "/error-code" => {
                let code = wasi::http::types::ErrorCode::InternalError(Some("asked to fail".into()));
                ResponseOutparam::set(out, Err(code));
                return;
            }
            "/keep" => {
                let body = answer(out, 200, "kept");
                *KEPT.lock().unwrap() = Some(body);
                return;
            }
            _ => match bump() {
                Ok(n) => (200, format!("visit {n}")),
                Err(e) => (500, e),
            },
        };
        OutgoingBody::finish(answer(out, status, &text), None).expect("finish");
    }
}

wasi::http::proxy::export!(HttpKv);
