//! Capabilities are denied unless granted; kv namespaces cannot be escaped; the admin
//! listener is not exposed without an explicit token.

use std::time::Duration;

use http::Method;
use serde_json::json;

use nanogrid::api::{ServiceAnswer, ServiceDetail, Uploaded};
use nanogrid::services::spec::DeniedImport;

use crate::support::{TestNode, assert_error, counting_server, parse, wasm};

// One scenario read top to bottom: its steps share the nodes, ids and figures of the ones before, so it stays one function though longer than 80 lines.
#[tokio::test]
async fn capabilities_are_denied_unless_granted() {
    let node = TestNode::start().await;
    let admin = node.admin();
    let up = admin.upload(wasm("reach")).await.unwrap();
    assert_eq!(up.status, 201, "{}", up.text());
    let digest = parse::<Uploaded>(&up).digest;

    // With strict_imports, an import without its grant refuses the deploy.
    let strict = json!({ "component": digest, "strict_imports": true });
    let r = admin.call_json(Method::PUT, "/v1/services/reach", &strict).await.unwrap();
    let v = assert_error(&r, 422, "ungranted-import");
    let msg = v.message.as_str();
    assert!(msg.contains("wasi:sockets/") && msg.contains("grants.sockets"), "{msg}");
    assert!(msg.contains("wasi:filesystem/") && msg.contains("grants.files"), "{msg}");
    assert_eq!(admin.get("/v1/services/reach").await.unwrap().status, 404, "a refused deploy stores nothing");

    // By default it deploys with them denied at use, and says which.
    let (target, target_count) = counting_server(b"pong");
    let r = admin.call_json(Method::PUT, "/v1/services/reach", &json!({ "component": digest })).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let denied = |rows: &[DeniedImport]| -> std::collections::BTreeSet<String> {
        rows.iter().map(|d| format!("{} {}", d.grant, d.import)).collect()
    };
    let answered = denied(parse::<ServiceAnswer>(&r).denied_imports());
    assert!(answered.iter().any(|d| d.starts_with("grants.sockets wasi:sockets/")), "{answered:?}");
    assert!(answered.iter().any(|d| d.starts_with("grants.files wasi:filesystem/")), "{answered:?}");
    assert!(
        answered
            .iter()
            .all(|d| d.starts_with("grants.sockets wasi:sockets/") || d.starts_with("grants.files wasi:filesystem/")),
        "{answered:?}"
    );
    let shown: ServiceDetail = parse(&admin.get("/v1/services/reach").await.unwrap());
    assert_eq!(denied(&shown.denied_imports), answered, "GET shows the same denied imports");
    // Every use fails inside the guest with the standard error, and the node serves on.
    let r = node.get(&format!("/reach/connect/{target}")).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("Permission denied"), "a socket is access-denied: {}", r.text());
    assert_eq!(target_count.load(std::sync::atomic::Ordering::SeqCst), 0, "no connection was made");
    let r = node.get("/reach/read/etc/passwd").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("No such file"), "there is no file system to open it in: {}", r.text());
    assert_eq!(node.get("/reach/env/PATH").await.status, 403);
    assert_eq!(admin.get("/v1/health").await.unwrap().status, 200);

    for (grants, field) in [
        (json!({ "sockets": ["localhost:80"] }), "localhost:80"),
        (json!({ "files": { "/d": "/definitely/not/here" } }), "/definitely/not/here"),
        (json!({ "files": { "relative": "/tmp" } }), "relative"),
        (json!({ "sokets": [] }), "sokets"),
    ] {
        let r = admin
            .call_json(Method::PUT, "/v1/services/reach", &json!({ "component": digest, "grants": grants }))
            .await
            .unwrap();
        assert!(r.status == 400, "{grants}: {}", r.text());
        assert!(r.text().contains(field), "{grants}: {}", r.text());
    }

    let (allowed, allowed_count) = counting_server(b"pong");
    let (other, other_count) = counting_server(b"pong");
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("a.txt"), "granted file").unwrap();
    let grants = json!({
        "sockets": [allowed],
        "files": { "/data": files.path().to_str().unwrap() },
        "env": { "GREETING": "hi" },
    });
    let r = admin
        .call_json(Method::PUT, "/v1/services/reach", &json!({ "component": digest, "grants": grants }))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "a redeploy: {}", r.text());
    let v: ServiceAnswer = parse(&r);
    assert_eq!(v.spec().grants.env.get("GREETING").map(String::as_str), Some("hi"), "{v:?}");
    assert!(v.denied_imports().is_empty(), "everything it imports is granted now: {v:?}");

    let r = node.get(&format!("/reach/connect/{allowed}")).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "pong".to_string()));
    let r = node.get(&format!("/reach/connect/{other}")).await;
    assert_eq!(r.status, 403, "{}", r.text());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(other_count.load(std::sync::atomic::Ordering::SeqCst), 0, "no connection reached the other server");
    assert_eq!(allowed_count.load(std::sync::atomic::Ordering::SeqCst), 1);

    assert_eq!(node.get("/reach/read/data/a.txt").await.text(), "granted file");
    for outside in ["/reach/read/etc/passwd", "/reach/read/data/../../etc/passwd", "/reach/read/data/../a.txt"] {
        assert_eq!(node.get(outside).await.status, 403, "{outside}");
    }
    assert_eq!(node.get("/reach/env/GREETING").await.text(), "hi");
    assert_eq!(node.get("/reach/env/PATH").await.status, 403, "the host's environment is not visible");
    assert_eq!(node.get("/reach/env/NANOGRID_TOKEN").await.status, 403);

    // The same guest on a service without grants for them cannot even be deployed, and a
    // plain service sees no environment at all.
    node.deploy("m", "misbehave", json!({})).await;
    assert_eq!(node.get("/m/ok").await.status, 200);
}

