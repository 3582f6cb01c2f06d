//! `TestNode`: a `nanogrid serve` process on free loopback ports with its own data dir,
//! killed on drop; and the guest components, built once per test run.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use nanogrid::api::{ServiceAnswer, ServiceDetail, Uploaded};
use nanogrid::client::{AdminClient, Client, Reply};
use nanogrid::runtime::Tier;
use serde_json::{Value, json};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ has a parent").to_path_buf()
}

/// Build the samples workspace (samples and test guests) once; return the .wasm dir.
pub fn wasm_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let manifest = repo_root().join("samples/Cargo.toml");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "--release", "--target", "wasm32-wasip2", "--workspace", "--manifest-path"])
            .arg(&manifest)
            // The host build's target dir must not leak into the guest build.
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .output()
            .expect("running cargo to build the guest components");
        assert!(
            out.status.success(),
            "building guests failed (is the wasm32-wasip2 target installed?):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        repo_root().join("samples/target/wasm32-wasip2/release")
    })
}

pub fn wasm(name: &str) -> Vec<u8> {
    let p = wasm_dir().join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// The Python and JavaScript test guests (`tests/guests-build.sh`: componentize-py and
/// componentize-js, installed into the cache outside the clone when missing), built once
/// per run into the cargo target dir; `name` is e.g. `reach-py`.
pub fn toolchain_wasm(name: &str) -> Vec<u8> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let out = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| repo_root().join("target"), PathBuf::from)
            .join("toolchain-guests");
        let run = Command::new("bash")
            .arg(repo_root().join("tests/guests-build.sh"))
            .arg(&out)
            .output()
            .expect("running tests/guests-build.sh");
        assert!(
            run.status.success(),
            "building the Python and JS guests failed:\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
        out
    });
    let p = dir.join(format!("{name}.wasm"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// Tests that load both cores for long (building 12-19 MB Python and JavaScript components
/// and compiling them in a debug node) must not overlap tests whose verdict compares
/// latencies (the re-provisioning experiments): on two cores the first turn the second's
/// measurements into noise. The first take this lock exclusively, the second shared.
static CPU: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Hold while loading the CPU heavily (see [`CPU`]).
pub async fn cpu_heavy() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    CPU.write().await
}

/// [`cpu_heavy`] for a test without a runtime.
pub fn cpu_heavy_blocking() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    CPU.blocking_write()
}

/// Hold while measuring latencies that decide an outcome (see [`CPU`]).
pub async fn latency_sensitive() -> tokio::sync::RwLockReadGuard<'static, ()> {
    CPU.read().await
}

/// One compile cache for the whole run, so each node does not recompile the same guests.
pub fn shared_compile_cache() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir")).path()
}

pub const TOKEN: &str = "test-token-0123456789";

/// A loopback TCP server that reads what a client sends and answers every connection with
/// `reply`; returns its `ip:port` and a count of the connections it accepted.
pub fn counting_server(reply: &'static [u8]) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for mut s in l.incoming().map_while(Result::ok) {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(reply);
        }
    });
    (addr, accepted)
}

pub struct TestNode {
    child: Option<Child>,
    pub data: tempfile::TempDir,
    pub ingress: String,
    pub admin_url: String,
    /// Use the shared compile cache (false: the node's own, inside its data dir).
    shared_cache: bool,
    /// Extra `serve` arguments.
    extra: Vec<String>,
    /// Extra environment of the node process; `{data}` in a value is the node's temp dir.
    pub env: Vec<(String, String)>,
    http: Client,
    /// The CA of the node's own TLS certificate, if it has one.
    ca: Option<Vec<u8>>,
    /// Run inside this network namespace, listening on this address instead of loopback
    /// (set before the first start).
    pub netns: Option<(String, String)>,
}

impl TestNode {
    pub async fn start() -> TestNode {
        Self::start_with(true).await
    }

    pub async fn start_with(shared_cache: bool) -> TestNode {
        Self::start_with_args(shared_cache, &[]).await
    }

    pub async fn start_with_args(shared_cache: bool, extra: &[&str]) -> TestNode {
        let mut node = Self::unstarted(shared_cache, extra);
        node.spawn();
        node
    }

