//! A restarted node has its services and kv data back and does not recompile.

use serde_json::json;

use crate::support::TestNode;

#[tokio::test]
async fn restart_restores_services_and_kv_without_recompiling() {
    let mut node = TestNode::start_with(false).await;
    node.deploy("counter", "counter", json!({ "instances": 3 })).await;
    node.deploy("hello", "hello", json!({ "config": { "greeting": "back" } })).await;
    for _ in 0..3 {
        node.post("/counter/n", "").await;
    }
    // Tiered compilation: the optimized code is compiled (and cached) after the deploy.
    node.wait_optimized("counter").await;
    node.wait_optimized("hello").await;
    assert_eq!(compiles(&node).await, (2.0, 2.0), "each component compiles once per tier");

    node.stop();
    node.restart();
    let list: nanogrid::api::ServiceList =
        serde_json::from_value(node.admin().get("/v1/services").await.unwrap().json().unwrap()).unwrap();
    let names: Vec<&str> = list.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["counter", "hello"]);
    assert!(list.services.iter().all(|s| s.code == Some(nanogrid::runtime::Tier::Optimized)), "{list:?}");
    assert_eq!(node.service("counter").await.spec.instances, 3);
    assert_eq!(node.post("/counter/n", "").await.json().unwrap()["value"], 4);
    assert!(node.get("/hello/").await.text().starts_with("back, world!"));
    // Both served from the compile cache: the restarted process compiled nothing (a
    // cache miss compiles baseline code before the service serves, so it would count).
    assert_eq!(compiles(&node).await, (0.0, 0.0), "a restart loads the compile cache");

    // A crash (SIGKILL) loses no acknowledged write either.
    node.kill();
    node.restart();
    assert_eq!(node.post("/counter/n", "").await.json().unwrap()["value"], 5);
    assert!(node.get("/hello/").await.text().starts_with("back, world!"));
    // A single node is every partition's only replica, over the same grid code.
    let grid: nanogrid::api::GridView = crate::support::parse(&node.admin().get("/v1/grid").await.unwrap());
    assert_eq!((grid.partitions, grid.replication), (256, 1), "{grid:?}");
    assert_eq!(grid.under_replicated, 0, "{grid:?}");
    assert_eq!(grid.nodes.get("n1").map(|n| n.primaries), Some(256), "{grid:?}");
    assert_eq!(compiles(&node).await, (0.0, 0.0), "a restart after a crash loads the compile cache");
}

/// This node process's compiles so far, by tier: (baseline, optimized). Both guests have
/// baseline code (the first check sees two), so none is compiled outside these counts.
async fn compiles(node: &TestNode) -> (f64, f64) {
    let baseline = node.metric("nanogrid_compiles_total", "tier=\"baseline\"").await;
    (baseline, node.metric("nanogrid_compiles_total", "tier=\"optimized\"").await)
}