#[tokio::test]
async fn kv_namespaces_cannot_be_escaped() {
    let node = TestNode::start().await;
    node.deploy("counter", "counter", json!({})).await;
    node.deploy("m", "misbehave", json!({})).await;
    assert_eq!(node.post("/counter/visits", "").await.json().unwrap()["value"], 1);

    let v = node.get("/m/kv-probe").await.json().unwrap();
    assert_eq!(v["seen_before"], json!([]), "no hostile key reached another namespace: {v}");
    assert_eq!(v["listed"], 8);
    // The probe's writes landed in its own namespace only.
    assert_eq!(node.get("/counter/visits").await.json().unwrap()["value"], 1);
    assert_eq!(node.get("/counter/").await.json().unwrap()["counters"], json!(["visits"]));
    let again = node.get("/m/kv-probe").await.json().unwrap();
    assert_eq!(again["seen_before"].as_array().unwrap().len(), 8, "its own keys read back: {again}");
}

#[tokio::test]
async fn admin_on_a_public_address_needs_an_explicit_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nanogrid"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("NANOGRID_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--admin-token") && err.contains("0.0.0.0"), "{err}");
    assert!(!dir.path().join("admin-token").exists(), "refused before creating anything");

    // With a token it starts.
    let node = TestNode::start_with_args(true, &["--admin-listen", "0.0.0.0:0"]).await;
    assert!(node.admin_url.contains("0.0.0.0"));
    let port = node.admin_url.rsplit(':').next().unwrap();
    let local =
        nanogrid::client::AdminClient::new(&format!("http://127.0.0.1:{port}"), Some(crate::support::TOKEN.into()));
    assert_eq!(local.get("/v1/services").await.unwrap().status, 200);
}

#[tokio::test]
async fn the_data_dir_and_its_files_are_the_owners_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let node = TestNode::start_with(false).await;
    node.deploy("counter", "counter", json!({})).await;
    assert_eq!(node.post("/counter/visits", "").await.status, 200);
    let dir = node.data.path().join("node");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "the data dir");
    let mut files = 0;
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                assert_eq!(mode(&p) & 0o077, 0, "{} is open to others", p.display());
                stack.push(p);
            } else {
                assert_eq!(mode(&p) & 0o077, 0, "{} is open to others", p.display());
                files += 1;
            }
        }
    }
    assert!(files > 5, "the database, the token and the compile cache were looked at ({files} files)");
}