    /// A node not started yet (start it with `restart`): its data dir,
    /// `data.path()/node`, can be prepared first.
    pub fn unstarted(shared_cache: bool, extra: &[&str]) -> TestNode {
        let data = tempfile::tempdir().expect("temp dir");
        TestNode {
            child: None,
            data,
            ingress: String::new(),
            admin_url: String::new(),
            shared_cache,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            http: Client::new(),
            ca: None,
            env: Vec::new(),
            netns: None,
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.data.path().join("node.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("log file");
        let bin = env!("CARGO_BIN_EXE_nanogrid");
        // `ip netns exec` execs the node: the child is the node process itself.
        let mut cmd = match &self.netns {
            Some((ns, _)) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, bin]);
                c
            }
            None => Command::new(bin),
        };
        let ip = self.netns.as_ref().map_or("127.0.0.1", |(_, ip)| ip.as_str());
        cmd.args(["serve", "--listen", &format!("{ip}:0")]);
        // 200 slots unless the test sets its own.
        if !self.extra.iter().any(|a| a == "--pool-instances") {
            cmd.args(["--pool-instances", "200"]);
        }
        cmd.arg("--data-dir")
            .arg(self.data.path().join("node"))
            .env("NANOGRID_TOKEN", TOKEN)
            .env("RUST_LOG", "info,wasmtime=warn,cranelift=warn,openraft=warn")
            .stdout(Stdio::piped())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v.replace("{data}", &self.data.path().display().to_string()));
        }
        if self.shared_cache {
            cmd.arg("--compile-cache").arg(shared_compile_cache());
        }
        if !self.extra.iter().any(|a| a == "--admin-listen") {
            cmd.args(["--admin-listen", &format!("{ip}:0")]);
        }
        cmd.args(&self.extra);
        let mut child = cmd.spawn().expect("starting nanogrid serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut ingress = None;
            let mut admin = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(a) = line.strip_prefix("ingress listening on ") {
                    ingress = Some(a.to_string());
                }
                if let Some(a) = line.strip_prefix("admin listening on ") {
                    admin = Some(a.to_string());
                }
                if let (Some(i), Some(a)) = (&ingress, &admin) {
                    let _ = tx.send((i.clone(), a.clone()));
                    ingress = None;
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok((i, a)) => {
                self.ingress = i;
                self.admin_url = a;
            }
            Err(e) => {
                let _ = child.kill();
                let why = match e {
                    std::sync::mpsc::RecvTimeoutError::Timeout => "did not start within 60s",
                    std::sync::mpsc::RecvTimeoutError::Disconnected => "exited before it listened",
                };
                panic!("node {why}; log:\n{}", self.log());
            }
        }
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node running").id()
    }

    /// Peak resident memory of the node process so far, in bytes (VmHWM).
    pub fn peak_rss(&self) -> u64 {
        self.proc_status_bytes("VmHWM:")
    }

    /// Reset the peak (VmHWM) to the current resident memory and return that: a peak
    /// measured afterwards is the growth of what follows, not of compilation or deploys
    /// before it (which may already have raised the peak above anything a transfer adds).
    pub fn reset_peak_rss(&self) -> u64 {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").expect("resetting the node's peak RSS");
        self.proc_status_bytes("VmRSS:")
    }

    fn proc_status_bytes(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"));
        kib * 1024
    }

    /// SIGKILL: no chance to flush or drain.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let status = c.wait().expect("waiting for the node");
            assert!(status.success(), "node exited with {status}; log:\n{}", self.log());
        }
    }

    /// Send SIGTERM without waiting (see `wait_exit`).
    pub fn stop_signal_only(&self) {
        if let Some(c) = &self.child {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
    }

    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.child.take().expect("node running").wait().expect("waiting for the node")
    }

    /// Start again on the same data dir (new ports).
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// Start again with `more` flags added for this start only.
    pub fn restart_with(&mut self, more: &[&str]) {
        let kept = self.extra.len();
        self.extra.extend(more.iter().map(|s| s.to_string()));
        self.spawn();
        self.extra.truncate(kept);
    }

    /// Start again where the start is expected to fail: wait (at most 60 s) for the
    /// process to exit and return its status and what it wrote to the log this time.
    pub fn start_expecting_exit(&mut self, more: &[&str]) -> (std::process::ExitStatus, String) {
        let before = self.log().len();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nanogrid"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--data-dir"])
            .arg(self.data.path().join("node"))
            .env("NANOGRID_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(log)
            .args(&self.extra)
            .args(more);
        let mut child = cmd.spawn().expect("starting nanogrid serve");
        let pid = child.id() as i32;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait().expect("waiting for the node"));
        });
        let Ok(status) = rx.recv_timeout(Duration::from_secs(60)) else {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the node kept running; log:\n{}", self.log());
        };
        (status, self.log()[before..].to_string())
    }

    pub fn admin(&self) -> AdminClient {
        match &self.ca {
            Some(ca) => AdminClient::with_client(&self.admin_url, Some(TOKEN.to_string()), Client::with_ca_pem(ca)),
            None => AdminClient::new(&self.admin_url, Some(TOKEN.to_string())),
        }
    }

    /// Trust `ca_pem` when talking to this node (it serves HTTPS with a certificate of
    /// that CA).
    pub fn trust(&mut self, ca_pem: &[u8]) {
        self.ca = Some(ca_pem.to_vec());
        self.http = Client::with_ca_pem(ca_pem);
    }

    /// Upload a built guest and deploy it; panics with the reply if either step fails.
    pub async fn deploy(&self, name: &str, guest: &str, spec: Value) -> ServiceAnswer {
        let r = self.try_deploy(name, guest, spec).await;
        assert!(r.status.is_success(), "deploy of {name} failed: {} {}", r.status, r.text());
        parse(&r)
    }

    /// Upload a built guest and try to deploy it; returns the admin API's reply.
    pub async fn try_deploy(&self, name: &str, guest: &str, spec: Value) -> Reply {
        let admin = self.admin();
        let up = admin.upload(wasm(guest)).await.expect("upload");
        assert!(up.status.is_success(), "upload of {guest} failed: {} {}", up.status, up.text());
        let mut body = json!({ "component": parse::<Uploaded>(&up).digest });
        for (k, v) in spec.as_object().cloned().unwrap_or_default() {
            body[k] = v;
        }
        admin.call_json(Method::PUT, &format!("/v1/services/{name}"), &body).await.expect("put service")
    }

    pub async fn request(&self, method: Method, path: &str, body: &str) -> Reply {
        self.http
            .send(method, &format!("{}{path}", self.ingress), &[], Bytes::from(body.to_string()))
            .await
            .expect("ingress request")
    }

    /// A request with extra headers.
    pub async fn request_with(&self, method: Method, path: &str, headers: &[(&str, String)]) -> Reply {
        self.http
            .send(method, &format!("{}{path}", self.ingress), headers, Bytes::new())
            .await
            .expect("ingress request")
    }

    pub async fn request_bytes(&self, method: Method, path: &str, body: Bytes) -> Reply {
        self.http.send(method, &format!("{}{path}", self.ingress), &[], body).await.expect("ingress request")
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, "").await
    }

    /// What the `misbehave` guest's continuation stored for barrier `id` of `service` (its
    /// `barrier-{id}` kv key: "answered/calls:state"), once a continuation has run.
    pub async fn barrier_result(&self, service: &str, id: &str, what: &str, within: Duration) -> String {
        eventually(what, within, || async {
            let r = self.get(&format!("/{service}/kv-get/barrier-{id}")).await;
            (r.status == 200).then(|| r.text())
        })
        .await
    }

    pub async fn post(&self, path: &str, body: &str) -> Reply {
        self.request(Method::POST, path, body).await
    }

    pub async fn service(&self, name: &str) -> ServiceDetail {
        let r = self.admin().get(&format!("/v1/services/{name}")).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        parse(&r)
    }

    /// Wait until `name` runs optimized code here (tiered compilation swapped it in).
    pub async fn wait_optimized(&self, name: &str) {
        eventually(&format!("{name} runs optimized code"), std::time::Duration::from_secs(120), || async {
            let r = self.admin().get(&format!("/v1/services/{name}")).await.ok()?;
            let v: ServiceDetail = serde_json::from_slice(&r.body).ok()?;
            (v.status.local.code == Some(Tier::Optimized)).then_some(())
        })
        .await
    }

    /// One sample of a Prometheus metric with exactly these labels (`""`: none).
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        let text = self.admin().get("/metrics").await.unwrap().text();
        let prefix = if labels.is_empty() { format!("{name} ") } else { format!("{name}{{{labels}}} ") };
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("metric {prefix} not found in:\n{text}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// Run the nanogrid CLI against this node.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_nanogrid"))
            .args(args)
            .env("NANOGRID_ADMIN", &self.admin_url)
            .env("NANOGRID_INGRESS", &self.ingress)
            .env("NANOGRID_TOKEN", TOKEN)
            .output()
            .expect("running the nanogrid CLI")
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            // A panic inside the node may be far above the tail: show it first.
            let lines: Vec<&str> = log.lines().collect();
            for (i, l) in lines.iter().enumerate().filter(|(_, l)| l.contains("panicked at")) {
                eprintln!("--- node panic ({}) ---", self.log_path().display());
                for l in &lines[i..(i + 6).min(lines.len())] {
                    eprintln!("{l}");
                }
                let _ = l;
            }
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- node log tail ({}) ---", self.log_path().display());
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
        self.kill();
    }
}

