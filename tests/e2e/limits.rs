//! One test per limit: the refusal's status and code, then a normal request right after.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use serde_json::json;

use crate::support::{TestNode, assert_error};

#[tokio::test]
async fn request_and_response_size_limits() {
    let node = TestNode::start().await;
    let r = node
        .try_deploy("m", "misbehave", json!({ "limits": { "max_request_bytes": 1024, "max_response_bytes": 2 << 20 } }))
        .await;
    assert!(r.status.is_success(), "{}", r.text());
    // Every limit is explicit in the spec, as the node writes it (the JSON itself: a typed
    // spec would have every field whatever was sent).
    let v = r.json().unwrap();
    let limits = &v["spec"]["limits"];
    for field in [
        "memory_mib",
        "timeout_ms",
        "max_request_bytes",
        "max_response_bytes",
        "max_kv_key_bytes",
        "max_kv_value_bytes",
        "max_fanout",
        "max_call_depth",
    ] {
        assert!(limits[field].is_number(), "{field} missing in {limits}");
    }
    assert_eq!(limits["max_kv_key_bytes"], 1024);
    assert!(limits["fuel"].is_null());

    assert_error(&node.post("/m/ok", &"x".repeat(2048)).await, 413, "payload-too-large");
    assert_eq!(node.post("/m/ok", &"x".repeat(1000)).await.status, 200);
    let v = assert_error(&node.get("/m/huge/3").await, 500, "response-too-large");
    assert!(v.message.as_str().contains("max_response_bytes"));
    let r = node.get("/m/huge/1").await;
    assert_eq!((r.status.as_u16(), r.body.len()), (200, 1 << 20));
}

#[tokio::test]
async fn kv_key_and_value_limits() {
    let node = TestNode::start().await;
    node.deploy("m", "misbehave", json!({ "limits": { "max_kv_key_bytes": 64, "max_kv_value_bytes": 1000 } })).await;
    let r = node.get("/m/kv-key/65").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.error_code().as_deref(), Some("invalid"));
    assert!(r.text().contains("kv key is 65 bytes"), "{}", r.text());
    assert_eq!(node.get("/m/kv-key/64").await.status, 200);
    let r = node.get("/m/kv-value/1001").await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("kv value is 1001 bytes"), "{}", r.text());
    assert_eq!(node.get("/m/kv-value/1000").await.status, 200);
}

#[tokio::test]
async fn fanout_and_call_depth_limits() {
    let node = TestNode::start().await;
    node.deploy("m", "misbehave", json!({ "instances": 16, "limits": { "max_fanout": 4, "max_call_depth": 3 } })).await;
    let r = node.get("/m/fanout/5").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.error_code().as_deref(), Some("denied"));
    assert!(r.text().contains("call-all with 5 calls"), "{}", r.text());
    assert_eq!(node.get("/m/fanout/4").await.text(), "4 calls answered");
    let r = node.get("/m/recurse").await;
    assert_eq!(r.status, 403);
    assert!(r.text().contains("call depth limit 3"), "{}", r.text());
    assert_eq!(node.get("/m/ok").await.status, 200);
}

#[tokio::test]
async fn deep_recursion_traps_alone() {
    let node = TestNode::start().await;
    node.deploy("m", "misbehave", json!({})).await;
    assert_error(&node.get("/m/stack/100000000").await, 500, "trap");
    assert_eq!(node.get("/m/stack/100").await.status, 200);
}

