//! A grid of another partition count (`--partitions`): the cluster's table has that many
//! rows and serves kv as usual; a node or a data dir made with another count is refused,
//! and the refusal names the fix.

use std::time::Duration;

use http::Method;
use nanogrid::api::Role;
use serde_json::json;

use super::driver::{Cluster, eventually};
use super::{FORM, formed, holds_for, serves};

/// Node `i`'s role as node `at` shows it in `GET /v1/cluster`.
async fn role(c: &Cluster, at: usize, i: usize) -> Option<Role> {
    c.role(at, &c.nodes[i].name).await
}

#[tokio::test]
async fn a_grid_of_64_partitions_serves_kv_and_nodes_of_another_count_are_refused() {
    let mut c = Cluster::start_with(3, &["--partitions", "64"]).await;
    let leader = c.index_of(&formed(&c).await);
    c.nodes[0].node.deploy("kv", "kvstore", json!({ "instances": 3 })).await;
    for i in 0..3 {
        serves(&c, i, "/kv/", FORM).await;
    }
    let g = eventually("64 partitions, all with three in-sync replicas", Duration::from_secs(60), || async {
        let g = c.grid(1).await.ok()?;
        (g.partitions == 64 && g.table.len() == 64 && g.under_replicated == 0).then_some(g)
    })
    .await;
    let share = |n: &str| g.nodes.get(n).unwrap_or_else(|| panic!("{n} has no share of the grid: {g:#?}")).primaries;
    let primaries: usize = ["n1", "n2", "n3"].into_iter().map(share).sum();
    assert_eq!(primaries, 64, "{g:#?}");
    // Writes through every node read back through another.
    for k in 0..24 {
        let r = c.call(k % 3, Method::PUT, &format!("/kv/key{k}?consistency=quorum"), &format!("v{k}")).await;
        let r = r.unwrap();
        assert_eq!(r.status, 200, "PUT key{k}: {}", r.text());
    }
    for k in 0..24 {
        let r = c.get((k + 1) % 3, &format!("/kv/key{k}?consistency=quorum")).await.unwrap();
        assert_eq!((r.status.as_u16(), r.text()), (200, format!("v{k}")), "key{k}");
    }

    // A fourth node with the default 256 is never added; its log says what to do.
    let n4 = c.add_node_with(&[]).await;
    eventually("n4 says why it cannot join", FORM, || async {
        let log = c.nodes[n4].node.log();
        (log.contains("cannot join") && log.contains("--partitions 64")).then_some(())
    })
    .await;
    // The leader sees it and says why it does not add it; it stays a non-member.
    eventually("the leader refuses n4", FORM, || async {
        let said = c.nodes[leader].node.log();
        let refused = said.contains("not adding n4") && said.contains("--partitions 64");
        (refused && role(&c, leader, n4).await == Some(Role::Joining)).then_some(())
    })
    .await;
    holds_for(Duration::from_secs(3), || async {
        assert_eq!(role(&c, leader, n4).await, Some(Role::Joining), "n4 stays out of the cluster");
    })
    .await;

    // Its data dir was made with 256: a restart asking for 64 on it is refused.
    c.stop(n4);
    let (status, log) = c.nodes[n4].node.start_expecting_exit(&["--partitions", "64"]);
    assert!(!status.success(), "{log}");
    assert!(log.contains("made with 256 partitions") && log.contains("--partitions 256"), "{log}");
    // With an empty data dir and the cluster's count it joins.
    std::fs::remove_dir_all(c.nodes[n4].node.data.path().join("node")).unwrap();
    c.nodes[n4].node.restart_with(&["--partitions", "64"]);
    eventually("n4 becomes a member", FORM, || async { role(&c, 0, n4).await?.is_member().then_some(()) }).await;
}
