//! Access scopes (issue 14): every admin route against no token, a wrong token, a token of
//! each scope and the admin token.

use bytes::Bytes;
use http::Method;
use nanogrid::client::AdminClient;

use crate::support::{TOKEN, TestNode};

const READ: &str = "read-token-0123456789abcdef";
const DEPLOY: &str = "deploy-token-0123456789abcdef";

/// Who calls: (name, token).
const CALLERS: [(&str, Option<&str>); 5] = [
    ("no token", None),
    ("wrong token", Some("wrong-token-0123456789")),
    ("read", Some(READ)),
    ("deploy", Some(DEPLOY)),
    ("admin", Some(TOKEN)),
];

/// Every admin route, with the scope it needs (`None`: open to all).
fn routes() -> Vec<(Method, &'static str, Option<&'static str>)> {
    vec![
        (Method::GET, "/v1/health", None),
        (Method::GET, "/metrics", None),
        (Method::GET, "/v1/services", Some("read")),
        (Method::GET, "/v1/services/x", Some("read")),
        (Method::GET, "/v1/cluster", Some("read")),
        (Method::GET, "/v1/graph", Some("read")),
        (Method::GET, "/v1/grid", Some("read")),
        (Method::GET, "/v1/barriers", Some("read")),
        (Method::GET, "/v1/barriers/b1", Some("read")),
        (Method::GET, "/v1/experiments", Some("read")),
        (Method::GET, "/v1/experiments/1", Some("read")),
        (Method::GET, "/v1/tracing", Some("read")),
        (Method::PUT, "/v1/tracing", Some("admin")),
        (Method::PUT, "/v1/components", Some("deploy")),
        (Method::POST, "/v1/components", Some("deploy")),
        (Method::PUT, "/v1/services/x", Some("deploy")),
        (Method::POST, "/v1/services/x/scale", Some("deploy")),
        (Method::DELETE, "/v1/services/x", Some("deploy")),
        (Method::DELETE, "/v1/cluster/nodes/n9", Some("admin")),
        (Method::POST, "/v1/debug/gossip", Some("admin")),
        (Method::POST, "/v1/experiments/1/approve", Some("admin")),
        (Method::POST, "/v1/experiments/1/reject", Some("admin")),
    ]
}

fn rank(scope: &str) -> u8 {
    match scope {
        "read" => 1,
        "deploy" => 2,
        "admin" => 3,
        _ => 0,
    }
}

/// A deploy token may not open doors to the host, and a read token does not see secrets.
#[tokio::test]
async fn grants_that_reach_the_host_need_the_admin_scope_and_reads_hide_secrets() {
    let files = tempfile::tempdir().unwrap();
    let (read, deploy) = (files.path().join("read"), files.path().join("deploy"));
    std::fs::write(&read, READ).unwrap();
    std::fs::write(&deploy, DEPLOY).unwrap();
    let args = ["--read-token-file", read.to_str().unwrap(), "--deploy-token-file", deploy.to_str().unwrap()];
    let node = TestNode::start_with_args(true, &args).await;
    let digest = crate::support::parse::<nanogrid::api::Uploaded>(
        &node.admin().upload(crate::support::wasm("hello")).await.unwrap(),
    )
    .digest;
    let as_deploy = AdminClient::new(&node.admin_url, Some(DEPLOY.to_string()));
    let dir = files.path().to_str().unwrap();
    for (grants, named) in [
        (serde_json::json!({ "files": { "/d": dir } }), "grants.files"),
        (serde_json::json!({ "sockets": ["127.0.0.1:22"] }), "grants.sockets"),
        (serde_json::json!({ "outbound_http": ["169.254.169.254:80"] }), "169.254.169.254:80"),
    ] {
        let spec = serde_json::json!({ "component": digest, "grants": grants });
        let r = as_deploy.call_json(Method::PUT, "/v1/services/s", &spec).await.unwrap();
        assert_eq!((r.status.as_u16(), r.error_code().as_deref()), (403, Some("missing-scope")), "{grants}");
        assert!(r.text().contains(named), "{}", r.text());
    }
    // By name (checked when the guest connects) and env are the deployer's to give.
    let spec = serde_json::json!({
        "component": digest,
        "grants": { "outbound_http": ["api.example.com:443"], "env": { "API_KEY": "s3cret" } },
        "config": { "db_password": "hunter2" },
    });
    let r = as_deploy.call_json(Method::PUT, "/v1/services/s", &spec).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(r.text().contains("s3cret"), "the deployer sees what it set");
    let as_read = AdminClient::new(&node.admin_url, Some(READ.to_string()));
    let shown = as_read.get("/v1/services/s").await.unwrap().text();
    assert!(!shown.contains("s3cret") && !shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("needs the deploy scope"), "{shown}");
}

#[tokio::test]
async fn every_admin_route_needs_its_scope() {
    let files = tempfile::tempdir().unwrap();
    let (read, deploy) = (files.path().join("read"), files.path().join("deploy"));
    std::fs::write(&read, format!("{READ}\n")).unwrap();
    std::fs::write(&deploy, DEPLOY).unwrap();
    let args = ["--read-token-file", read.to_str().unwrap(), "--deploy-token-file", deploy.to_str().unwrap()];
    let node = TestNode::start_with_args(true, &args).await;
    for (method, path, needs) in routes() {
        for (who, token) in CALLERS {
            let admin = AdminClient::new(&node.admin_url, token.map(str::to_string));
            let r =
                admin.call(method.clone(), path, Some("application/json"), Bytes::from_static(b"{}")).await.unwrap();
            let what = format!("{method} {path} as {who}: {} {}", r.status, r.text());
            let code = r.error_code();
            match (needs, who) {
                (None, _) => assert!(r.status != 401 && r.status != 403, "{what}"),
                (Some(_), "no token" | "wrong token") => {
                    assert_eq!((r.status.as_u16(), code.as_deref()), (401, Some("unauthorized")), "{what}")
                }
                (Some(need), scope) if rank(scope) < rank(need) => {
                    assert_eq!((r.status.as_u16(), code.as_deref()), (403, Some("missing-scope")), "{what}");
                    assert!(r.text().contains(&format!("needs the {need} scope")), "{what}");
                }
                (Some(_), _) => assert!(r.status != 401 && r.status != 403, "{what}"),
            }
        }
    }
}
