//! Test fixture: a `wasi:http` component that makes outgoing requests.
//!
//! `GET /fetch/{host:port}/{path}` fetches `http://{host:port}/{path}` (`/fetchs/...`:
//! `https://`) through `wasi:http/outgoing-handler` and answers 200 with its body, or 403
//! with the error.

use std::io::{Read, Write};

use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingRequest, OutgoingBody, OutgoingRequest, OutgoingResponse, ResponseOutparam, Scheme,
};

struct HttpFetch;

fn fetch(target: &str, scheme: Scheme) -> Result<String, String> {
    let (authority, path) = target.split_once('/').unwrap_or((target, ""));
    let req = OutgoingRequest::new(Fields::new());
    req.set_scheme(Some(&scheme)).map_err(|()| "bad scheme")?;
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
        let path = req.path_with_query().unwrap_or_default();
        let fetched = match (path.strip_prefix("/fetch/"), path.strip_prefix("/fetchs/")) {
            (Some(t), _) => Some(fetch(t, Scheme::Http)),
            (_, Some(t)) => Some(fetch(t, Scheme::Https)),
            _ => None,
        };
        let (status, text) = match fetched {
            Some(Ok(body)) => (200, body),
            Some(Err(e)) => (403, e),
            None => (404, "use /fetch/{host:port}/{path} or /fetchs/{host:port}/{path}".to_string()),
        };
        let resp = OutgoingResponse::new(Fields::new());
        resp.set_status_code(status).expect("status");
        let body = resp.body().expect("body");
        ResponseOutparam::set(out, Ok(resp));
        body.write().expect("stream").write_all(text.as_bytes()).expect("write");
        OutgoingBody::finish(body, None).expect("finish");
    }
}

wasi::http::proxy::export!(HttpFetch);
