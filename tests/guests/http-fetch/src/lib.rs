//! Test fixture: a `wasi:http` component that makes outgoing requests.
//!
//! `GET /fetch/{host:port}/{path}` fetches `http://{host:port}/{path}` through
//! `wasi:http/outgoing-handler` and returns its body; 403 with the error when refused.

use std::io::{Read, Write};

use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse, ResponseOutparam,
    Scheme,
};

struct HttpFetch;

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
        ("x-sample".to_string(), b"http-fetch".to_vec()),
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

fn fetch(target: &str) -> Result<String, String> {
    let (authority, path) = target.split_once('/').unwrap_or((target, ""));
    let req = OutgoingRequest::new(Fields::new());
    req.set_scheme(Some(&Scheme::Http)).map_err(|()| "bad scheme")?;
    req.set_authority(Some(authority)).map_err(|()| format!("bad authority {authority}"))?;
    req.set_path_with_query(Some(&format!("/{path}"))).map_err(|()| "bad path")?;
    let future = outgoing_handler::handle(req, None).map_err(|e: ErrorCode| format!("refused: {e:?}"))?;
    future.subscribe().block();
    let resp = future
        .get()
        .ok_or("no response")?
        .map_err(|()| "response taken twice")?
        .map_err(|e| format!("failed: {e:?}"))?;
    let body = resp.consume().map_err(|()| "body taken twice")?;
    let mut text = String::new();
    body.stream().map_err(|()| "stream taken twice")?.read_to_string(&mut text).map_err(|e| e.to_string())?;
    Ok(text)
}

impl wasi::exports::http::incoming_handler::Guest for HttpFetch {
    fn handle(req: IncomingRequest, out: ResponseOutparam) {
        let path = req.path_with_query().unwrap_or_else(|| "/".into());
        if let Some(target) = path.strip_prefix("/fetch/") {
            match fetch(target) {
                Ok(body) => respond(out, 200, &body),
                Err(e) => respond(out, 403, &e),
            }
            return;
        }
        let text = format!("hello from wasi:http! you asked for {} {path}\n", method_name(&req.method()));
        respond(out, 200, &text);
    }
}

wasi::http::proxy::export!(HttpFetch);
