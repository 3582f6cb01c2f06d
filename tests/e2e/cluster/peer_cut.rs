//! A node that gossip reaches and Raft does not: its peer connections (TLS over TCP) are
//! dropped by nftables in its network namespace while gossip (UDP) still passes, as a
//! firewall that opens the gossip port and not the peer port would do. It must not go on
//! as if it were in the cluster: it turns dormant, says why, and serves again once healed.

use std::time::{Duration, Instant};

use serde_json::json;

use super::driver::{Cluster, eventually};
use super::{FORM, formed, serves};
use crate::support::assert_error;

/// Three nodes in network namespaces serving `hello` (3 instances), the one `pick` chooses
/// (given the leader's name) serving it too: the cluster, its leader, the picked node.
async fn serving(pick: impl Fn(&Cluster, &str) -> usize) -> (Cluster, String, usize) {
    let c = Cluster::start_in_namespaces(3).await;
    let leader = formed(&c).await;
    c.nodes[0].node.deploy("hello", "hello", json!({ "instances": 3 })).await;
    let i = pick(&c, &leader);
    serves(&c, i, "/hello/", Duration::from_secs(10)).await;
    (c, leader, i)
}

/// Cut node `x`'s peer connections (TCP) to `rest`, both ways; gossip still passes.
fn cut_peer_port(c: &Cluster, x: usize, rest: &[usize]) {
    for &i in rest {
        c.drop_tcp_from(i, &[x]);
    }
    c.drop_tcp_from(x, rest);
}

/// Until node `i` is dormant and says why (its `out_of_touch`).
async fn dormant_because(c: &Cluster, i: usize, what: &str) -> String {
    eventually(what, FORM, || async {
        let s = c.status(i).await?;
        (s.mode == "dormant").then_some(s.out_of_touch?)
    })
    .await
}

/// The leader's peer connections to both followers are cut. The followers elect another
/// leader; the old one, which still sees them through gossip, turns dormant once no quorum
/// has acknowledged it for 3 s (before, it went on calling itself leader, beside the new
/// one, for as long as the cut lasted: 20 s in the run that found it) and names the peer
/// port as the cause. Healed, it follows the new leader and serves again.
#[tokio::test]
async fn a_leader_that_reaches_no_voter_over_the_peer_port_turns_dormant_and_says_why() {
    let (c, old, l) = serving(|c, leader| c.index_of(leader)).await;
    let rest: Vec<usize> = (0..3).filter(|&i| i != l).collect();

    let t = Instant::now();
    cut_peer_port(&c, l, &rest);
    let new = eventually("the other two elect another leader", FORM, || async {
        c.agreed_leader(&rest).await.filter(|n| *n != old)
    })
    .await;
    let why = dormant_because(&c, l, "the old leader turns dormant and says why").await;
    eprintln!("the cut-off leader turned dormant after {:?}", t.elapsed());
    assert!(
        why.starts_with("no quorum of voters has acknowledged this leader for ") && why.contains("--peer-listen"),
        "{why}"
    );
    // Gossip still shows every node live: the cut is the peer port's alone.
    let s = c.status(l).await.expect("GET /v1/cluster");
    assert!(s.nodes.iter().all(|n| n.live), "{s:?}");
    assert_error(&c.get(l, "/hello/").await.unwrap(), 503, "dormant");
    let out = c.nodes[l].node.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("warning: {old} is dormant: no quorum of voters")), "{text}");
    assert!(c.nodes[l].node.log().contains("this node turns dormant: no quorum of voters"));
    assert_eq!(c.nodes[l].node.metric("nanogrid_cluster_out_of_touch", "").await, 1.0);
    assert_eq!(c.nodes[rest[0]].node.metric("nanogrid_cluster_out_of_touch", "").await, 0.0);
    for &i in &rest {
        serves(&c, i, "/hello/", Duration::from_secs(10)).await;
    }

    c.isolate(0, false);
    eventually("the old leader follows the new one", FORM, || async {
        let s = c.status(l).await?;
        (s.mode == "follower" && s.leader.as_deref() == Some(new.as_str()) && s.out_of_touch.is_none()).then_some(())
    })
    .await;
    serves(&c, l, "/hello/", Duration::from_secs(10)).await;
    assert_eq!(c.nodes[l].node.metric("nanogrid_cluster_out_of_touch", "").await, 0.0);
}

/// A follower's peer connections to both other nodes are cut. The others keep their
/// leader and serve; the follower, which sees them through gossip, turns dormant once no
/// leader has reached it for 10 s, and names the peer port. Healed, it serves again.
#[tokio::test]
async fn a_follower_that_no_leader_reaches_turns_dormant_and_serves_again_once_healed() {
    let (c, leader, f) = serving(|c, leader| (0..3).find(|&i| c.nodes[i].name != leader).unwrap()).await;
    let rest: Vec<usize> = (0..3).filter(|&i| i != f).collect();

    let t = Instant::now();
    cut_peer_port(&c, f, &rest);
    let why = dormant_because(&c, f, "the cut-off follower turns dormant and says why").await;
    eprintln!("the cut-off follower turned dormant after {:?}", t.elapsed());
    // Cut off, it campaigns (and reaches no one), so it knows no leader by then.
    assert!(why.starts_with("no leader has been elected that reaches this node for "), "{why}");
    assert_error(&c.get(f, "/hello/").await.unwrap(), 503, "dormant");
    // The other two go on with the same leader.
    assert_eq!(c.agreed_leader(&rest).await.as_deref(), Some(leader.as_str()));
    for &i in &rest {
        serves(&c, i, "/hello/", Duration::from_secs(10)).await;
    }

    c.isolate(0, false);
    // Back in touch: a follower, or the leader (its campaigns while cut off raised its
    // term, which may call an election once it is heard again).
    eventually("the follower is back", FORM, || async {
        let s = c.status(f).await?;
        (matches!(s.mode.as_str(), "follower" | "leader") && s.out_of_touch.is_none()).then_some(())
    })
    .await;
    serves(&c, f, "/hello/", Duration::from_secs(10)).await;
}
