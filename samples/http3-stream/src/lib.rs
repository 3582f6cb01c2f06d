//! `http3-stream`: an unmodified `wasi:http@0.3` (WASI 0.3, async) component with
//! streaming bodies, the counterpart of the 0.2 `http-stream` sample.
//!
//! - `GET /{mib}` streams a generated body of that many MiB, 64 KiB at a time, from a task
//!   that runs on after `handle` has returned the response head (`?trap_after={mib}`
//!   panics after that many MiB have been sent).
//! - `POST /` reads the request body as a stream and answers `{"bytes": n, "sum": s}`.
//! - `GET /fail` answers an error code (`internal-error`) instead of a response.
//! - Anything else answers `hello from wasi:http 0.3! you asked for METHOD PATH`.

use wasip3::http::types::{ErrorCode, Fields, Method, Request, Response};
use wasip3::wit_bindgen::StreamResult;
use wasip3::{wit_bindgen, wit_future, wit_stream};

wasip3::http::service::export!(HttpStream);

const CHUNK: usize = 64 << 10;

struct HttpStream;

fn query_param<'a>(path: &'a str, name: &str) -> Option<&'a str> {
    path.split_once('?')?.1.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// A response whose body is whatever `fill` writes; `fill` runs after the head is out.
fn streamed<F>(content_type: &str, fill: impl FnOnce(wit_bindgen::StreamWriter<u8>) -> F) -> Response
where
    F: Future<Output = ()> + 'static,
{
    let headers = Fields::from_list(&[("content-type".to_string(), content_type.as_bytes().to_vec())])
        .expect("a valid header");
    let (tx, rx) = wit_stream::new();
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(headers, Some(rx), trailers_rx);
    let body = fill(tx);
    wit_bindgen::spawn(async move {
        body.await;
        // The body is complete only once the trailers future resolves.
        let _ = trailers_tx.write(Ok(None)).await;
    });
    response
}

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

/// Read the request body as a stream: its length and byte sum.
async fn sum_body(req: Request) -> Result<(u64, u64), ErrorCode> {
    let (_res_tx, res_rx) = wit_future::new(|| Ok(()));
    let (mut body, trailers) = Request::consume_body(req, res_rx);
    let (mut bytes, mut sum) = (0u64, 0u64);
    let mut buf = Vec::with_capacity(CHUNK);
    loop {
        let (status, b) = body.read(buf).await;
        buf = b;
        bytes += buf.len() as u64;
        sum = buf.iter().fold(sum, |s, b| s.wrapping_add(u64::from(*b)));
        buf.clear();
        if !matches!(status, StreamResult::Complete(_)) {
            break;
        }
    }
    trailers.await?;
    Ok((bytes, sum))
}

impl wasip3::exports::http::handler::Guest for HttpStream {
    async fn handle(req: Request) -> Result<Response, ErrorCode> {
        let method = req.get_method();
        let path = req.get_path_with_query().unwrap_or_else(|| "/".into());
        if matches!(method, Method::Post | Method::Put) {
            let (bytes, sum) = sum_body(req).await?;
            let json = format!("{{\"bytes\": {bytes}, \"sum\": {sum}}}").into_bytes();
            return Ok(streamed("application/json", |mut w| async move {
                w.write_all(json).await;
            }));
        }
        let route = path.split('?').next().unwrap_or("/");
        if route == "/fail" {
            return Err(ErrorCode::InternalError(Some("asked to fail".into())));
        }
        let Ok(mib) = route.trim_matches('/').parse::<usize>() else {
            let text = format!("hello from wasi:http 0.3! you asked for {} {path}\n", method_name(&method)).into_bytes();
            return Ok(streamed("text/plain; charset=utf-8", |mut w| async move {
                w.write_all(text).await;
            }));
        };
        let trap_after: Option<usize> = query_param(&path, "trap_after").and_then(|v| v.parse().ok());
        Ok(streamed("application/octet-stream", move |mut w| async move {
            let chunk: Vec<u8> = (0..CHUNK).map(|i| b'a' + (i % 26) as u8).collect();
            for i in 0..(mib << 20) / CHUNK {
                if trap_after.is_some_and(|t| i * CHUNK >= t << 20) {
                    panic!("http3-stream was asked to trap mid-stream");
                }
                let left = w.write_all(chunk.clone()).await;
                assert!(left.is_empty(), "the client went away");
            }
        }))
    }
}
