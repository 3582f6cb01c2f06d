//! Power loss (issue 15): every node's data dir sits behind `tests/powerloss/lossy.c`, an
//! LD_PRELOAD shim that journals what each write overwrites. A power loss is SIGKILL of
//! every node at once followed by undoing, per file, every write after that file's last
//! fsync: what is left is what disks that keep only fsynced data would hold. Every write
//! the cluster acknowledged at `quorum` must still be there when it comes back.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use http::Method;
use serde_json::json;

use super::driver::Cluster;
use super::{FORM, formed, serves};

/// Build the shim once per test binary.
fn shim() -> &'static Path {
    static SO: OnceLock<PathBuf> = OnceLock::new();
    SO.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/powerloss/lossy.c");
        let out = std::env::temp_dir().join(format!("nanogrid-lossy-{}.so", std::process::id()));
        let status = std::process::Command::new("cc")
            .args(["-shared", "-fPIC", "-O1", "-Wall", "-o"])
            .arg(&out)
            .arg(&src)
            .args(["-ldl", "-lpthread"])
            .status()
            .expect("running cc (build-essential) to build the power-loss shim");
        assert!(status.success(), "building {}", src.display());
        out
    })
}

struct Undo {
    off: u64,
    old_size: u64,
    old: Vec<u8>,
}

fn u64_at(r: &mut impl Read) -> Option<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b).ok()?;
    Some(u64::from_ne_bytes(b))
}

/// The power goes: undo, newest first, every journalled write of each file after that
/// file's last sync, then start a fresh journal. Returns how many writes were undone.
fn power_off(journal: &Path, dir: &Path) -> usize {
    let mut r = std::io::BufReader::new(std::fs::File::open(journal).expect("the shim's journal"));
    let mut per_file: HashMap<(u64, u64), Vec<Undo>> = HashMap::new();
    let mut tag = [0u8; 1];
    while r.read_exact(&mut tag).is_ok() {
        let (dev, ino) = (u64_at(&mut r).unwrap(), u64_at(&mut r).unwrap());
        match tag[0] {
            b'S' => per_file.entry((dev, ino)).or_default().clear(),
            b'W' => {
                let (off, old_size, len) = (u64_at(&mut r).unwrap(), u64_at(&mut r).unwrap(), u64_at(&mut r).unwrap());
                let mut old = vec![0u8; len as usize];
                r.read_exact(&mut old).expect("a whole journal record");
                per_file.entry((dev, ino)).or_default().push(Undo { off, old_size, old });
            }
            t => panic!("journal record of unknown kind {t}"),
        }
    }
    // Where each file is now (renames after writing are fine: files are known by inode).
    let mut paths: BTreeMap<(u64, u64), PathBuf> = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                todo.push(e.path());
            } else if m.is_file() {
                paths.insert((m.dev(), m.ino()), e.path());
            }
        }
    }
    let mut undone = 0;
    for (id, undos) in per_file {
        let Some(path) = paths.get(&id) else { continue }; // deleted since
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        for u in undos.iter().rev() {
            f.write_all_at(&u.old, u.off).unwrap();
            f.set_len(u.old_size).unwrap();
            undone += 1;
        }
    }
    std::fs::write(journal, b"").unwrap();
    undone
}

#[test]
fn the_shim_keeps_only_what_was_synced() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    std::fs::create_dir(&data).unwrap();
    let journal = dir.path().join("journal");
    let script = "dd if=/dev/zero of=d/synced bs=3 count=1 conv=fsync 2>/dev/null; printf abc > d/unsynced; \
                  dd if=/dev/zero of=d/overwritten bs=4 count=1 conv=fsync 2>/dev/null; printf xyz > d/overwritten; \
                  kill -9 $$";
    let status = std::process::Command::new("sh")
        .args(["-c", script])
        .current_dir(dir.path())
        .env("LD_PRELOAD", shim())
        .env("LOSSY_DIR", &data)
        .env("LOSSY_JOURNAL", &journal)
        .status()
        .unwrap();
    assert!(!status.success(), "the shell killed itself");
    let read = |n: &str| std::fs::read(data.join(n)).unwrap();
    // Before the power goes, the kernel has everything.
    assert_eq!((read("synced"), read("unsynced"), read("overwritten")), (vec![0; 3], b"abc".to_vec(), b"xyz".to_vec()));
    assert!(power_off(&journal, &data) >= 2);
    assert_eq!(read("synced"), vec![0; 3], "synced data stays");
    assert_eq!(read("unsynced"), Vec::<u8>::new(), "data never synced is gone");
    assert_eq!(read("overwritten"), vec![0; 4], "an unsynced overwrite of synced data is undone");
}

#[tokio::test]
async fn quorum_writes_survive_the_power_going_off_on_every_node() {
    let mut c = Cluster::start(3).await;
    formed(&c).await;
    // Every node again, now behind the shim (what they wrote so far was synced on stop).
    let journals: Vec<PathBuf> = (0..3).map(|i| c.nodes[i].node.data.path().join("lossy.journal")).collect();
    for (i, journal) in journals.iter().enumerate() {
        c.stop(i);
        let env = &mut c.nodes[i].node.env;
        env.push(("LD_PRELOAD".into(), shim().display().to_string()));
        env.push(("LOSSY_DIR".into(), "{data}/node".into()));
        env.push(("LOSSY_JOURNAL".into(), journal.display().to_string()));
        c.restart(i);
    }
    formed(&c).await;
    c.nodes[0].node.deploy("kv", "kvstore", json!({ "instances": 3 })).await;
    for i in 0..3 {
        serves(&c, i, "/kv/", FORM).await;
    }

    // Eight writers, through every node, for four seconds; then the power goes on all
    // three at once, while they are still writing.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop_at = Instant::now() + Duration::from_secs(4);
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (urls, acked) = (c.nodes.iter().map(|n| n.node.ingress.clone()).collect::<Vec<_>>(), acked.clone());
            tokio::spawn(async move {
                let http = nanogrid::client::Client::new();
                let mut n = 0;
                while Instant::now() < stop_at {
                    let (key, value) = (format!("w{w}-{n}"), format!("value-{w}-{n}"));
                    let url = format!("{}/kv/{key}?consistency=quorum", urls[n % urls.len()]);
                    let sent = http.send(Method::PUT, &url, &[], value.clone().into());
                    if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(5), sent).await
                        && r.status == 200
                    {
                        acked.lock().unwrap().push((key, value));
                    }
                    n += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep_until((stop_at - Duration::from_millis(300)).into()).await;
    for i in 0..3 {
        c.kill(i);
    }
    for w in writers {
        w.await.unwrap();
    }
    let mut undone = 0;
    for (i, journal) in journals.iter().enumerate() {
        undone += power_off(journal, &c.nodes[i].node.data.path().join("node"));
    }
    let acked = acked.lock().unwrap().clone();
    println!("power loss: {} acknowledged quorum writes, {undone} unsynced writes undone", acked.len());
    assert!(acked.len() > 100, "the writers got through: {}", acked.len());

    for i in 0..3 {
        c.restart(i);
    }
    formed(&c).await;
    for i in 0..3 {
        serves(&c, i, "/kv/", FORM).await;
    }
    let mut lost = Vec::new();
    for (k, v) in &acked {
        let r = c.get(0, &format!("/kv/{k}?consistency=quorum")).await.unwrap();
        if (r.status.as_u16(), r.text()) != (200, v.clone()) {
            lost.push(format!("{k}: {} {}", r.status, r.text()));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
}
