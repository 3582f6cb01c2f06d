//! The benchmark's baseline: a native hyper server that answers every request with the same
//! greeting as the `hello` sample, through the same accept loop as nanogrid's ingress. Its
//! connections run on the shared multi-threaded runtime unless told `per-core`: native
//! hyper serves fewer requests a second on threads per core (74-77k against 83-101k at 32
//! connections where measured, docs/BENCHMARKS.md), so the baseline runs at its best.
//!
//! With a certificate and its key (PEM files) it speaks HTTPS through the same rustls
//! configuration as the node's `--tls-cert`/`--tls-key` listeners.
//!
//! `cargo run --release --example native_hello -- [ADDR] [shared|per-core] [CERT KEY]`
//! prints `listening on http://ADDR` (`https://` with a certificate).

use bytes::Bytes;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let threads: nanogrid::cores::IngressThreads = std::env::args()
        .nth(2)
        .map_or(Ok(nanogrid::cores::IngressThreads::Shared), |t| t.parse())
        .map_err(anyhow::Error::msg)?;
    let cores = nanogrid::cores::Cores::for_mode(threads, "native-core")?;
    let tls = match (std::env::args().nth(3), std::env::args().nth(4)) {
        (Some(cert), Some(key)) => {
            let files = nanogrid::listener_tls::TlsFiles { cert: cert.into(), key: key.into() };
            Some(nanogrid::listener_tls::CertFiles::load(files)?.server_config()?)
        }
        (None, None) => None,
        _ => anyhow::bail!("give both a certificate and its key (PEM files), or neither"),
    };
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("listening on {scheme}://{}", listener.local_addr()?);
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let handler = |req: http::Request<hyper::body::Incoming>| async move {
        let body = format!("hello, world! you asked for {} {}\n", req.method(), req.uri().path());
        let mut resp = http::Response::new(nanogrid::http::full(Bytes::from(body)));
        resp.headers_mut()
            .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
        resp
    };
    nanogrid::server::serve("native", listener, Default::default(), tls, rx, cores, handler).await;
    Ok(())
}
