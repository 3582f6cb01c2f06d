//! The service author's loop: `nanogrid new` → `nanogrid build` → `nanogrid dev`, with a
//! project outside this repository built by cargo like a user's would be.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nanogrid::api::Uploaded;
use serde_json::json;

use crate::support::{TestNode, parse, repo_root};

/// The toolchain this repository pins (a new project outside it would otherwise get the
/// machine's default, which may lack the wasm32-wasip2 target).
fn toolchain() -> String {
    let text = std::fs::read_to_string(repo_root().join("rust-toolchain.toml")).unwrap();
    let line = text.lines().find(|l| l.starts_with("channel")).expect("a channel line");
    line.split('"').nth(1).expect("a quoted channel").to_string()
}

/// `nanogrid ARGS` in `dir`, with the projects' cargo target dir shared across runs.
fn nanogrid(dir: &Path) -> Command {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo_root().join("target"), PathBuf::from)
        .join("guest-projects");
    let mut c = Command::new(env!("CARGO_BIN_EXE_nanogrid"));
    c.current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .env("RUSTUP_TOOLCHAIN", toolchain())
        .env_remove("NANOGRID_TOKEN");
    c
}

fn run(mut c: Command) -> String {
    let out = c.output().expect("running nanogrid");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{c:?} failed:\n{stdout}\n{stderr}");
    stdout.into_owned()
}

/// `nanogrid dev` running, its stdout lines arriving on a channel; killed on drop.
struct Dev {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// dev's stderr so far, and a signal each time more of it is read.
    log: std::sync::Arc<(std::sync::Mutex<String>, std::sync::Condvar)>,
}

impl Dev {
    fn start(dir: &Path) -> Dev {
        let mut c = nanogrid(dir);
        c.args(["dev", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]);
        let mut child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let log = std::sync::Arc::new((std::sync::Mutex::new(String::new()), std::sync::Condvar::new()));
        let (mut stderr, sink) = (child.stderr.take().unwrap(), log.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.0.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
                sink.1.notify_all();
            }
        });
        Dev { child, lines, log }
    }

    /// The first stdout line starting with `prefix`, within `within`.
    fn line(&self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(l) => eprintln!("dev: {l}"),
                Err(_) => panic!("no line {prefix:?} within {within:?}; stderr:\n{}", self.log.0.lock().unwrap()),
            }
        }
    }
}

