//! The benchmark's baseline: a native hyper server that answers every request with the same
//! greeting as the `hello` sample, through the same accept loop as nanogrid's ingress.
//!
//! `cargo run --release --example native_hello -- [ADDR]` prints `listening on http://ADDR`.

use bytes::Bytes;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let handler = |req: http::Request<hyper::body::Incoming>| async move {
        let body = format!("hello, world! you asked for {} {}\n", req.method(), req.uri().path());
        let mut resp = http::Response::new(nanogrid::http::full(Bytes::from(body)));
        resp.headers_mut()
            .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
        resp
    };
    nanogrid::server::serve("native", listener, Default::default(), None, rx, handler).await;
    Ok(())
}