#[tokio::test]
async fn fuel_budget() {
    let node = TestNode::start_with_args(true, &["--fuel"]).await;
    node.deploy("m", "misbehave", json!({ "limits": { "fuel": 5_000_000 } })).await;
    let started = Instant::now();
    let v = assert_error(&node.get("/m/loop").await, 504, "fuel-exhausted");
    assert!(v.message.as_str().contains("5000000"));
    assert!(started.elapsed() < Duration::from_secs(4), "fuel ran out before the 5 s deadline");
    assert_eq!(node.get("/m/ok").await.status, 200);

    // Without --fuel, a fuel limit is refused rather than silently ignored.
    let plain = TestNode::start().await;
    let up: nanogrid::api::Uploaded =
        crate::support::parse(&plain.admin().upload(crate::support::wasm("misbehave")).await.unwrap());
    let body = json!({ "component": up.digest, "limits": { "fuel": 1000 } });
    let v =
        assert_error(&plain.admin().call_json(Method::PUT, "/v1/services/m", &body).await.unwrap(), 400, "bad-request");
    assert!(v.message.as_str().contains("--fuel"));
}

#[tokio::test]
async fn header_count_and_size_limits() {
    let node = TestNode::start().await;
    node.deploy("hello", "hello", json!({})).await;
    let client = nanogrid::client::Client::new();
    let url = format!("{}/hello/", node.ingress);
    let many: Vec<(&str, String)> = (0..150).map(|i| ("x-many", format!("v{i}"))).collect();
    let r = client.send(Method::GET, &url, &many, Bytes::new()).await;
    // 150 small headers arrive whole: the answer is a 431, not a dropped connection.
    assert_eq!(r.map(|r| r.status.as_u16()).unwrap(), 431, "150 headers");
    // A 100 KiB header: the node answers 431 (or closes without serving), never a 200.
    let addr = node.ingress.trim_start_matches("http://");
    let big = format!("GET /hello/ HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "y".repeat(100 << 10));
    let got = crate::support::raw_exchange(addr, big.as_bytes());
    let head = String::from_utf8_lossy(&got[..got.len().min(12)]).to_string();
    assert!(head.is_empty() || head == "HTTP/1.1 431", "100 KiB header answered: {head:?}");
    assert_eq!(node.get("/hello/").await.status, 200);
}

fn addr_of(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("n.toml");
    std::fs::write(&cfg, "header_read_timeout_ms = 300\n").unwrap();
    let node = TestNode::start_with_args(true, &["--config", cfg.to_str().unwrap()]).await;
    node.deploy("hello", "hello", json!({})).await;
    let addr = addr_of(&node.ingress);
    let started = Instant::now();
    let closed = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /hello/ HTTP/1.1\r\nHost: x\r\n").unwrap();
        let mut buf = Vec::new();
        // The server must end the connection; read until it does.
        s.read_to_end(&mut buf).is_ok()
    })
    .await
    .unwrap();
    assert!(closed, "the server closed the half-sent request");
    assert!(started.elapsed() < Duration::from_secs(3), "closed after {:?}", started.elapsed());
    assert_eq!(node.get("/hello/").await.status, 200);
}

#[tokio::test]
async fn connection_limit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("n.toml");
    std::fs::write(&cfg, "max_connections = 2\n").unwrap();
    let node = TestNode::start_with_args(true, &["--config", cfg.to_str().unwrap()]).await;
    node.deploy("hello", "hello", json!({})).await;
    let addr = addr_of(&node.ingress);
    let ask = |addr: String, wait: Duration| {
        tokio::task::spawn_blocking(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(wait)).unwrap();
            s.write_all(b"GET /hello/ HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut buf = [0u8; 12];
            let answered = s.read_exact(&mut buf).is_ok();
            (s, answered)
        })
    };
    // Two keep-alive connections hold both slots.
    let (a, ok_a) = ask(addr.clone(), Duration::from_secs(5)).await.unwrap();
    let (_b, ok_b) = ask(addr.clone(), Duration::from_secs(5)).await.unwrap();
    assert!(ok_a && ok_b);
    let (mut c, ok_c) = ask(addr.clone(), Duration::from_millis(700)).await.unwrap();
    assert!(!ok_c, "a third connection waits while two are open");
    drop(a);
    let answered = tokio::task::spawn_blocking(move || {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 12];
        c.read_exact(&mut buf).map(|_| buf)
    })
    .await
    .unwrap();
    assert_eq!(&answered.expect("the waiting connection is served once a slot frees"), b"HTTP/1.1 200");
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight() {
    let mut node = TestNode::start().await;
    node.deploy("m", "misbehave", json!({})).await;
    let slow = node.get("/m/sleep/1500");
    let stop = async {
        // SIGTERM once the request runs (its instance busy), not after a guess.
        crate::support::eventually("the slow request runs", Duration::from_secs(10), || async {
            (node.metric("nanogrid_instances_running", "service=\"m\"").await >= 1.0).then_some(())
        })
        .await;
        node.stop_signal_only();
    };
    let (r, ()) = tokio::join!(slow, stop);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(node.wait_exit().success(), "clean exit after draining");
}

