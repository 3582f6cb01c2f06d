//! What language toolchains emit deploys as it is: componentize-py and componentize-js
//! components import filesystem, sockets (Python) and outbound HTTP whether or not the
//! code uses them. Without grants they deploy, those imports are denied at use, and every
//! attempt fails inside the guest with the standard error while the node serves on; with
//! `strict_imports` the deploy is refused. (The Rust std guest is `security::capabilities_…`.)

use std::sync::atomic::Ordering;

use http::Method;
use nanogrid::api::{ServiceAnswer, ServiceDetail, Uploaded};
use nanogrid::services::spec::DeniedImport;
use serde_json::json;

use crate::support::{TestNode, assert_error, counting_server, parse, toolchain_wasm};

/// Each denied import's grant, deduplicated: e.g. `["grants.files", "grants.outbound_http"]`.
fn denied_grants(denied: &[DeniedImport]) -> Vec<String> {
    let mut g: Vec<String> = denied.iter().map(|d| d.grant.clone()).collect();
    g.sort();
    g.dedup();
    g
}

#[tokio::test]
async fn python_and_js_components_deploy_without_grants_and_their_doors_stay_shut() {
    let _cpu = crate::support::cpu_heavy().await;
    let node = TestNode::start().await;
    let admin = node.admin();
    let (target, hits) = counting_server(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\npong");
    // (service and guest, the grants its imports need, how its language says "no file"
    // and "request denied")
    for (name, grants, refused_read, refused_fetch) in [
        ("reach-py", vec!["grants.files", "grants.outbound_http", "grants.sockets"], "ENOENT", "HttpRequestDenied"),
        ("reach-js", vec!["grants.files", "grants.outbound_http"], "no preopened directory", "HTTP-request-denied"),
    ] {
        let up = admin.upload(toolchain_wasm(name)).await.unwrap();
        assert_eq!(up.status, 201, "{name}: {}", up.text());
        let digest = parse::<Uploaded>(&up).digest;
        let path = format!("/v1/services/{name}");

        let r =
            admin.call_json(Method::PUT, &path, &json!({ "component": digest, "strict_imports": true })).await.unwrap();
        let msg = assert_error(&r, 422, "ungranted-import").message;
        assert!(msg.contains("wasi:filesystem/") && msg.contains("wasi:http/outgoing-handler"), "{name}: {msg}");

        let r = admin.call_json(Method::PUT, &path, &json!({ "component": digest })).await.unwrap();
        assert_eq!(r.status, 201, "{name}: {}", r.text());
        let v: ServiceAnswer = parse(&r);
        let detail = v.detail().expect("served here");
        assert_eq!(detail.component.world, "wasi:http/proxy", "{name}: {v:?}");
        assert_eq!(denied_grants(v.denied_imports()), grants, "{name}: {v:?}");

        let ok = node.get(&format!("/{name}/ok")).await;
        assert_eq!((ok.status.as_u16(), ok.text()), (200, "ok".to_string()), "{name}");
        // No preopened directory: nothing to open a file in.
        let r = node.get(&format!("/{name}/read/etc/passwd")).await;
        assert_eq!(r.status, 403, "{name}: {}", r.text());
        assert!(r.text().contains(refused_read), "{name}: {}", r.text());
        // Outbound HTTP: the standard WASI error, and nothing leaves the node.
        let r = node.get(&format!("/{name}/fetch/{target}/x")).await;
        assert_eq!(r.status, 403, "{name}: {}", r.text());
        assert!(r.text().contains(refused_fetch), "{name}: {}", r.text());
        assert_eq!(hits.load(Ordering::SeqCst), 0, "{name}: no connection reached the server");
    }
    // Python's socket module: access denied before any packet.
    let r = node.get(&format!("/reach-py/connect/{target}")).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("EACCES"), "{}", r.text());
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    // The node serves on, and GET shows what each service has denied.
    assert_eq!(admin.get("/v1/health").await.unwrap().status, 200);
    let shown: ServiceDetail = parse(&admin.get("/v1/services/reach-js").await.unwrap());
    assert_eq!(denied_grants(&shown.denied_imports), ["grants.files", "grants.outbound_http"]);
    assert_eq!(node.get("/reach-py/ok").await.text(), "ok");

    // An uncaught Python exception traps; the error carries the traceback's frames and the
    // exception, not only its last lines.
    let r = node.get("/reach-py/raise").await;
    assert_eq!(r.status, 500, "{}", r.text());
    let msg = r.text();
    assert!(msg.contains("ValueError: reach was asked to raise"), "{msg}");
    assert!(msg.contains("in explode") && msg.contains("in handle"), "the frames are kept: {msg}");
    assert_eq!(node.get("/reach-py/ok").await.text(), "ok", "the node serves on");
}
