//! Test fixture: a `wasi:http` 0.3 handler that also uses nanogrid's own imports.
//! - `GET /whoami` → `"{static count} {request id} {trace id}"` (the static shows instance
//!   reuse; the ids come from nanogrid's context), its body written by a task of its own
//! - `GET /linger` → answers `lingering`, and leaves a task running for 30 s after its
//!   response is complete (a guest with work of its own past its request)
//! - `GET /trap` → panics

use std::sync::atomic::{AtomicU64, Ordering};

use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::{wit_bindgen as rt, wit_future, wit_stream};

// Only the platform's imports: the export comes from the wasip3 crate's service world.
wit_bindgen::generate!({ world: "nanogrid:service/platform@0.1.0", path: "../../../wit", generate_all });

use nanogrid::service::context;

wasip3::http::service::export!(HttpKv);

struct HttpKv;

/// A `text/plain` response whose body `text` is written by a spawned task, after `handle`
/// has returned its head.
fn answer(text: String) -> Response {
    let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())]).expect("a valid header");
    let (mut tx, rx) = wit_stream::new();
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(headers, Some(rx), trailers_rx);
    rt::spawn(async move {
        tx.write_all(text.into_bytes()).await;
        drop(tx);
        let _ = trailers_tx.write(Ok(None)).await;
    });
    response
}

impl wasip3::exports::http::handler::Guest for HttpKv {
    async fn handle(req: Request) -> Result<Response, ErrorCode> {
        let path = req.get_path_with_query().unwrap_or_default();
        match path.as_str() {
            "/whoami" => {
                static RUNS: AtomicU64 = AtomicU64::new(0);
                let runs = RUNS.fetch_add(1, Ordering::Relaxed) + 1;
                Ok(answer(format!("{runs} {} {}", context::request_id(), context::trace_id())))
            }
            "/linger" => {
                rt::spawn(async {
                    wasip3::clocks::monotonic_clock::wait_for(30_000_000_000).await;
                });
                Ok(answer("lingering".into()))
            }
            "/trap" => panic!("http3-kv was asked to trap"),
            other => Ok(answer(format!("no route {other}"))),
        }
    }
}
