//! A durable barrier whose driving node dies is taken over by another node.

use std::time::{Duration, Instant};

use nanogrid::api::{BarrierReport, BarrierState};
use serde_json::json;

use super::driver::{Cluster, eventually};
use super::{formed, serves};
use crate::support::parse;

#[tokio::test]
async fn another_node_finishes_a_barrier_whose_node_died() {
    let mut c = Cluster::start(3).await;
    formed(&c).await;
    c.nodes[0].node.deploy("misbehave", "misbehave", json!({ "instances": 3 })).await;
    for i in 0..3 {
        serves(&c, i, "/misbehave/", Duration::from_secs(20)).await;
    }
    // n1 runs the request (it has an instance), so n1 drives the barrier; its three calls
    // sleep, and n1 dies before any answers.
    let r = c.get(0, "/misbehave/barrier/3?sleep=1000").await.unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.text();
    c.kill(0);
    let killed = Instant::now();
    let stored = eventually("a survivor resumes the barrier", Duration::from_secs(60), || async {
        let r = c.get(1, &format!("/misbehave/kv-get/barrier-{id}")).await.ok()?;
        (r.status == 200).then(|| r.text())
    })
    .await;
    eprintln!("barrier {id} finished {:?} after its node was killed", killed.elapsed());
    assert_eq!(stored, "3/3:state");
    let b: BarrierReport = parse(&c.nodes[1].node.admin().get(&format!("/v1/barriers/{id}")).await.unwrap());
    assert_eq!(b.state, BarrierState::Done, "{b:?}");
    assert!(b.takeovers >= 1, "{b:?}");
    assert!(b.owner.starts_with("n2/") || b.owner.starts_with("n3/"), "a survivor drove it to the end: {b:?}");
    // The promise is at least once: a continuation cut short by the kill may run again.
    let runs: u32 = c.get(1, &format!("/misbehave/kv-get/resumes-{id}")).await.unwrap().text().parse().unwrap();
    assert!(runs >= 1, "the continuation ran ({runs} times)");
    eprintln!("the continuation ran {runs} time(s)");
}
