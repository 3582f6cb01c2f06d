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
    let compiled_before = node.log().matches("compiled component").count();
    assert_eq!(compiled_before, 2, "each component compiles once:\n{}", node.log());

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

    // A crash (SIGKILL) loses no acknowledged write either.
    node.kill();
    node.restart();
    assert_eq!(node.post("/counter/n", "").await.json().unwrap()["value"], 5);
    // A single node is every partition's only replica, over the same grid code.
    let grid: nanogrid::api::GridView = crate::support::parse(&node.admin().get("/v1/grid").await.unwrap());
    assert_eq!((grid.partitions, grid.replication), (256, 1), "{grid:?}");
    assert_eq!(grid.under_replicated, 0, "{grid:?}");
    assert_eq!(grid.nodes.get("n1").map(|n| n.primaries), Some(256), "{grid:?}");
    assert_eq!(node.log().matches("compiled component").count(), compiled_before, "restarts load the compile cache");
}