impl Dev {
    /// Wait until a line of dev's stderr satisfies `found`, within `within`.
    fn log_line(&self, found: impl Fn(&str) -> bool, within: Duration) {
        let (log, more) = &*self.log;
        let (log, waited) = more.wait_timeout_while(log.lock().unwrap(), within, |l| !l.lines().any(&found)).unwrap();
        assert!(!waited.timed_out(), "no such line in dev's stderr within {within:?}:\n{log}");
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn new_build_and_dev_serve_a_project_and_a_saved_edit_keeps_its_kv() {
    let work = tempfile::tempdir().unwrap();
    let out = run({
        let mut c = nanogrid(work.path());
        c.args(["new", "tally", "--template", "kv"]);
        c
    });
    assert!(out.contains("nanogrid build") && out.contains("nanogrid dev"), "new says what to type next: {out}");
    let project = work.path().join("tally");
    for f in ["nanogrid.toml", "Cargo.toml", "src/lib.rs", "README.md", "wit/service.wit", "sdk/src/kv.rs"] {
        assert!(project.join(f).is_file(), "{f} is missing");
    }
    let built = run({
        let mut c = nanogrid(&project);
        c.arg("build");
        c
    });
    assert!(built.starts_with("built tally in ") && built.contains("tally.wasm"), "{built}");

    let dev = Dev::start(&project);
    let admin_line = dev.line("admin API at ", Duration::from_secs(60));
    let first = dev.line("serving tally (generation 1) at ", Duration::from_secs(180));
    let url = first.split(" at ").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    let client = nanogrid::client::Client::new();
    let post = |path: String| {
        let c = &client;
        async move { c.send(http::Method::POST, &path, &[], bytes::Bytes::new()).await.unwrap() }
    };
    post(format!("{url}visits")).await;
    let r = post(format!("{url}visits")).await;
    assert_eq!(r.json().unwrap(), json!({ "key": "visits", "value": 2 }));

    // Scaled through the admin API dev printed: a redeploy keeps the count.
    let admin_url = admin_line.split_whitespace().nth(3).unwrap();
    let token = std::fs::read_to_string(project.join(".nanogrid/dev/admin-token")).unwrap();
    let admin = nanogrid::client::AdminClient::new(admin_url, Some(token.trim().to_string()));
    let scaled = admin.call_json(http::Method::POST, "/v1/services/tally/scale", &json!({ "instances": 3 })).await;
    assert_eq!(scaled.unwrap().status, 200);

    // A one-line change, saved: served after a rebuild and redeploy, and kv carried over.
    let lib = project.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    let edited =
        source.replace(r#"json!({ "key": key, "value": value })"#, r#"json!({ "key": key, "value": value, "v": 2 })"#);
    assert_ne!(edited, source, "the template has the line this test edits");
    let saved = Instant::now();
    std::fs::write(&lib, edited).unwrap();
    // (Generation 2 was the scale.)
    dev.line("serving tally (generation 3) at ", Duration::from_secs(120));
    let took = saved.elapsed();
    let r = client.send(http::Method::GET, &format!("{url}visits"), &[], bytes::Bytes::new()).await.unwrap();
    assert_eq!(r.json().unwrap(), json!({ "key": "visits", "value": 2, "v": 2 }), "new code, same data");
    let spec =
        crate::support::parse::<nanogrid::api::ServiceDetail>(&admin.get("/v1/services/tally").await.unwrap()).spec;
    assert_eq!((spec.instances, spec.generation), (3, 3), "{spec:?}");
    println!("dev: a one-line change served {:.1} s after the save", took.as_secs_f64());
    // The requests' status lines show in dev's output (read from its stderr by a thread
    // of this test's, which may not have read the GET's line yet).
    let want = ["method=GET", "path=/tally/visits", "served status=200"];
    dev.log_line(|l| want.iter().all(|w| l.contains(w)), Duration::from_secs(10));

    // A change that does not compile: the old version keeps serving, and dev says why.
    std::fs::write(&lib, "this is not rust").unwrap();
    dev.line("not deployed: cargo build failed", Duration::from_secs(120));
    let r = client.send(http::Method::GET, &format!("{url}visits"), &[], bytes::Bytes::new()).await.unwrap();
    assert_eq!(r.json().unwrap()["v"], 2);
}

#[tokio::test]
async fn the_http_template_builds_to_a_component_that_serves_unmodified() {
    let work = tempfile::tempdir().unwrap();
    run({
        let mut c = nanogrid(work.path());
        c.args(["new", "web", "--template", "http"]);
        c
    });
    let project = work.path().join("web");
    let built = run({
        let mut c = nanogrid(&project);
        c.arg("build");
        c
    });
    let wasm = built.split(": ").nth(1).unwrap().split(" (").next().unwrap();
    let node = TestNode::start().await;
    let up = node.admin().upload(std::fs::read(project.join(wasm)).unwrap()).await.unwrap();
    let digest = parse::<Uploaded>(&up).digest;
    let r =
        node.admin().call_json(http::Method::PUT, "/v1/services/web", &json!({ "component": digest })).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let svc: nanogrid::api::ServiceAnswer = parse(&r);
    assert_eq!(svc.detail().map(|d| d.component.world.as_str()), Some("wasi:http/proxy"), "{svc:?}");
    assert_eq!(node.get("/web/hi").await.text(), "hello from web! you asked for /hi\n");
}

#[tokio::test]
async fn python_and_js_http_templates_build_to_components_that_serve_unmodified() {
    let _cpu = crate::support::cpu_heavy().await;
    // The toolchains `./dev test` caches (tests/guests-build.sh installs them).
    crate::support::toolchain_wasm("reach-py");
    let work = tempfile::tempdir().unwrap();
    let node = TestNode::start().await;
    for lang in ["python", "js"] {
        let name = format!("web-{lang}");
        run({
            let mut c = nanogrid(work.path());
            c.args(["new", &name, "--lang", lang, "--template", "http"]);
            c
        });
        let project = work.path().join(&name);
        run({
            let mut c = nanogrid(&project);
            c.arg("build");
            c
        });
        let wasm = std::fs::read(project.join(format!("target/{name}.wasm"))).unwrap();
        let up: Uploaded = parse(&node.admin().upload(wasm).await.unwrap());
        assert_eq!(up.component.world, "wasi:http/proxy", "{lang}: {up:?}");
        let spec = json!({ "component": up.digest });
        let r = node.admin().call_json(http::Method::PUT, &format!("/v1/services/{name}"), &spec).await.unwrap();
        assert_eq!(r.status, 201, "{lang}: {}", r.text());
        let r = node.get(&format!("/{name}/hi?x=1")).await;
        assert_eq!(r.status, 200, "{lang}: {}", r.text());
        assert_eq!(r.text(), format!("hello from {name}! you asked for GET /hi?x=1\n"), "{lang}");
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"), "{lang}");
    }
}

#[tokio::test]
async fn python_and_js_projects_go_from_new_to_a_served_counter() {
    let _cpu = crate::support::cpu_heavy().await;
    // The toolchains `./dev test` caches (tests/guests-build.sh installs them).
    crate::support::toolchain_wasm("counter-py");
    let work = tempfile::tempdir().unwrap();
    let node = TestNode::start().await;
    for lang in ["python", "js"] {
        let name = format!("tally-{lang}");
        run({
            let mut c = nanogrid(work.path());
            c.args(["new", &name, "--lang", lang, "--template", "kv"]);
            c
        });
        let project = work.path().join(&name);
        let built = run({
            let mut c = nanogrid(&project);
            c.arg("build");
            c
        });
        assert!(built.starts_with(&format!("built {name} in ")), "{built}");
        let wasm = std::fs::read(project.join(format!("target/{name}.wasm"))).unwrap();
        let up = node.admin().upload(wasm).await.unwrap();
        let spec = json!({ "component": parse::<Uploaded>(&up).digest, "instances": 2 });
        let r = node.admin().call_json(http::Method::PUT, &format!("/v1/services/{name}"), &spec).await.unwrap();
        assert_eq!(r.status, 201, "{lang}: {}", r.text());
        node.post(&format!("/{name}/visits"), "").await;
        let r = node.post(&format!("/{name}/visits"), "").await;
        assert_eq!(r.json().unwrap(), json!({ "key": "visits", "value": 2 }), "{lang}");
        let r = node.request(http::Method::DELETE, &format!("/{name}/visits"), "").await;
        assert_eq!((r.status.as_u16(), r.error_code().as_deref()), (400, Some("invalid")), "{lang}");
    }
}
