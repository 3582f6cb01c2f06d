//! Test fixture: a `wasi:http` handler that counts its requests in nanogrid kv.
//! `GET /` → `visit N`.

use std::io::Write;

use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

// Only the platform's imports: the export comes from the wasi crate's proxy world.
wit_bindgen::generate!({ world: "nanogrid:service/platform@0.1.0", path: "../../../wit", generate_all });

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

impl wasi::exports::http::incoming_handler::Guest for HttpKv {
    fn handle(_req: IncomingRequest, out: ResponseOutparam) {
        let (status, text) = match bump() {
            Ok(n) => (200, format!("visit {n}")),
            Err(e) => (500, e),
        };
        let resp = OutgoingResponse::new(Fields::new());
        resp.set_status_code(status).expect("status");
        let body = resp.body().expect("body");
        ResponseOutparam::set(out, Ok(resp));
        body.write().expect("stream").write_all(text.as_bytes()).expect("write");
        OutgoingBody::finish(body, None).expect("finish");
    }
}

wasi::http::proxy::export!(HttpKv);