/// A reply's body as one of the admin API's types (`nanogrid::api`); panics with the
/// body when it is not one.
pub fn parse<T: serde::de::DeserializeOwned>(r: &Reply) -> T {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("not a {}: {e}: {}", std::any::type_name::<T>(), r.text()))
}

/// Assert a platform error: status, `error.code`, and that a request id is present.
pub fn assert_error(r: &Reply, status: u16, code: &str) -> nanogrid::http::ErrorDetail {
    assert_eq!(r.status.as_u16(), status, "body: {}", r.text());
    let e = r.error().unwrap_or_else(|| panic!("not an error body: {}", r.text()));
    assert_eq!(e.code, code, "{e:?}");
    assert!(!e.message.is_empty(), "{e:?}");
    assert!(!e.request_id.is_empty(), "{e:?}");
    e
}

/// Send `request` as raw bytes to `addr` over a fresh TCP connection (which must be
/// accepted) and return what comes back before the server closes or 5 s pass. For
/// checks that a listener does not answer HTTP: a refused connection cannot pass them.
pub fn raw_exchange(addr: &str, request: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    // The server may close before reading all of it (a header too large).
    let _ = s.write_all(request);
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

/// Poll `probe` every 100 ms until it yields a value; panic naming `what` after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: std::time::Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out after {within:?} waiting until {what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
