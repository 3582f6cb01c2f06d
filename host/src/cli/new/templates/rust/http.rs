//! `{{name}}`: a standard `wasi:http/proxy` component (no nanogrid SDK): it runs unmodified
//! on nanogrid, `wasmtime serve` or any wasi:http host.
//!
//! Build with `nanogrid build`, try it with `nanogrid dev` (see README.md).

use std::io::Write;

use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct App;

/// The answer, apart from the WASI calls, so `cargo test` can check it on the host.
fn answer(path: &str) -> String {
    format!("hello from {{name}}! you asked for {path}\n")
}

impl wasi::exports::http::incoming_handler::Guest for App {
    fn handle(req: IncomingRequest, out: ResponseOutparam) {
        let text = answer(&req.path_with_query().unwrap_or_else(|| "/".into()));
        let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain; charset=utf-8".to_vec())])
            .expect("valid headers");
        let resp = OutgoingResponse::new(headers);
        let body = resp.body().expect("body taken once");
        ResponseOutparam::set(out, Ok(resp));
        body.write().expect("stream taken once").write_all(text.as_bytes()).expect("write body");
        OutgoingBody::finish(body, None).expect("finish body");
    }
}

wasi::http::proxy::export!(App);

#[cfg(test)]
mod tests {
    #[test]
    fn answers_with_the_path() {
        assert!(super::answer("/x").ends_with("you asked for /x\n"));
    }
}
