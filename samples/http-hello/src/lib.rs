//! `http-hello`: a standard `wasi:http/proxy` component, written with the `wasi` crate (no
//! nanogrid SDK): it runs unmodified on nanogrid, `wasmtime serve` or any wasi:http host.
//!
//! `GET /anything` → `hello from wasi:http! you asked for GET /anything` (text/plain, with an
//! `x-sample: http-hello` header).

use std::io::Write;

use wasi::http::types::{Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct HttpHello;

fn method_name(m: &Method) -> String {
    match m {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(s) => s.clone(),
    }
}

fn respond(out: ResponseOutparam, status: u16, text: &str) {
    let headers = Fields::from_list(&[
        ("content-type".to_string(), b"text/plain; charset=utf-8".to_vec()),
        ("x-sample".to_string(), b"http-hello".to_vec()),
    ])
    .expect("valid headers");
    let resp = OutgoingResponse::new(headers);
    resp.set_status_code(status).expect("valid status");
    let body = resp.body().expect("body taken once");
    ResponseOutparam::set(out, Ok(resp));
    {
        let mut stream = body.write().expect("stream taken once");
        stream.write_all(text.as_bytes()).expect("write body");
    }
    OutgoingBody::finish(body, None).expect("finish body");
}

impl wasi::exports::http::incoming_handler::Guest for HttpHello {
    fn handle(req: IncomingRequest, out: ResponseOutparam) {
        let path = req.path_with_query().unwrap_or_else(|| "/".into());
        let text = format!("hello from wasi:http! you asked for {} {path}\n", method_name(&req.method()));
        respond(out, 200, &text);
    }
}

wasi::http::proxy::export!(HttpHello);
