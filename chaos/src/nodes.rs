//! The five `nanogrid serve` processes of a run, each inside its network namespace, with
//! the cluster's secrets made by the CLI as a user would, their data dirs and logs under
//! the run's directory, and the steps faults are made of: kill -9, stop, pause, resume,
//! start (optionally `--rebuild-store`), corrupt a stopped node's files.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::Method;
use nanogrid::client::{AdminClient, Client};
use serde_json::{Value, json};

use crate::disk::Disks;
use crate::net::Net;

pub struct Nodes {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub token: String,
    procs: Vec<Option<Child>>,
    pub paused: Vec<bool>,
    ips: Vec<String>,
    ns: Vec<String>,
    http: Client,
    /// The nodes' data dirs, each on its own tmpfs (after `procs`: dropped once the
    /// processes are gone).
    pub disks: Disks,
}

fn cli(bin: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(bin).args(args).output().context("running nanogrid")?;
    if !out.status.success() {
        bail!("nanogrid {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

impl Nodes {
    pub fn new(bin: &Path, dir: &Path, net: &Net) -> anyhow::Result<Nodes> {
        let cluster = dir.join("cluster");
        let c = cluster.to_str().context("a UTF-8 run directory")?;
        cli(bin, &["cluster", "init", c])?;
        for i in 0..net.n {
            cli(bin, &["cluster", "add-node", &format!("n{}", i + 1), c])?;
        }
        let token = std::fs::read_to_string(cluster.join("admin-token"))?.trim().to_string();
        let disks = Disks::mount((0..net.n).map(|i| dir.join(format!("n{}", i + 1))).collect())?;
        Ok(Nodes {
            disks,
            bin: bin.into(),
            dir: dir.into(),
            token,
            procs: (0..net.n).map(|_| None).collect(),
            paused: vec![false; net.n],
            ips: (0..net.n).map(|i| net.ip(i)).collect(),
            ns: (0..net.n).map(|i| net.ns(i)).collect(),
            http: Client::new(),
        })
    }

    pub fn n(&self) -> usize {
        self.ips.len()
    }

    pub fn ingress(&self, i: usize) -> String {
        format!("http://{}:8080", self.ips[i])
    }

    pub fn admin(&self, i: usize) -> AdminClient {
        AdminClient::with_client(&format!("http://{}:8081", self.ips[i]), Some(self.token.clone()), self.http.clone())
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("n{}", i + 1))
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("n{}.log", i + 1))
    }

    pub fn running(&self, i: usize) -> bool {
        self.procs[i].is_some()
    }

    /// Whether node `i`'s process is still there; one that exited is forgotten (so it
    /// can be started again).
    pub fn alive(&mut self, i: usize) -> bool {
        let exited = self.procs[i].as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some());
        if exited {
            self.procs[i] = None;
        }
        self.procs[i].is_some()
    }

    fn spawn(&mut self, i: usize, rebuild: bool) -> anyhow::Result<()> {
        let ip = &self.ips[i];
        let seeds: Vec<String> = self.ips.iter().map(|ip| format!("{ip}:7002")).collect();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(i))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns[i]])
            .arg(&self.bin)
            .args(["serve", "--node-id", &format!("n{}", i + 1), "--cluster-dir"])
            .arg(self.dir.join("cluster"))
            .arg("--data-dir")
            .arg(self.data_dir(i))
            .arg("--compile-cache")
            .arg(self.dir.join("compiled"))
            .args(["--listen", &format!("{ip}:8080"), "--admin-listen", &format!("{ip}:8081")])
            .args(["--peer-listen", &format!("{ip}:7001"), "--gossip-listen", &format!("{ip}:7002")])
            .args(["--seeds", &seeds.join(","), "--voters", "5", "--pool-instances", "200"])
            // The grid at debug: every append, fence and acknowledgement, to explain a
            // failing seed.
            .env(
                "RUST_LOG",
                "info,wasmtime=warn,cranelift=warn,openraft=warn,nanogrid::grid=debug,nanogrid::control::grid=debug",
            )
            .stdout(Stdio::null())
            .stderr(log);
        if rebuild {
            cmd.arg("--rebuild-store");
        }
        self.procs[i] = Some(cmd.spawn().context("starting a node")?);
        self.paused[i] = false;
        Ok(())
    }

    /// Start node `i` and wait until its admin listener answers; `Err` with the log's
    /// tail if the process exits first (a damaged store, say).
    pub async fn start(&mut self, i: usize, rebuild: bool) -> anyhow::Result<()> {
        self.spawn(i, rebuild)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.procs[i].as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.procs[i] = None;
                bail!("n{} exited with {status}: {}", i + 1, self.log_tail(i, 3));
            }
            let admin = self.admin(i);
            let probe = tokio::time::timeout(Duration::from_secs(2), admin.get("/v1/cluster"));
            if probe.await.is_ok_and(|r| r.is_ok()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("n{} did not listen within 60 s: {}", i + 1, self.log_tail(i, 5));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn signal(&self, i: usize, sig: i32) {
        if let Some(c) = &self.procs[i] {
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    pub fn kill(&mut self, i: usize) {
        self.resume(i);
        if let Some(mut c) = self.procs[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit (kill -9 after 30 s), off the async workers.
    pub async fn stop(&mut self, i: usize) {
        self.resume(i);
        self.signal(i, libc::SIGTERM);
        if let Some(mut c) = self.procs[i].take() {
            let pid = c.id() as i32;
            let exited = tokio::task::spawn_blocking(move || c.wait());
            if tokio::time::timeout(Duration::from_secs(30), exited).await.is_err() {
                // The waiting task returns once the process is gone.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }

    pub fn pause(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        self.paused[i] = true;
    }

    pub fn resume(&mut self, i: usize) {
        if self.paused[i] {
            self.signal(i, libc::SIGCONT);
            self.paused[i] = false;
        }
    }

    /// Damage a stopped node's store: flip a byte in its largest write-ahead log, or
    /// (when the log is nearly empty) cut its MANIFEST in half. Returns what it did.
    pub fn corrupt(&self, i: usize, flip: bool) -> anyhow::Result<String> {
        let db = self.data_dir(i).join("db");
        let mut files: Vec<(PathBuf, u64)> =
            std::fs::read_dir(&db)?.flatten().map(|e| (e.path(), e.metadata().map(|m| m.len()).unwrap_or(0))).collect();
        files.sort_by_key(|(_, len)| std::cmp::Reverse(*len));
        let log = files.iter().find(|(p, len)| p.extension().is_some_and(|e| e == "log") && *len > 4096);
        match (flip, log) {
            (true, Some((path, len))) => {
                let mut bytes = std::fs::read(path)?;
                bytes[(*len / 3) as usize] ^= 0x40;
                std::fs::write(path, bytes)?;
                Ok(format!("flipped a byte in {}", path.display()))
            }
            _ => {
                let (path, len) = files
                    .iter()
                    .find(|(p, _)| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("MANIFEST-")))
                    .context("a MANIFEST")?;
                std::fs::OpenOptions::new().write(true).open(path)?.set_len(len / 2)?;
                Ok(format!("cut {} to {} bytes", path.display(), len / 2))
            }
        }
    }

    /// A metric of node `i` without labels (`None` when it does not answer within 3 s).
    pub async fn metric(&self, i: usize, name: &str) -> Option<f64> {
        let r = tokio::time::timeout(Duration::from_secs(3), self.admin(i).get("/metrics")).await.ok()?.ok()?;
        let prefix = format!("{name} ");
        r.text().lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
    }

    /// The leader as node `i` sees it (`None` too when it does not answer within 3 s).
    pub async fn leader(&self, i: usize) -> Option<String> {
        let r = tokio::time::timeout(Duration::from_secs(3), self.admin(i).get("/v1/cluster")).await.ok()?;
        let s: Value = r.ok()?.json().ok()?;
        s["leader"].as_str().map(str::to_string)
    }

    /// Upload `wasm` and deploy it as `name` with `instances`, through node 0.
    pub async fn deploy(&self, name: &str, wasm: &Path, instances: u32, idempotent: bool) -> anyhow::Result<()> {
        let admin = self.admin(0);
        let bytes = std::fs::read(wasm).with_context(|| format!("reading {}", wasm.display()))?;
        let up = admin.upload(bytes).await?;
        anyhow::ensure!(up.status.is_success(), "upload of {name}: {} {}", up.status, up.text());
        let body = json!({ "component": up.json()?["digest"], "instances": instances, "idempotent": idempotent });
        let r = admin.call_json(Method::PUT, &format!("/v1/services/{name}"), &body).await?;
        anyhow::ensure!(r.status.is_success(), "deploy of {name}: {} {}", r.status, r.text());
        Ok(())
    }

    /// Until every node answers `path` on its ingress with 200.
    pub async fn wait_serving(&self, path: &str, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        for i in 0..self.n() {
            loop {
                let url = format!("{}{path}", self.ingress(i));
                let sent =
                    tokio::time::timeout(Duration::from_secs(5), self.http.send(Method::GET, &url, &[], Bytes::new()));
                if sent.await.is_ok_and(|r| r.is_ok_and(|r| r.status == 200)) {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("n{} does not serve {path}", i + 1);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    /// Until every node agrees on one leader and the grid has every partition fully in
    /// sync.
    pub async fn wait_converged(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let mut leaders = Vec::new();
            for i in 0..self.n() {
                leaders.push(self.leader(i).await);
            }
            let agreed = leaders[0].is_some() && leaders.iter().all(|l| *l == leaders[0]);
            let grid: Option<Value> = match agreed {
                true => tokio::time::timeout(Duration::from_secs(5), self.admin(0).get("/v1/grid"))
                    .await
                    .ok()
                    .and_then(|r| r.ok())
                    .and_then(|r| r.json().ok()),
                false => None,
            };
            if grid.is_some_and(|g| g["under_replicated"] == 0 && g["partitions"] == 256) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the cluster did not converge: leaders {leaders:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.kill(i);
        }
    }
}
