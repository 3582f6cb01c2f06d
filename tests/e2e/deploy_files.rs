//! The deployment files in deploy/: the Kubernetes manifests against the Kubernetes schemas
//! (kubernetes-validate, pinned in `./dev`) and against a real node (the Secret's flat
//! layout loads, the probes' paths answer); the Compose file's nodes agree with each other
//! and its secrets command is idempotent; the systemd unit passes `systemd-analyze verify`
//! with its hardening options.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{TestNode, eventually, repo_root};

fn deploy(path: &str) -> PathBuf {
    repo_root().join("deploy").join(path)
}

fn nanogrid(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nanogrid")).args(args).output().expect("running nanogrid")
}

/// Every document of a YAML file as JSON (PyYAML, which kubernetes-validate brings).
fn yaml_docs(path: &Path) -> Vec<Value> {
    let script = "import sys, json, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))";
    let out = Command::new("python3").args(["-c", script]).arg(path).output().expect("running python3");
    assert!(
        out.status.success(),
        "{} is not YAML (or PyYAML is missing: ./dev test installs it): {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn kubernetes_validate(files: &[&Path]) -> (bool, String) {
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", "1.31.0"])
        .args(files)
        .output()
        .expect("kubernetes-validate is not on PATH: ./dev test installs it (pip install kubernetes-validate==1.31.0)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind} in the manifests"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

#[test]
fn kubernetes_manifests_match_the_schemas_and_each_other() {
    let manifest = deploy("k8s/nanogrid.yaml");
    let (ok, report) = kubernetes_validate(&[&manifest]);
    assert!(ok, "{report}");
    assert!(report.contains("passed for resource statefulset/nanogrid"), "{report}");
    // The validator can fail: a wrong type in a copy is refused.
    let bad = tempfile::NamedTempFile::new().unwrap();
    let text = std::fs::read_to_string(&manifest).unwrap().replace("replicas: 3", "replicas: three");
    std::fs::write(bad.path(), text).unwrap();
    let (ok, report) = kubernetes_validate(&[bad.path()]);
    assert!(!ok && report.contains("spec.replicas"), "{report}");

    let docs = yaml_docs(&manifest);
    let sts = kind(&docs, "StatefulSet");
    let spec = &sts["spec"];
    assert_eq!(spec["podManagementPolicy"], "Parallel", "a node is ready only once a majority formed");
    let pod = &spec["template"]["spec"];
    let c = &pod["containers"][0];
    let args = strings(&c["args"]);
    let arg = |name: &str| args.iter().find_map(|a| a.strip_prefix(&format!("--{name}="))).map(str::to_string);
    assert_eq!(arg("node-id").as_deref(), Some("$(POD_NAME)"), "node ids are pod names");
    assert_eq!(arg("advertise-host").as_deref(), Some("$(POD_IP)"));
    let headless = spec["serviceName"].as_str().unwrap();
    let peers = docs.iter().find(|d| d["kind"] == "Service" && d["metadata"]["name"] == headless).unwrap();
    assert_eq!(peers["spec"]["clusterIP"], "None");
    assert_eq!(peers["spec"]["publishNotReadyAddresses"], true, "peers find each other before they are ready");
    let replicas = spec["replicas"].as_u64().unwrap();
    let seeds = arg("seeds").unwrap();
    for i in 0..replicas {
        assert!(seeds.contains(&format!("nanogrid-{i}.{headless}:7946")), "seed {i} missing in {seeds}");
    }
    // The scaler patches this StatefulSet, which the Role allows and nothing more.
    let sts_name = sts["metadata"]["name"].as_str().unwrap();
    assert_eq!(arg("node-scaler"), Some(format!("kubernetes:statefulset/{sts_name}")));
    let rule = &kind(&docs, "Role")["rules"][0];
    assert_eq!(strings(&rule["resources"]), ["statefulsets/scale"]);
    assert_eq!(strings(&rule["resourceNames"]), [sts_name]);
    assert_eq!(pod["serviceAccountName"], kind(&docs, "ServiceAccount")["metadata"]["name"]);
    // Disruptions keep a majority of the voters.
    let pdb = &kind(&docs, "PodDisruptionBudget")["spec"];
    let down = pdb["maxUnavailable"].as_u64().unwrap();
    assert!(replicas - down > replicas / 2, "{replicas} replicas, {down} may be down");
    assert!(c["resources"]["requests"]["cpu"].is_string() && c["resources"]["requests"]["memory"].is_string());
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/v1/health");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/v1/health/live");
    // Every flag the pod passes is one `nanogrid serve` knows.
    let help = String::from_utf8(nanogrid(&["serve", "--help"]).stdout).unwrap();
    for a in args.iter().skip(1) {
        let flag = a.split('=').next().unwrap();
        assert!(help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")), "serve has no {flag}");
    }
}

/// The Secret `cluster k8s-secret` prints validates, mounts as one flat folder, and a node
/// with a pod's name starts from it; the pod's probes answer as the manifest expects.
#[tokio::test]
async fn the_kubernetes_secret_loads_as_a_pod_mounts_it_and_the_probes_answer() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster");
    let c = cluster.to_str().unwrap();
    let out = nanogrid(&["cluster", "init", c, "--nodes", "nanogrid-0,nanogrid-1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = nanogrid(&["cluster", "k8s-secret", c]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let secret_file = dir.path().join("secret.yaml");
    std::fs::write(&secret_file, &out.stdout).unwrap();
    let (ok, report) = kubernetes_validate(&[&secret_file]);
    assert!(ok, "{report}");
    let secret = &yaml_docs(&secret_file)[0];
    let data = secret["stringData"].as_object().unwrap();
    assert!(!data.contains_key("ca.key"), "the CA key never goes to the nodes");
    for key in ["cluster-id", "ca.pem", "gossip.key", "admin-token", "nanogrid-1.node.pem", "nanogrid-1.node.key"] {
        assert!(data.contains_key(key), "{key} missing from the Secret");
    }
    // As the kubelet mounts it: one file per key.
    let mounted = dir.path().join("mounted");
    std::fs::create_dir(&mounted).unwrap();
    for (k, v) in data {
        std::fs::write(mounted.join(k), v.as_str().unwrap()).unwrap();
    }
    let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let gossip = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (peer, gossip) = (peer.to_string(), gossip.to_string());
    let args = [
        "--node-id",
        "nanogrid-1",
        "--cluster-dir",
        mounted.to_str().unwrap(),
        "--peer-listen",
        &peer,
        "--gossip-listen",
        &gossip,
        "--voters",
        "1",
    ];
    let node = TestNode::start_with_args(true, &args).await;
    // Readiness: 200 once the node serves; liveness: 200 whatever the mode.
    let live = node.admin().get("/v1/health/live").await.unwrap();
    assert_eq!(live.status, 200, "{}", live.text());
    assert_eq!(crate::support::parse::<nanogrid::api::Health>(&live).node, "nanogrid-1");
    eventually("the node is ready", Duration::from_secs(30), || async {
        (node.admin().get("/v1/health").await.ok()?.status == 200).then_some(())
    })
    .await;
    let ready = node.cli(&["health"]);
    assert!(ready.status.success(), "{}", String::from_utf8_lossy(&ready.stdout));
    assert!(String::from_utf8_lossy(&ready.stdout).starts_with("200 ok (node nanogrid-1"));
}

#[test]
fn the_compose_file_starts_three_nodes_that_agree() {
    let compose = yaml_docs(&deploy("compose.yaml")).remove(0);
    let services = compose["services"].as_object().unwrap();
    let subnet = compose["networks"]["grid"]["ipam"]["config"][0]["subnet"].as_str().unwrap();
    let prefix = subnet.rsplit_once('.').unwrap().0;
    let init = strings(&services["secrets"]["command"]);
    let ids: Vec<String> =
        init[init.iter().position(|a| a == "--nodes").unwrap() + 1].split(',').map(String::from).collect();
    assert_eq!(ids, ["n1", "n2", "n3"]);
    for id in &ids {
        let s = &services[id.as_str()];
        let args = strings(&s["command"]);
        let arg = |name: &str| args.iter().find_map(|a| a.strip_prefix(&format!("--{name}="))).map(str::to_string);
        assert_eq!(arg("node-id").as_deref(), Some(id.as_str()));
        let ip = s["networks"]["grid"]["ipv4_address"].as_str().unwrap();
        assert!(ip.starts_with(prefix), "{ip} is in {subnet}");
        assert_eq!(arg("advertise-host").as_deref(), Some(ip), "{id} advertises its own address");
        let seeds = arg("seeds").unwrap();
        assert!(ids.iter().all(|n| seeds.contains(&format!("{n}:7946"))), "{seeds}");
        let volumes = strings(&s["volumes"]);
        assert!(volumes.contains(&format!("cluster:{}:ro", arg("cluster-dir").unwrap())), "{volumes:?}");
        assert!(s["depends_on"]["secrets"]["condition"] == "service_completed_successfully");
        let ports = strings(&s["ports"]);
        assert!(
            ports.iter().any(|p| p.starts_with("127.0.0.1:") && p.ends_with(":8081")),
            "admin on loopback: {ports:?}"
        );
    }
    // The secrets command runs at every `up`: the second run keeps what the first made.
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("c");
    let mut args: Vec<String> = init.clone();
    let at = args.iter().position(|a| a == "init").unwrap() + 1;
    args[at] = cluster.to_str().unwrap().to_string();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(nanogrid(&args).status.success());
    let first = std::fs::read(cluster.join("nodes/n2/node.pem")).unwrap();
    let again = nanogrid(&args);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stdout).contains("already in"));
    assert_eq!(std::fs::read(cluster.join("nodes/n2/node.pem")).unwrap(), first, "certificates are kept");
    let token = nanogrid(&["cluster", "token", cluster.to_str().unwrap()]);
    assert_eq!(
        String::from_utf8_lossy(&token.stdout).trim(),
        std::fs::read_to_string(cluster.join("admin-token")).unwrap().trim()
    );
    let bad = nanogrid(&["cluster", "token", cluster.to_str().unwrap(), "--scope", "root"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("use admin, deploy or read"));
}

#[test]
fn the_systemd_unit_verifies_with_its_hardening() {
    let unit = std::fs::read_to_string(deploy("nanogrid.service")).unwrap();
    for option in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "CapabilityBoundingSet=\n",
        "RestrictNamespaces=yes",
        "SystemCallFilter=@system-service",
        "DynamicUser=yes",
    ] {
        assert!(unit.contains(option), "the unit lacks {option:?}");
    }
    assert!(!unit.contains("\nMemoryDenyWriteExecute=yes"), "wasmtime maps compiled code executable");
    let Ok(which) = Command::new("systemd-analyze").arg("--version").output() else {
        panic!("systemd-analyze is missing: ./dev test installs Debian's systemd package");
    };
    assert!(which.status.success());
    // The unit as installed, but pointing at the binary this test built.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nanogrid.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/nanogrid", env!("CARGO_BIN_EXE_nanogrid"))).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.trim().is_empty(), "systemd-analyze verify: {text}");
    // It can fail: a misspelt option is reported.
    std::fs::write(&path, unit.replace("ProtectSystem=strict", "ProtectSystem=strikt")).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("protect system"), "a bad value is reported");
}
