//! A data dir whose disk fills up (issue 15): the node refuses kv writes with an error
//! naming the directory and the fix, keeps serving reads, never corrupts its store, and
//! takes writes again by itself once there is room, with nothing acknowledged lost.
//!
//! The data dir sits on a small tmpfs mounted for the test (root only, like the fault
//! campaign's network namespaces); the disk is filled by a file written next to the store.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;
use serde_json::json;

use crate::support::{TestNode, eventually};

/// A tmpfs mounted on a directory for as long as the value lives.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mib: u64) -> Tmpfs {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "this test mounts a tmpfs: run the suite as root (./dev test)");
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount tmpfs on {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Write zeros to `path` until the disk has at most `leave` bytes free (or is full).
fn fill(path: &Path, leave: u64) {
    let dir = path.parent().unwrap();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    let chunk = vec![0u8; 1 << 20];
    loop {
        let free = nanogrid::grid::disk::free_bytes(dir).unwrap();
        if free <= leave {
            return;
        }
        let n = (free - leave).min(chunk.len() as u64) as usize;
        match f.write(&chunk[..n]) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
}

async fn put(node: &TestNode, key: &str, value: &str) -> nanogrid::client::Reply {
    node.request(Method::PUT, &format!("/kv/{key}"), value).await
}

/// Reads every key back and checks its value.
async fn read_back(node: &TestNode, acked: &[(String, String)]) {
    for (k, v) in acked {
        let r = node.get(&format!("/kv/{k}")).await;
        assert_eq!((r.status.as_u16(), r.text()), (200, v.clone()), "acknowledged key {k}");
    }
}

/// A node keeping `min_free_mib` free, its data dir (returned) on a 256 MiB tmpfs, with
/// `kvstore` deployed as `kv`.
async fn node_on_tmpfs(min_free_mib: &str) -> (TestNode, PathBuf, Tmpfs) {
    let mut node = TestNode::unstarted(true, &["--min-free-mib", min_free_mib]);
    let dir = node.data.path().join("node");
    let mount = Tmpfs::mount(&dir, 256);
    node.restart();
    node.deploy("kv", "kvstore", json!({})).await;
    (node, dir, mount)
}

#[tokio::test]
async fn a_full_disk_refuses_writes_clearly_keeps_reads_and_recovers_without_losing_anything() {
    let (mut node, dir, _mount) = node_on_tmpfs("16").await;
    let mut acked = Vec::new();
    for k in 0..100 {
        let (key, value) = (format!("before{k}"), format!("value-{k}"));
        let r = put(&node, &key, &value).await;
        assert_eq!(r.status, 200, "{}", r.text());
        acked.push((key, value));
    }
    assert_eq!(node.metric("nanogrid_disk_full", "").await, 0.0);

    // Below the minimum free: writes are refused, naming the data dir and the fix.
    let filler = dir.join("filler");
    fill(&filler, 8 << 20);
    // The node measures free space at most every 100 ms: once it reports the disk full,
    // writes are refused.
    eventually("the node reports its disk full", Duration::from_secs(5), || async {
        (node.metric("nanogrid_disk_full", "").await == 1.0).then_some(())
    })
    .await;
    let r = put(&node, "refused", "x").await;
    assert_eq!(r.status, 503, "{}", r.text());
    let text = r.text();
    assert!(text.contains(&format!("the disk of data dir {}", dir.join("db").display())), "{text}");
    assert!(text.contains("free space on that disk"), "{text}");
    read_back(&node, &acked).await;

    // Completely full: still refused the same way (by the margin check: the next test
    // lets RocksDB itself run out), the node still up and reading.
    fill(&dir.join("filler2"), 0);
    let r = put(&node, "refused", "x").await;
    assert!(r.status == 503 && r.text().contains("is full"), "{} {}", r.status, r.text());
    read_back(&node, &acked).await;

    // Room again: writes resume by themselves.
    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(dir.join("filler2")).unwrap();
    eventually("writes are taken again", Duration::from_secs(30), || async {
        (put(&node, "after", "1").await.status == 200).then_some(())
    })
    .await;
    acked.push(("after".into(), "1".into()));
    assert_eq!(node.metric("nanogrid_disk_full", "").await, 0.0);
    assert_eq!(node.get("/kv/refused").await.status, 404, "a refused write must not have happened");
    read_back(&node, &acked).await;

    // The store was never damaged: it opens again with everything in it.
    node.stop();
    node.restart();
    read_back(&node, &acked).await;
}

/// Without the margin (`--min-free-mib 0`) the disk fills under RocksDB itself while
/// clients write: its failed log writes must come back as the same clear refusal, and
/// RocksDB must resume once there is room, with every acknowledged write kept.
#[tokio::test]
async fn a_disk_filled_under_rocksdb_while_clients_write_loses_nothing_acknowledged() {
    let (node, dir, _mount) = node_on_tmpfs("0").await;
    let node = std::sync::Arc::new(node);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (node, stop) = (node.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut acked, mut refused) = (Vec::new(), Vec::new());
                let mut k = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Values large enough to fill the log quickly.
                    let (key, value) = (format!("w{w}-{k}"), format!("{k}-{}", "v".repeat(32_000)));
                    let r = put(&node, &key, &value).await;
                    let text = r.text();
                    match r.status.as_u16() {
                        200 => acked.push((key, value)),
                        // In the log but not synced: either outcome is allowed.
                        503 if text.contains("may or may not be kept") => {}
                        503 if text.contains("is full") && text.contains("writes are refused") => refused.push(key),
                        s => panic!("write {key}: {s} {text}"),
                    }
                    k += 1;
                }
                (acked, refused)
            })
        })
        .collect();
    // Let the writers run, then take the disk's last byte from under them.
    eventually("the writers have written", Duration::from_secs(30), || async {
        (node.get("/kv/w0-20").await.status == 200).then_some(())
    })
    .await;
    let filler = dir.join("filler");
    fill(&filler, 0);
    eventually("a write is refused for want of room", Duration::from_secs(90), || async {
        let r = put(&node, "probe", "x").await;
        (r.status == 503 && r.text().contains("is full")).then_some(())
    })
    .await;
    // RocksDB itself ran out of space (the margin is 0): the store waits for room.
    assert_eq!(node.metric("nanogrid_store_stuck", "").await, 1.0, "RocksDB never hit the full disk");
    std::fs::remove_file(&filler).unwrap();
    eventually("writes are taken again", Duration::from_secs(60), || async {
        (put(&node, "after", "1").await.status == 200).then_some(())
    })
    .await;
    assert_eq!(node.metric("nanogrid_store_stuck", "").await, 0.0, "the store was opened again");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = vec![("after".to_string(), "1".to_string())];
    let mut refused = Vec::new();
    for w in writers {
        let (a, f) = w.await.unwrap();
        acked.extend(a);
        refused.extend(f);
    }
    assert!(acked.len() > 80, "only {} writes acknowledged", acked.len());
    eprintln!("{} writes acknowledged, {} refused while the disk was full", acked.len(), refused.len());
    read_back(&node, &acked).await;
    // A write refused as "full" did not happen.
    for key in &refused {
        let r = node.get(&format!("/kv/{key}")).await;
        assert_eq!(r.status, 404, "{key} was refused but is there");
    }
    let mut node = std::sync::Arc::into_inner(node).expect("the writers are done");
    node.stop();
    node.restart();
    read_back(&node, &acked).await;
}
