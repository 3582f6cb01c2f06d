//! A damaged store (issue 15): a node that finds its RocksDB damaged refuses to start and
//! says what to do; in a cluster, `--rebuild-store` moves the damaged store aside and the
//! node is filled again from its peers, losing nothing a majority acknowledged.

use std::path::{Path, PathBuf};

use http::Method;
use serde_json::json;

use nanogrid::api::Role;
use nanogrid::grid::{Storage, Table};

use super::driver::{Cluster, eventually};
use super::{FORM, formed, serves};
use crate::support::TestNode;

/// The node's database directory (`--data-dir` is `<tempdir>/node`).
fn db_dir(node: &TestNode) -> PathBuf {
    node.data.path().join("node").join("db")
}

/// Flip one byte in the middle of the largest write-ahead log file: a record that is not
/// the last one no longer matches its checksum.
fn corrupt_log(db: &Path) {
    let log = std::fs::read_dir(db)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("a write-ahead log file");
    let mut bytes = std::fs::read(&log).unwrap();
    assert!(bytes.len() > 4096, "{} holds the writes: {} bytes", log.display(), bytes.len());
    let at = bytes.len() / 3;
    bytes[at] ^= 0x40;
    std::fs::write(&log, bytes).unwrap();
}

#[tokio::test]
async fn a_single_node_with_a_damaged_store_refuses_to_start_and_says_what_to_do() {
    let mut node = TestNode::start().await;
    node.deploy("kv", "kvstore", json!({})).await;
    let http = nanogrid::client::Client::new();
    for k in 0..200 {
        let url = format!("{}/kv/key{k}", node.ingress);
        let r = http.send(Method::PUT, &url, &[], format!("value-{k}").into()).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    node.stop();
    corrupt_log(&db_dir(&node));
    let (status, log) = node.start_expecting_exit(&[]);
    assert!(!status.success(), "a damaged store must stop the start; log:\n{log}");
    let db = db_dir(&node).display().to_string();
    assert!(log.contains(&format!("the store in {db} is damaged")), "names the store: {log}");
    assert!(log.contains("Nothing was served from it"), "{log}");
    assert!(log.contains("restore the data dir from a backup"), "says what to do: {log}");
    // The damaged files are left as they were, for whoever repairs them.
    assert!(std::fs::read_dir(db_dir(&node)).unwrap().count() > 3);
    // `--rebuild-store` needs peers: a single node refuses it the same way.
    let (status, log) = node.start_expecting_exit(&["--rebuild-store"]);
    assert!(!status.success() && log.contains("no peers to rebuild from"), "{log}");
}

#[tokio::test]
async fn a_cluster_node_rebuilds_a_damaged_store_from_its_peers_and_nothing_is_lost() {
    let mut c = Cluster::start_with(3, &["--grid-log-keep", "8"]).await;
    formed(&c).await;
    c.nodes[0].node.deploy("kv", "kvstore", json!({ "instances": 3 })).await;
    for i in 0..3 {
        serves(&c, i, "/kv/", FORM).await;
    }
    let mut want = Vec::new();
    for k in 0..120 {
        let level = if k % 2 == 0 { "quorum" } else { "all" };
        let r =
            c.call(k % 3, Method::PUT, &format!("/kv/key{k}?consistency={level}"), &format!("v-{k}")).await.unwrap();
        assert_eq!(r.status, 200, "PUT key{k}: {}", r.text());
        want.push((k, format!("v-{k}")));
    }

    // n2's store is damaged while it is down: it will not start on it.
    c.stop(1);
    corrupt_log(&db_dir(&c.nodes[1].node));
    let (status, log) = c.nodes[1].node.start_expecting_exit(&[]);
    assert!(!status.success(), "{log}");
    assert!(log.contains("is damaged") && log.contains("restart with --rebuild-store"), "{log}");

    // Writes go on meanwhile on the other two.
    for k in 120..160 {
        let r =
            c.call(k % 2 * 2, Method::PUT, &format!("/kv/key{k}?consistency=quorum"), &format!("v-{k}")).await.unwrap();
        assert_eq!(r.status, 200, "PUT key{k}: {}", r.text());
        want.push((k, format!("v-{k}")));
    }

    // With --rebuild-store it moves the store aside and is filled again from its peers.
    c.nodes[1].node.restart_with(&["--rebuild-store"]);
    let aside: Vec<String> = std::fs::read_dir(c.nodes[1].node.data.path().join("node"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("db.damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "the damaged store is kept aside: {aside:?}");
    // Back as a voter once it has caught up (it was a learner meanwhile), and every
    // partition's primary has n2 in sync with nothing left to send it.
    eventually("n2 is a voter again and every partition has caught it up", FORM * 2, || async {
        let s = c.status(0).await?;
        let n2 = s.node("n2")?.clone();
        let g = c.grid(0).await.ok()?;
        let synced = g.table.iter().all(|p| p.in_sync.iter().any(|n| n == "n2") && p.lag.get("n2") == Some(&Some(0)));
        (n2.role == Role::Voter && n2.mode == "follower" && synced).then_some(())
    })
    .await;
    // Its own store holds every acknowledged write: read it directly once it has stopped.
    c.stop(1);
    let store = nanogrid::grid::RocksStorage::open(&db_dir(&c.nodes[1].node)).expect("the rebuilt store opens");
    for (k, v) in &want {
        let key = nanogrid::grid::kv_key("kv", &format!("key{k}"));
        let p = nanogrid::grid::part::partition_of(&key, 256);
        let got = store.get(Table::Kv, &nanogrid::grid::plog::data_key(p, &key)).unwrap();
        assert_eq!(got.as_deref(), Some(v.as_bytes()), "key{k} in the rebuilt store of n2");
    }
    drop(store);
    c.restart(1);
    formed(&c).await;
    // And with n1 gone, n2 and n3 are a majority that has everything.
    c.kill(0);
    eventually("n2 and n3 elect a leader", FORM, || c.agreed_leader(&[1, 2])).await;
    for (k, v) in &want {
        let r = c.get(1, &format!("/kv/key{k}?consistency=quorum")).await.unwrap();
        assert_eq!((r.status.as_u16(), r.text()), (200, v.clone()), "key{k} at quorum without n1");
    }
}
