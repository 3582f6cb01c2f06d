//! `http-stream`: streaming bodies through `wasi:http`, in both directions.
//!
//! - `GET /{mib}` streams a generated body of that many MiB, 64 KiB at a time
//!   (`?trap_after={mib}` panics after that many MiB have been sent).
//! - `POST /` reads the request body as a stream and answers `{"bytes": n, "sum": s}`
//!   (a byte sum), so uploads of any size pass through in constant memory.

use std::io::{Read, Write};

use wasi::http::types::{Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam};

const CHUNK: usize = 64 << 10;

struct HttpStream;

fn start(out: ResponseOutparam, status: u16, content_type: &str) -> OutgoingBody {
    let headers =
        Fields::from_list(&[("content-type".to_string(), content_type.as_bytes().to_vec())]).expect("headers");
    let resp = OutgoingResponse::new(headers);
    resp.set_status_code(status).expect("status");
    let body = resp.body().expect("body");
    ResponseOutparam::set(out, Ok(resp));
    body
}

fn query_param<'a>(path: &'a str, name: &str) -> Option<&'a str> {
    path.split_once('?')?.1.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

impl wasi::exports::http::incoming_handler::Guest for HttpStream {
    fn handle(req: IncomingRequest, out: ResponseOutparam) {
        let path = req.path_with_query().unwrap_or_else(|| "/".into());
        if matches!(req.method(), Method::Post | Method::Put) {
            let body = req.consume().expect("body");
            let mut stream = body.stream().expect("stream");
            let (mut bytes, mut sum) = (0u64, 0u64);
            let mut buf = vec![0u8; CHUNK];
            loop {
                match Read::read(&mut stream, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        bytes += n as u64;
                        sum = buf[..n].iter().fold(sum, |s, b| s.wrapping_add(u64::from(*b)));
                    }
                    Err(e) => panic!("reading the request body failed: {e}"),
                }
            }
            let body = start(out, 200, "application/json");
            let mut w = body.write().expect("stream");
            write!(w, "{{\"bytes\": {bytes}, \"sum\": {sum}}}").expect("write");
            drop(w);
            OutgoingBody::finish(body, None).expect("finish");
            return;
        }
        let route = path.split('?').next().unwrap_or("/");
        let mib: usize = route.trim_matches('/').parse().unwrap_or(1);
        let trap_after: Option<usize> = query_param(&path, "trap_after").and_then(|v| v.parse().ok());
        let body = start(out, 200, "application/octet-stream");
        {
            let mut w = body.write().expect("stream");
            let chunk: Vec<u8> = (0..CHUNK).map(|i| b'a' + (i % 26) as u8).collect();
            for i in 0..(mib << 20) / CHUNK {
                if trap_after.is_some_and(|t| i * CHUNK >= t << 20) {
                    w.flush().expect("flush");
                    panic!("http-stream was asked to trap mid-stream");
                }
                w.write_all(&chunk).expect("write chunk");
            }
        }
        OutgoingBody::finish(body, None).expect("finish");
    }
}

wasi::http::proxy::export!(HttpStream);