#[tokio::test]
async fn upload_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("n.toml");
    std::fs::write(&cfg, "max_upload_bytes = 100000\n").unwrap();
    let node = TestNode::start_with_args(true, &["--config", cfg.to_str().unwrap()]).await;
    let wasm = crate::support::wasm("hello");
    assert!(wasm.len() > 100_000);
    assert_error(&node.admin().upload(wasm).await.unwrap(), 413, "payload-too-large");
    assert_eq!(node.admin().get("/v1/health").await.unwrap().status, 200);
}

/// `GET path` from source address `from`, over a fresh connection: (status line, body).
async fn get_from(from: &str, to: &str, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(format!("{from}:0").parse().unwrap())?;
    let mut s = sock.connect(to.parse().unwrap()).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes()).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn trickling_bodies_are_cut_off_and_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    let toml =
        "body_idle_timeout_ms = 2000\nmin_body_rate = 1024\nbody_rate_grace_ms = 2000\nmax_connections_per_ip = 200\n";
    std::fs::write(&config, toml).unwrap();
    let node = TestNode::start_with_args(true, &["--config", config.to_str().unwrap()]).await;
    node.deploy("hello", "hello", json!({ "instances": 4 })).await;
    let addr = node.ingress.trim_start_matches("http://").to_string();
    // 300 clients on 127.0.0.1 each send a head promising 100 kB, then a byte every 700 ms.
    let started = Instant::now();
    let mut trickling = Vec::new();
    for _ in 0..300 {
        let addr = addr.clone();
        trickling.push(tokio::spawn(async move {
            let Ok(s) = tokio::net::TcpStream::connect(&addr).await else { return String::from("refused") };
            let (mut rd, mut wr) = s.into_split();
            let head = "POST /hello/ HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\nx";
            let writer = tokio::spawn(async move {
                if wr.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                loop {
                    tokio::time::sleep(Duration::from_millis(700)).await;
                    if wr.write_all(b"x").await.is_err() {
                        return;
                    }
                }
            });
            let mut got = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(30), rd.read_to_end(&mut got)).await;
            writer.abort();
            match read {
                Ok(_) => String::from_utf8_lossy(&got).into_owned(),
                Err(_) => String::from("still open after 30 s"),
            }
        }));
    }
    // Meanwhile another client address is served as usual.
    for _ in 0..10 {
        let r = get_from("127.0.0.2", &addr, "/hello/world").await.unwrap();
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut cut = 0;
    for t in trickling {
        let answer = t.await.unwrap();
        assert_ne!(answer, "still open after 30 s");
        if answer.starts_with("HTTP/1.1 408") {
            assert!(answer.contains("body-too-slow"), "{answer}");
            cut += 1;
        }
    }
    // The first 200 were taken and cut off for trickling; the other 100 were closed at
    // once (more than 200 connections from one address).
    assert_eq!(cut, 200, "connections cut off with 408");
    println!("300 trickling connections closed within {:?}", started.elapsed());
    let r = node.get("/hello/world").await;
    assert_eq!(r.status, 200);
}
