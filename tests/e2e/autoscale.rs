//! Autoscaling on a single node (issue 16): the spec's checks, the refusal of a manual
//! scale, scale to zero and back; and the Kubernetes and Compose node scalers' commands
//! (run against stand-ins for kubectl and docker that record their arguments).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{TestNode, assert_error, eventually, repo_root};

async fn count(node: &TestNode, name: &str) -> u64 {
    node.service(name).await.spec.instances.into()
}

#[tokio::test]
async fn a_single_node_autoscales_to_zero_and_a_request_wakes_the_service() {
    let node = TestNode::start().await;
    // Bad specs are refused, naming the field and the fix.
    let r = node.try_deploy("a", "hello", json!({ "instances": 2, "autoscale": { "max": 4 } })).await;
    assert!(assert_error(&r, 400, "bad-request").message.contains("exclusive"));
    let r = node.try_deploy("a", "hello", json!({ "autoscale": { "min": 5, "max": 4 } })).await;
    assert!(r.text().contains("autoscale.min (5) is above autoscale.max (4)"), "{}", r.text());
    let r = node.try_deploy("a", "hello", json!({ "autoscale": { "max": 4, "target_busy": 0 } })).await;
    assert!(r.text().contains("autoscale.target_busy"), "{}", r.text());

    node.deploy("hello", "hello", json!({ "autoscale": { "min": 0, "max": 4, "cooldown_s": 1 } })).await;
    assert_eq!(count(&node, "hello").await, 1, "starts at max(min, 1)");
    let scale = json!({ "instances": 3 });
    let r = node.admin().call_json(http::Method::POST, "/v1/services/hello/scale", &scale).await.unwrap();
    let e = assert_error(&r, 409, "autoscaled");
    assert!(e.message.as_str().contains("0..=4"), "{e}");
    assert_eq!(node.get("/hello/").await.status, 200);

    // Idle: zero after the cool-down; the next request wakes it and is answered.
    let idle = Instant::now();
    eventually("hello is at zero", Duration::from_secs(20), || async {
        (count(&node, "hello").await == 0).then_some(())
    })
    .await;
    assert!(idle.elapsed() >= Duration::from_secs(1), "not before the cool-down");
    assert_eq!(node.service("hello").await.status.local.instances, 0);
    let r = node.get("/hello/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().starts_with("hello"), "{}", r.text());
    assert_eq!(count(&node, "hello").await, 1);
    assert_eq!(node.service("hello").await.status.local.instances, 1);
}

/// A stand-in for a CLI that writes its arguments to a file.
fn recorder(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let bin = dir.join(name);
    let out = dir.join(format!("{name}.args"));
    std::fs::write(&bin, format!("#!/bin/sh\necho \"$@\" > {}\n", out.display())).unwrap();
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (bin, out)
}

fn run_scaler(name: &str, args: &[&str], env: &[(&str, &std::path::Path)]) -> std::process::Output {
    use std::io::Write as _;
    let mut cmd = std::process::Command::new(repo_root().join("deploy/scalers").join(name));
    cmd.args(args).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    cmd.stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let req = r#"{"want": 5, "have": ["n1", "n2", "n3", "n4"], "remove": [], "reason": "test"}"#;
    // A scaler that refuses its arguments exits before it reads the request: the pipe may
    // be closed by then (that race failed CI once).
    match child.stdin.take().unwrap().write_all(req.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("writing to the {name} scaler: {e}"),
        _ => {}
    }
    child.wait_with_output().unwrap()
}

#[test]
fn the_kubernetes_and_compose_scalers_ask_for_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let (kubectl, kargs) = recorder(dir.path(), "kubectl");
    let ns = std::path::Path::new("prod");
    let out = run_scaler("kubernetes", &["want-nodes", "5"], &[("KUBECTL", &kubectl), ("NANOGRID_NAMESPACE", ns)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let args = std::fs::read_to_string(&kargs).unwrap();
    assert_eq!(
        args.trim(),
        r#"--namespace prod patch statefulset nanogrid --type merge --patch {"spec":{"replicas":5}}"#
    );

    let (docker, dargs) = recorder(dir.path(), "docker");
    let file = dir.path().join("compose.yaml");
    let out = run_scaler("compose", &["want-nodes", "5"], &[("DOCKER", &docker), ("NANOGRID_COMPOSE_FILE", &file)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let args = std::fs::read_to_string(&dargs).unwrap();
    let want = format!(
        "compose --file {} --project-name nanogrid up --detach --no-recreate --scale node=5 node",
        file.display()
    );
    assert_eq!(args.trim(), want);

    // A wrong call says how to call it, and exits 2 without running anything.
    std::fs::remove_file(&kargs).unwrap();
    let out = run_scaler("kubernetes", &["want-nodes", "many"], &[("KUBECTL", &kubectl)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"));
    assert!(!kargs.exists());
}
