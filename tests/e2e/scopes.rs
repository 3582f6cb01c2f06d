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
        (Method::PUT, "/v1/components", Some("deploy")),
        (Method::POST, "/v1/components", Some("deploy")),
        (Method::PUT, "/v1/services/x", Some("deploy")),
        (Method::POST, "/v1/services/x/scale", Some("deploy")),
        (Method::DELETE, "/v1/services/x", Some("deploy")),
        (Method::DELETE, "/v1/cluster/nodes/n9", Some("admin")),
        (Method::POST, "/v1/debug/isolate", Some("admin")),
        (Method::POST, "/v1/debug/gossip", Some("admin")),
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
