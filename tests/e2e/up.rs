//! `nanogrid up`, the README's first command, and `serve --config FILE`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use nanogrid::client::Client;
use serde_json::json;

use crate::support::{TestNode, assert_error, repo_root, wasm_dir};

#[tokio::test]
async fn up_starts_a_node_with_every_sample_deployed() {
    wasm_dir(); // built samples; `up --no-build` uses them
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nanogrid"))
        .args(["up", "--no-build", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--samples"])
        .arg(repo_root().join("samples"))
        .arg("--data-dir")
        .arg(data.path())
        .env_remove("NANOGRID_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut ingress = String::new();
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(a) = line.strip_prefix("ingress listening on ") {
                ingress = a.to_string();
            }
            lines.push(line.clone());
            if line.starts_with("Press Ctrl-C") {
                let _ = tx.send((ingress.clone(), lines.join("\n")));
            }
        }
    });
    let (ingress, printed) = rx.recv_timeout(Duration::from_secs(120)).expect("`nanogrid up` became ready");
    assert!(printed.contains("curl") && printed.contains("/hello/"), "{printed}");
    let token = data.path().join("admin-token");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token).expect("a token was created").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the owner may read the token");
    assert_eq!(std::fs::read_to_string(&token).unwrap().trim().len(), 64, "256 random bits, hex");

    let c = Client::new();
    let r = c.send(Method::GET, &format!("{ingress}/hello/world?name=Ada"), &[], Bytes::new()).await.unwrap();
    assert_eq!(r.text(), "hello, Ada! you asked for GET /world?name=Ada\n");
    let r = c.send(Method::POST, &format!("{ingress}/gateway/"), &[], Bytes::from("a b a")).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json().unwrap()["stats"]["unique"], 2);
    let r = c.send(Method::POST, &format!("{ingress}/counter/x"), &[], Bytes::new()).await.unwrap();
    assert_eq!(r.json().unwrap()["value"], 1);
    let r = c.send(Method::GET, &format!("{ingress}/http-hello/x"), &[], Bytes::new()).await.unwrap();
    assert_eq!(r.text(), "hello from wasi:http! you asked for GET /x\n");
    let r = c.send(Method::GET, &format!("{ingress}/http-stream/16"), &[], Bytes::new()).await.unwrap();
    assert_eq!(r.body.len(), 16 << 20, "the printed hint works");
    let r = c.send(Method::GET, &format!("{ingress}/http3-stream/16"), &[], Bytes::new()).await.unwrap();
    assert_eq!(r.body.len(), 16 << 20, "the WASI 0.3 sample streams too");
    let r =
        c.send(Method::POST, &format!("{ingress}/text-stats/"), &[], Bytes::from("The cat, the HAT")).await.unwrap();
    assert_eq!(r.json().unwrap()["top"][0], json!({"word": "the", "count": 2}));
    let r = c.send(Method::POST, &format!("{ingress}/chain-1/"), &[], Bytes::from("in")).await.unwrap();
    assert_eq!(r.json().unwrap()["stage-5"], "ok");
    let r = c.send(Method::POST, &format!("{ingress}/jobs/"), &[], Bytes::from("one line\ntwo lines")).await.unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let job = format!("{ingress}/jobs/{}", r.json().unwrap()["job"].as_str().unwrap());
    let done = crate::support::eventually("the jobs sample's barrier resumes it", Duration::from_secs(20), || async {
        let r = c.send(Method::GET, &job, &[], Bytes::new()).await.ok()?;
        (r.status == 200).then(|| r.json().unwrap())
    })
    .await;
    assert_eq!((done["words"].as_u64(), done["lines"].as_u64()), (Some(4), Some(2)), "{done}");

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success(), "up exits cleanly on SIGTERM");
}

#[tokio::test]
async fn cli_deploys_every_sample() {
    let node = TestNode::start().await;
    for name in ["hello", "counter", "wordcount", "gateway"] {
        let file = wasm_dir().join(format!("{name}.wasm"));
        let out = node.cli(&["deploy", file.to_str().unwrap(), "--name", name, "--instances", "3"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // Typed imports from the CLI: --bind and --no-fuse; the provider comes last.
    let file = |n: &str| wasm_dir().join(format!("{n}.wasm")).to_str().unwrap().to_string();
    let out =
        node.cli(&["deploy", &file("text_stats"), "--name", "stats", "--no-fuse", "--bind", "acme:text/tokenize=tok"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("not ready yet"), "{text}");
    let out = node.cli(&["deploy", &file("text_tokenize"), "--name", "tok"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = node.cli(&["deploy", &file("text_normalize"), "--name", "norm"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = node.cli(&["invoke", "stats", "/", "-d", "b a b"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["top"][0], json!({"word": "b", "count": 2}));
    assert_eq!(node.service("stats").await.graph.map(|g| g.mode), Some(nanogrid::api::ChainMode::Linked));
    let out = node.cli(&["deploy", &file("text_stats"), "--name", "stats", "--bind", "nonsense"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("INTERFACE=SERVICE"));

    let out = node.cli(&["invoke", "gateway", "/", "-d", "to be or not to be"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["stats"]["words"], 6);
    assert_eq!(v["documents"], 1);
    let out = node.cli(&["invoke", "wordcount", "/?top=1", "-d", r#"{"text":"b a b"}"#, "-i"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP 200 OK") && text.contains("x-request-id: "), "{text}");
    assert!(text.contains(r#""top":[["b",2]]"#), "{text}");
    let ls = String::from_utf8_lossy(&node.cli(&["ls"]).stdout).into_owned();
    for name in ["hello", "counter", "wordcount", "gateway"] {
        assert!(ls.contains(name), "{ls}");
    }
}

#[tokio::test]
async fn serve_reads_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(&file, "node_id = \"from-file\"\nmax_body_bytes = 1024\n").unwrap();
    let node = TestNode::start_with_args(true, &["--config", file.to_str().unwrap()]).await;
    let health: nanogrid::api::Health = crate::support::parse(&node.admin().get("/v1/health").await.unwrap());
    assert_eq!(health.node, "from-file");
    node.deploy("hello", "hello", json!({})).await;
    assert_error(&node.post("/hello/", &"x".repeat(2048)).await, 413, "payload-too-large");
    assert_eq!(node.post("/hello/", "small").await.status, 200);

    // A typo in the file is refused with the key named.
    std::fs::write(&file, "nod_id = \"x\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nanogrid"))
        .args(["serve", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nod_id") && err.contains("node.toml"), "{err}");
}
