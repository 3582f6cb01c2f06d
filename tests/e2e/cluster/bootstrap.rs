//! Forming a brand-new cluster with `--bootstrap-expect`: nodes started together wait
//! until the expected number see each other, then form one cluster in which all of them
//! vote; a value no cluster can use is refused at start with the fix named.

use std::time::Duration;

use nanogrid::api::Role;

use super::driver::{Cluster, eventually};
use super::{FORM, formed, holds_for};

#[tokio::test]
async fn a_new_cluster_waits_for_the_nodes_it_expects() {
    let mut c = Cluster::start_with(2, &["--bootstrap-expect", "3"]).await;
    eventually("n1 sees n2 through gossip", FORM, || async {
        c.status(0).await?.node("n2").is_some_and(|n| n.live).then_some(())
    })
    .await;
    // Past gossip's settling time (2 s from the start), with one node short, neither forms
    // a cluster: both stay dormant, no leader, no Raft member (with the default of 1, n1
    // would have bootstrapped n1 and n2 by now).
    holds_for(Duration::from_secs(4), || async {
        for i in 0..2 {
            let s = c.status(i).await.expect("a dormant node answers GET /v1/cluster");
            assert_eq!((s.mode.as_str(), s.leader.as_deref()), ("dormant", None), "{s:?}");
            assert!(s.nodes.iter().all(|n| n.role == Role::Joining), "no member yet: {s:?}");
        }
    })
    .await;
    // The third arrives: one cluster, the three of them voters from the start.
    c.add_node_with(&["--bootstrap-expect", "3"]).await;
    let leader = formed(&c).await;
    for i in 0..3 {
        let s = c.status(i).await.expect("GET /v1/cluster");
        let voters: Vec<&str> = s.nodes.iter().filter(|n| n.role == Role::Voter).map(|n| n.id.as_str()).collect();
        assert_eq!(voters, ["n1", "n2", "n3"], "{s:?}");
        assert_eq!(s.leader.as_deref(), Some(leader.as_str()), "{s:?}");
    }
}

#[test]
fn a_bootstrap_expect_of_zero_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nanogrid"))
        .args(["serve", "--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--bootstrap-expect", "0"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--bootstrap-expect 0 is out of range") && err.contains("nodes started together"), "{err}");
}
