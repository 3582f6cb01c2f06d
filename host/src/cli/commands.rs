//! The subcommands: `serve` runs a node; the rest talk to one over HTTP.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};

use super::{ClientArgs, ClusterArgs, DeployArgs, InvokeArgs, NodeArgs, ServeArgs};
use crate::client::{AdminClient, Client, Reply};
use crate::config::FileConfig;
use crate::control::ClusterConfig;
use crate::node::{self, NodeConfig, NodeHandle};
use crate::server::ServerLimits;
use std::time::Duration;

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,wasmtime=warn,cranelift=warn,openraft=warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Flags over file over defaults.
pub fn node_config(
    args: &NodeArgs,
    file: FileConfig,
) -> anyhow::Result<(NodeConfig, std::net::SocketAddr, std::net::SocketAddr)> {
    let d = NodeConfig::default();
    let listen = args.listen.or(file.listen).unwrap_or_else(|| "127.0.0.1:8080".parse().expect("valid"));
    let admin = args.admin_listen.or(file.admin_listen).unwrap_or_else(|| "127.0.0.1:8081".parse().expect("valid"));
    let tracing = tracing_config(args, &file)?;
    let cfg = NodeConfig {
        node_id: args.node_id.clone().or(file.node_id).unwrap_or(d.node_id),
        data_dir: args.data_dir.clone().or(file.data_dir).unwrap_or(d.data_dir),
        compile_cache: args.compile_cache.clone().or(file.compile_cache),
        admin_token: match args.admin_token_file.as_ref().or(file.admin_token_file.as_ref()) {
            Some(path) => Some(read_token(path, "admin")?),
            None => args.admin_token.clone().or(file.admin_token),
        },
        deploy_token: args
            .deploy_token_file
            .as_ref()
            .or(file.deploy_token_file.as_ref())
            .map(|p| read_token(p, "deploy"))
            .transpose()?,
        read_token: args
            .read_token_file
            .as_ref()
            .or(file.read_token_file.as_ref())
            .map(|p| read_token(p, "read"))
            .transpose()?,
        pool_instances: args.pool_instances.or(file.pool_instances).unwrap_or(d.pool_instances),
        max_body_bytes: file.max_body_bytes.unwrap_or(d.max_body_bytes),
        max_upload_bytes: file.max_upload_bytes.unwrap_or(d.max_upload_bytes),
        fuel: args.fuel || file.fuel.unwrap_or(false),
        sync: args.sync.or(file.sync).unwrap_or_default(),
        min_free: args.min_free_mib.or(file.min_free_mib).map_or(d.min_free, |m| m << 20),
        rebuild_store: args.rebuild_store,
        tracing,
        server: ServerLimits {
            max_connections: file.max_connections.unwrap_or(d.server.max_connections),
            header_read_timeout: file
                .header_read_timeout_ms
                .map_or(d.server.header_read_timeout, Duration::from_millis),
            max_headers: file.max_headers.unwrap_or(d.server.max_headers),
            drain_timeout: file.drain_timeout_ms.map_or(d.server.drain_timeout, Duration::from_millis),
            max_connections_per_ip: file.max_connections_per_ip.unwrap_or(d.server.max_connections_per_ip),
            ..d.server
        },
        pace: crate::pace::Pace {
            idle: file.body_idle_timeout_ms.map_or(d.pace.idle, Duration::from_millis),
            min_rate: file.min_body_rate.unwrap_or(d.pace.min_rate),
            grace: file.body_rate_grace_ms.map_or(d.pace.grace, Duration::from_millis),
        },
        extra_ca: if args.extra_ca.is_empty() {
            file.extra_ca.clone().unwrap_or_default()
        } else {
            args.extra_ca.clone()
        },
        resolve: parse_pins(if args.resolve.is_empty() {
            file.resolve.as_deref().unwrap_or_default()
        } else {
            &args.resolve
        })?,
        tls: match (args.tls_cert.clone().or(file.tls_cert), args.tls_key.clone().or(file.tls_key)) {
            (Some(cert), Some(key)) => Some(crate::listener_tls::TlsFiles { cert, key }),
            (None, None) => None,
            _ => {
                bail!("TLS needs both a certificate and a key: give --tls-cert and --tls-key (or tls_cert and tls_key)")
            }
        },
        cluster: None,
    };
    cfg.pace.validate().map_err(anyhow::Error::msg)?;
    Ok((cfg, listen, admin))
}

/// `NAME=IP` pins for guests' outgoing HTTP.
fn parse_pins(pins: &[String]) -> anyhow::Result<std::collections::HashMap<String, std::net::IpAddr>> {
    pins.iter()
        .map(|p| {
            let (name, ip) = p.split_once('=').with_context(|| format!("--resolve {p:?}: use NAME=IP"))?;
            let ip = ip.trim().parse().with_context(|| format!("--resolve {p:?}: {ip:?} is not an IP address"))?;
            Ok((name.trim().to_ascii_lowercase(), ip))
        })
        .collect()
}

/// A token from a file (first line, trimmed): it stays out of `ps` and shell history.
fn read_token(path: &std::path::Path, scope: &str) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading the {scope} token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or_default().trim().to_string();
    if token.len() < 16 {
        bail!(
            "the {scope} token in {} is shorter than 16 characters; use a long random one (e.g. `openssl rand -hex 32`)",
            path.display()
        );
    }
    Ok(token)
}

/// `--reprovision` and the `--experiment-*` settings (flags over the config file).
fn experiment_config(
    args: &ClusterArgs,
    file: &FileConfig,
) -> anyhow::Result<crate::control::experiment::ExperimentConfig> {
    let mut e = crate::control::experiment::ExperimentConfig::default();
    if let Some(mode) = args.reprovision.as_ref().or(file.reprovision.as_ref()) {
        e.mode = mode.parse().map_err(anyhow::Error::msg)?;
    }
    if let Some(ms) = args.experiment_window_ms.or(file.experiment_window_ms) {
        if !(500..=86_400_000).contains(&ms) {
            bail!("--experiment-window-ms {ms} is out of range (500 to 86400000)");
        }
        e.window = Duration::from_millis(ms);
    }
    if let Some(n) = args.experiment_min_samples.or(file.experiment_min_samples) {
        if !(10..=20_000).contains(&n) {
            bail!("--experiment-min-samples {n} is out of range (10 to 20000 calls per arm)");
        }
        e.min_samples = n;
    }
    if let Some(g) = args.experiment_min_gain.or(file.experiment_min_gain) {
        if !(0.0..1.0).contains(&g) {
            bail!("--experiment-min-gain {g} is out of range: a fraction from 0 to below 1 (0.05 = 5 %)");
        }
        e.min_gain = g;
    }
    Ok(e)
}

/// The autoscaling flags over the file's keys, checked.
fn scaling_config(
    args: &ClusterArgs,
    file: &FileConfig,
    voters: usize,
) -> anyhow::Result<crate::control::scaling::ScalingConfig> {
    let mut s = crate::control::scaling::ScalingConfig { min_nodes: voters, ..Default::default() };
    if let Some(ms) = args.autoscale_window_ms.or(file.autoscale_window_ms) {
        if !(100..=600_000).contains(&ms) {
            bail!("--autoscale-window-ms {ms} is out of range (100 to 600000)");
        }
        s.window = Duration::from_millis(ms);
    }
    if let Some(n) = args.node_instances.or(file.node_instances) {
        if !(1..=100_000).contains(&n) {
            bail!("--node-instances {n} is out of range (1 to 100000)");
        }
        s.node_instances = n;
    }
    s.min_nodes = args.min_nodes.or(file.min_nodes).unwrap_or(voters);
    s.max_nodes = args.max_nodes.or(file.max_nodes).unwrap_or(s.max_nodes.max(s.min_nodes));
    if s.min_nodes < 1 || s.max_nodes < s.min_nodes || s.max_nodes > 1000 {
        bail!(
            "--min-nodes {} and --max-nodes {} are not a range: need 1 <= min <= max <= 1000",
            s.min_nodes,
            s.max_nodes
        );
    }
    if let Some(secs) = args.node_idle_s.or(file.node_idle_s) {
        if !(1..=86_400).contains(&secs) {
            bail!("--node-idle-s {secs} is out of range (1 to 86400)");
        }
        s.node_idle = Duration::from_secs(secs);
    }
    s.node_scaler = args.node_scaler.clone().or_else(|| file.node_scaler.clone());
    if let Some(scaler) = &s.node_scaler {
        crate::control::scaling::check_scaler(scaler).map_err(anyhow::Error::msg)?;
    }
    Ok(s)
}

/// Cluster flags over file; `None` (single mode) unless a peer address is given.
pub fn cluster_config(args: &ClusterArgs, file: &FileConfig) -> anyhow::Result<Option<ClusterConfig>> {
    let Some(peer) = args.peer_listen.or(file.peer_listen) else {
        if !args.seeds.is_empty() || args.gossip_listen.is_some() {
            bail!("--seeds and --gossip-listen need --peer-listen: a clustered node must have a peer address");
        }
        return Ok(None);
    };
    let gossip = match args.gossip_listen.or(file.gossip_listen) {
        Some(g) => g,
        None if peer.port() == 0 => std::net::SocketAddr::new(peer.ip(), 0),
        None => {
            std::net::SocketAddr::new(peer.ip(), peer.port().checked_add(1).context("--peer-listen port too high")?)
        }
    };
    let mut c = ClusterConfig::new(peer, gossip);
    c.seeds = if args.seeds.is_empty() { file.seeds.clone().unwrap_or_default() } else { args.seeds.clone() };
    c.seeds.retain(|s| !s.trim().is_empty());
    c.voters = args.voters.or(file.voters).unwrap_or(c.voters);
    if !(1..=7).contains(&c.voters) {
        bail!("--voters {} is out of range: use 3 or 5 (1 to 7 allowed)", c.voters);
    }
    if let Some(ms) = args.gossip_interval_ms.or(file.gossip_interval_ms) {
        if !(10..=5000).contains(&ms) {
            bail!("--gossip-interval-ms {ms} is out of range (10 to 5000)");
        }
        c.gossip_interval = Duration::from_millis(ms);
    }
    if let Some(phi) = args.phi_threshold.or(file.phi_threshold) {
        if !(1.0..=100.0).contains(&phi) {
            bail!("--phi-threshold {phi} is out of range (1 to 100; chitchat's default is 8)");
        }
        c.phi_threshold = phi;
    }
    c.fault_injection = args.fault_injection;
    if let Some(n) = args.raft_snapshot_every {
        if n == 0 {
            bail!("--raft-snapshot-every must be at least 1");
        }
        c.snapshot_every = n;
    }
    c.replication = args.replication.or(file.replication).unwrap_or(c.replication);
    if !(1..=7).contains(&c.replication) {
        bail!("--replication {} is out of range: use 3 (1 to 7 allowed)", c.replication);
    }
    if let Some(n) = args.grid_log_keep {
        if n == 0 {
            bail!("--grid-log-keep must be at least 1");
        }
        c.grid_log_keep = n;
    }
    if let Some(rate) = args.colocate_min_rate.or(file.colocate_min_rate) {
        if !(0.0..=1e9).contains(&rate) {
            bail!("--colocate-min-rate {rate} is out of range: calls per second, 0 (off) or more");
        }
        c.colocate_min_rate = rate;
    }
    if let Some(ms) = args.traffic_window_ms {
        if !(100..=3_600_000).contains(&ms) {
            bail!("--traffic-window-ms {ms} is out of range (100 to 3600000)");
        }
        c.traffic_window = Duration::from_millis(ms);
    }
    c.scaling = scaling_config(args, file, c.voters)?;
    c.experiments = experiment_config(args, file)?;
    c.advertise_host = args.advertise_host.or(file.advertise_host);
    c.cluster_dir = args.cluster_dir.clone().or_else(|| file.cluster_dir.clone()).context(
        "a clustered node needs the cluster's secrets: create them once with `nanogrid cluster init DIR`, \
         issue each node's certificate with `nanogrid cluster add-node ID DIR`, and pass --cluster-dir DIR \
         (or cluster_dir in the config file)",
    )?;
    c.plaintext_peers = args.insecure_plaintext_peers;
    if let Some(ms) = args.gossip_window_ms.or(file.gossip_window_ms) {
        if !(500..=600_000).contains(&ms) {
            bail!("--gossip-window-ms {ms} is out of range (500 to 600000)");
        }
        c.gossip_window = Duration::from_millis(ms);
    }
    Ok(Some(c))
}

/// `nanogrid cluster init DIR`.
pub fn cluster_init(dir: &std::path::Path, nodes: &[String], exists_ok: bool) -> anyhow::Result<ExitCode> {
    use crate::transport::secrets as s;
    if exists_ok && dir.join(s::CA_CERT).exists() {
        let id = std::fs::read_to_string(dir.join(s::CLUSTER_ID)).unwrap_or_default();
        println!("cluster {} already in {}; kept", id.trim(), dir.display());
    } else {
        let id = s::init(dir)?;
        println!("created cluster {id} in {}", dir.display());
        println!("  ca.pem, ca.key     the cluster CA (keep ca.key off the nodes: only add-node needs it)");
        println!("  gossip.key         seals gossip between nodes");
        println!(
            "  admin-token        the admin API's token (export NANOGRID_TOKEN=$(cat {}/admin-token))",
            dir.display()
        );
        if nodes.is_empty() {
            println!(
                "next: nanogrid cluster add-node ID {} for each node, then serve --node-id ID --cluster-dir {}",
                dir.display(),
                dir.display()
            );
        }
    }
    for id in nodes.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        if dir.join("nodes").join(id).join(s::NODE_CERT).exists() {
            println!("node {id} already has a certificate; kept");
        } else {
            let out = s::add_node(dir, id, false)?;
            println!("issued node {id}'s certificate in {}", out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `nanogrid cluster token DIR [--scope S]`.
pub fn cluster_token(dir: &std::path::Path, scope: &str) -> anyhow::Result<ExitCode> {
    use crate::transport::secrets as s;
    let file = match scope {
        "admin" => s::ADMIN_TOKEN,
        "deploy" => s::DEPLOY_TOKEN,
        "read" => s::READ_TOKEN,
        other => bail!("--scope {other:?} is not a token scope; use admin, deploy or read"),
    };
    let path = dir.join(file);
    let token = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {}: is {} a cluster directory?", path.display(), dir.display()))?;
    println!("{}", token.trim());
    Ok(ExitCode::SUCCESS)
}

/// `nanogrid cluster k8s-secret DIR`: the Secret manifest (as `stringData`, so no encoding).
pub fn cluster_k8s_secret(dir: &std::path::Path, name: &str) -> anyhow::Result<ExitCode> {
    use crate::transport::secrets as s;
    crate::transport::secrets::validate_node_id(name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    let mut files: Vec<(String, std::path::PathBuf)> =
        [s::CLUSTER_ID, s::CA_CERT, s::GOSSIP_KEY].iter().map(|f| (f.to_string(), dir.join(f))).collect();
    for f in [s::ADMIN_TOKEN, s::DEPLOY_TOKEN, s::READ_TOKEN] {
        if dir.join(f).exists() {
            files.push((f.to_string(), dir.join(f)));
        }
    }
    let nodes_dir = dir.join("nodes");
    let mut ids: Vec<String> = std::fs::read_dir(&nodes_dir)
        .with_context(|| {
            format!("reading {}: issue node certificates first (`cluster add-node`)", nodes_dir.display())
        })?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    ids.sort();
    for id in &ids {
        for f in [s::NODE_CERT, s::NODE_KEY] {
            files.push((format!("{id}.{f}"), nodes_dir.join(id).join(f)));
        }
    }
    let mut out = format!(
        "# The cluster's secrets for nanogrid nodes {} (no CA key). Made by `nanogrid cluster k8s-secret`.\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\ntype: Opaque\nstringData:\n",
        ids.join(", ")
    );
    for (key, path) in files {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        out.push_str(&format!("  {key}: |\n"));
        for line in text.trim_end().lines() {
            out.push_str(&format!("    {line}\n"));
        }
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// `nanogrid cluster add-node ID DIR`.
pub fn cluster_add_node(id: &str, dir: &std::path::Path, force: bool) -> anyhow::Result<ExitCode> {
    let out = crate::transport::secrets::add_node(dir, id, force)?;
    println!("issued node {id}'s certificate in {}", out.display());
    println!("a node needs: cluster-id, ca.pem, gossip.key, admin-token and nodes/{id}/ (not ca.key)");
    Ok(ExitCode::SUCCESS)
}

async fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!(
            "binding the {what} listener to {addr} (is the port in use? pick another with --{what}-listen or port 0)"
        )
    })
}

/// Bind, start, and print where the node listens.
pub async fn start_node(
    cfg: NodeConfig,
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
) -> anyhow::Result<NodeHandle> {
    let ingress_l = tokio::net::TcpListener::bind(listen).await.with_context(|| {
        format!("binding ingress to {listen} (is the port in use? pick another with --listen, or port 0)")
    })?;
    let admin_l = bind(admin, "admin").await?;
    let explicit_token = cfg.admin_token.is_some();
    let handle = node::start(cfg, ingress_l, admin_l).await?;
    let n = &handle.node;
    let mut out = std::io::stdout().lock();
    match &n.cluster {
        None => {
            let _ = writeln!(out, "nanogrid node {} (mode single)", n.config.node_id);
        }
        Some(c) => {
            let tls = if c.tls.is_some() { "mutual TLS" } else { "cleartext (benchmark mode)" };
            let _ = writeln!(
                out,
                "nanogrid node {} (clustered: cluster {}, peer {} over {tls}, gossip {} sealed)",
                n.config.node_id, c.cluster_id, c.config.peer_listen, c.config.gossip_listen
            );
        }
    }
    let scheme = if n.config.tls.is_some() { "https" } else { "http" };
    let _ = writeln!(out, "ingress listening on {scheme}://{}", n.ingress_addr());
    let _ = writeln!(out, "admin listening on {scheme}://{}", n.admin_addr());
    if let (false, Some(c)) = (explicit_token, &n.cluster) {
        let _ = writeln!(out, "admin token in {}", c.config.cluster_dir.join("admin-token").display());
    } else if !explicit_token {
        let _ = writeln!(out, "admin token in {}", node::token_path(&n.config.data_dir).display());
    }
    let _ = out.flush();
    Ok(handle)
}

pub async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {},
    }
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    node::private_files();
    let file = match &args.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let cluster = cluster_config(&args.cluster, &file)?;
    let (mut cfg, listen, admin) = node_config(&args.node, file)?;
    cfg.cluster = cluster;
    let handle = start_node(cfg, listen, admin).await?;
    wait_for_signal().await;
    tracing::info!("shutting down: draining requests in flight");
    handle.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

pub fn admin_client(args: &ClientArgs) -> AdminClient {
    let token = args.token.clone().or_else(|| {
        let dir = args.data_dir.clone().unwrap_or_else(|| ".nanogrid".into());
        std::fs::read_to_string(node::token_path(&dir)).ok().map(|t| t.trim().to_string())
    });
    AdminClient::new(&args.admin, token)
}

/// Turn an error reply into a readable error.
pub(super) fn check(reply: Reply) -> anyhow::Result<Value> {
    if reply.status.is_success() {
        return reply.json();
    }
    match reply.json().ok().and_then(|v| v.get("error").cloned()) {
        Some(e) => bail!(
            "{} ({}, HTTP {})",
            e["message"].as_str().unwrap_or("?"),
            e["code"].as_str().unwrap_or("?"),
            reply.status.as_u16()
        ),
        None => bail!("HTTP {}: {}", reply.status, reply.text()),
    }
}

pub async fn deploy(args: DeployArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let client = admin_client(&args.client);
    let up = check(client.upload(bytes).await?).with_context(|| format!("uploading {}", args.file.display()))?;
    let digest = up["digest"].as_str().context("upload reply has no digest")?.to_string();
    let mut config = serde_json::Map::new();
    for kv in &args.config {
        let (k, v) = kv.split_once('=').with_context(|| format!("--config {kv:?} is not KEY=VALUE"))?;
        config.insert(k.to_string(), Value::String(v.to_string()));
    }
    let mut bindings = serde_json::Map::new();
    for b in &args.bind {
        let (k, v) = b.split_once('=').with_context(|| format!("--bind {b:?} is not INTERFACE=SERVICE"))?;
        bindings.insert(k.to_string(), Value::String(v.to_string()));
    }
    let mut spec = json!({
        "component": digest, "config": config, "bindings": bindings, "fuse": !args.no_fuse,
        "strict_imports": args.strict_imports,
    });
    match &args.autoscale {
        Some(range) => {
            let (min, max) = range
                .split_once("..")
                .and_then(|(a, b)| Some((a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?)))
                .with_context(|| format!("--autoscale {range:?} is not MIN..MAX (e.g. 0..16)"))?;
            spec["autoscale"] = json!({ "min": min, "max": max });
            if let Some(t) = args.target_busy {
                spec["autoscale"]["target_busy"] = json!(t);
            }
        }
        None => spec["instances"] = json!(args.instances),
    }
    if args.memory_mib.is_some() || args.timeout_ms.is_some() {
        let mut limits = serde_json::Map::new();
        if let Some(m) = args.memory_mib {
            limits.insert("memory_mib".into(), m.into());
        }
        if let Some(t) = args.timeout_ms {
            limits.insert("timeout_ms".into(), t.into());
        }
        spec["limits"] = Value::Object(limits);
    }
    let svc = check(client.call_json(Method::PUT, &format!("/v1/services/{}", args.name), &spec).await?)
        .with_context(|| format!("deploying service {}", args.name))?;
    println!(
        "deployed {} ({}) with {} instance(s), generation {}",
        args.name, digest, svc["spec"]["instances"], svc["spec"]["generation"]
    );
    for d in svc["denied_imports"].as_array().into_iter().flatten() {
        let (import, grant) = (d["import"].as_str().unwrap_or("?"), d["grant"].as_str().unwrap_or("?"));
        println!("denied at use: {import} (no {grant}; every use fails inside the service)");
    }
    if let Some(u) = svc["unresolved"].as_object() {
        println!("not ready yet: {} is unresolved ({})", u["interface"], u["reason"].as_str().unwrap_or(""));
    }
    if let Some(g) = svc["graph"].as_object() {
        let parts: Vec<&str> =
            g["services"].as_array().into_iter().flatten().filter_map(|p| p["service"].as_str()).collect();
        println!("chain ({}): {}", g["mode"].as_str().unwrap_or("?"), parts.join(" <- "));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn scale(client: &ClientArgs, name: &str, instances: i64) -> anyhow::Result<ExitCode> {
    let c = admin_client(client);
    let svc = check(
        c.call_json(Method::POST, &format!("/v1/services/{name}/scale"), &json!({ "instances": instances })).await?,
    )?;
    println!("{name}: {} instance(s)", svc["spec"]["instances"]);
    Ok(ExitCode::SUCCESS)
}

pub async fn ls(client: &ClientArgs) -> anyhow::Result<ExitCode> {
    let c = admin_client(client);
    let list = check(c.get("/v1/services").await?)?;
    let services = list["services"].as_array().cloned().unwrap_or_default();
    if services.is_empty() {
        println!("no services deployed; try `nanogrid deploy FILE.wasm --name NAME`");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<20} {:>9} {:>7} {:>6}  COMPONENT", "NAME", "INSTANCES", "RUNNING", "QUEUED");
    for s in services {
        let digest = s["component"].as_str().unwrap_or("");
        println!(
            "{:<20} {:>9} {:>7} {:>6}  {}",
            s["name"].as_str().unwrap_or("?"),
            s["instances"].as_u64().unwrap_or(0),
            s["running"].as_u64().unwrap_or(0),
            s["queued"].as_u64().unwrap_or(0),
            &digest[..digest.len().min(19)]
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn rm(client: &ClientArgs, name: &str) -> anyhow::Result<ExitCode> {
    let c = admin_client(client);
    check(c.call(Method::DELETE, &format!("/v1/services/{name}"), None, Bytes::new()).await?)?;
    println!("removed {name}");
    Ok(ExitCode::SUCCESS)
}

pub async fn remove_node(client: &ClientArgs, id: &str) -> anyhow::Result<ExitCode> {
    let c = admin_client(client);
    check(c.call(Method::DELETE, &format!("/v1/cluster/nodes/{id}"), None, Bytes::new()).await?)?;
    println!("removed node {id} from the cluster");
    Ok(ExitCode::SUCCESS)
}

/// `nanogrid events [-f]`: one line per decision, oldest first.
pub async fn events(client: &ClientArgs, follow: bool) -> anyhow::Result<ExitCode> {
    let c = admin_client(client);
    let mut after = 0u64;
    loop {
        let list = check(c.get(&format!("/v1/events?after={after}&limit=1000")).await?)?;
        let events = list["events"].as_array().cloned().unwrap_or_default();
        if events.is_empty() && after == 0 && !follow {
            println!("no events yet");
        }
        for e in &events {
            after = after.max(e["seq"].as_u64().unwrap_or(0));
            println!("{}", event_line(e));
        }
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        let _ = std::io::stdout().flush();
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

fn event_line(e: &Value) -> String {
    // The time of day in UTC is enough to read a list of recent events by.
    let day = e["at_ms"].as_u64().unwrap_or(0) / 1000 % 86_400;
    let at = format!("{:02}:{:02}:{:02}Z", day / 3600, day / 60 % 60, day % 60);
    let mut line = format!("{:>5} {at} {:<11}", e["seq"], e["kind"].as_str().unwrap_or("?"));
    for key in ["service", "node"] {
        if let Some(v) = e[key].as_str() {
            line.push_str(&format!(" {key}={v}"));
        }
    }
    if let (Some(a), Some(b)) = (e["from"].as_u64(), e["to"].as_u64()) {
        line.push_str(&format!(" {a}->{b}"));
    }
    line.push_str(&format!(": {}", e["reason"].as_str().unwrap_or("")));
    if let Some(inputs) = e["inputs"].as_object().filter(|m| !m.is_empty()) {
        let shown: Vec<String> = inputs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        line.push_str(&format!(" [{}]", shown.join(" ")));
    }
    line
}

pub async fn barriers(client: &ClientArgs, id: Option<&str>) -> anyhow::Result<ExitCode> {
    let c = admin_client(client);
    let Some(id) = id else {
        let list = check(c.get("/v1/barriers").await?)?;
        let pending = list["pending"].as_array().cloned().unwrap_or_default();
        if pending.is_empty() {
            println!("no barriers running");
        }
        for id in pending {
            println!("{}", id.as_str().unwrap_or("?"));
        }
        return Ok(ExitCode::SUCCESS);
    };
    let b = check(c.get(&format!("/v1/barriers/{id}")).await?)?;
    println!(
        "barrier {id}: {} for service {} (request {}), {} of {} answered, owner {}, takeovers {}",
        b["state"].as_str().unwrap_or("?"),
        b["service"].as_str().unwrap_or("?"),
        b["request_id"].as_str().unwrap_or("?"),
        b["answered"],
        b["calls"].as_array().map_or(0, Vec::len),
        b["owner"].as_str().unwrap_or("?"),
        b["takeovers"]
    );
    if !b["end"].is_null() {
        println!("end: {}", b["end"]);
    }
    println!("{:>4} {:<20} {:<30} {:>8} ANSWER", "CALL", "SERVICE", "PATH", "AFTER_MS");
    let waited = b["waited_on"]["call"].as_u64();
    for (i, call) in b["calls"].as_array().cloned().unwrap_or_default().iter().enumerate() {
        let answer = match (&call["status"], &call["error"]) {
            (s, _) if s.is_u64() => s.to_string(),
            (_, e) if e.is_string() => e.as_str().unwrap_or("?").to_string(),
            _ => "(waiting)".to_string(),
        };
        let mark = if waited == Some(i as u64) { "  <- waited for" } else { "" };
        println!(
            "{:>4} {:<20} {:<30} {:>8} {answer}{mark}",
            i,
            call["service"].as_str().unwrap_or("?"),
            format!("{} {}", call["method"].as_str().unwrap_or("?"), call["path"].as_str().unwrap_or("?")),
            call["after_ms"].as_u64().map_or("-".to_string(), |ms| ms.to_string()),
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn tracing_config(args: &NodeArgs, file: &crate::config::FileConfig) -> anyhow::Result<crate::node::TracingConfig> {
    let d = crate::node::TracingConfig::default();
    let sample = args.trace_sample.or(file.trace_sample).unwrap_or(d.sample);
    if !(0.0..=1.0).contains(&sample) {
        bail!("--trace-sample {sample} is not a share: give a number from 0 (no new traces) to 1 (all)");
    }
    let otlp = args.otlp_endpoint.as_ref().or(file.otlp_endpoint.as_ref());
    Ok(crate::node::TracingConfig {
        sample,
        ring_spans: args.trace_ring.or(file.trace_ring).unwrap_or(d.ring_spans).clamp(1, 1_000_000),
        otlp: otlp.map(|u| crate::trace::otlp::traces_url(u)).transpose().map_err(anyhow::Error::msg)?,
    })
}

/// `nanogrid health [--live]`: one line, exit 0 when the node serves (or answers).
pub async fn health(client: &ClientArgs, live: bool) -> anyhow::Result<ExitCode> {
    let c = admin_client(client);
    let path = if live { "/v1/health/live" } else { "/v1/health" };
    let r = tokio::time::timeout(std::time::Duration::from_secs(5), c.get(path))
        .await
        .map_err(|_| anyhow::anyhow!("{} did not answer {path} within 5 s", client.admin))??;
    let body = r.json().unwrap_or_default();
    println!(
        "{} {} (node {}, mode {})",
        r.status.as_u16(),
        body["status"].as_str().unwrap_or("?"),
        body["node"].as_str().unwrap_or("?"),
        body["mode"].as_str().unwrap_or("?")
    );
    Ok(if r.status.is_success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub async fn status(client: &ClientArgs) -> anyhow::Result<ExitCode> {
    let c = admin_client(client);
    let cluster = check(c.get("/v1/cluster").await?)?;
    let grid = check(c.get("/v1/grid").await?)?;
    println!("leader: {}   term: {}", cluster["leader"].as_str().unwrap_or("none"), cluster["term"]);
    println!(
        "grid: {} partitions, replication {}, {} under-replicated",
        grid["partitions"], grid["replication"], grid["under_replicated"]
    );
    println!("{:<10} {:<11} {:<8} {:<22} {:>5} {:>9} SERVICES", "NODE", "MODE", "ROLE", "ADDRESS", "LOAD", "PRIM/REPL");
    for n in cluster["nodes"].as_array().cloned().unwrap_or_default() {
        let services: Vec<String> = n["services"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect();
        let share = &grid["nodes"][n["id"].as_str().unwrap_or("?")];
        let parts = match (share["primaries"].as_u64(), share["replicas"].as_u64()) {
            (Some(p), Some(r)) => format!("{p}/{r}"),
            _ => "-".to_string(),
        };
        println!(
            "{:<10} {:<11} {:<8} {:<22} {:>5} {:>9} {}",
            n["id"].as_str().unwrap_or("?"),
            n["mode"].as_str().unwrap_or("?"),
            n["role"].as_str().unwrap_or("?"),
            n["addr"].as_str().unwrap_or("-"),
            n["load"].as_u64().map_or("-".to_string(), |l| l.to_string()),
            parts,
            services.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn invoke(args: InvokeArgs) -> anyhow::Result<ExitCode> {
    let body = match &args.data {
        Some(d) if d.starts_with('@') => {
            Bytes::from(std::fs::read(&d[1..]).with_context(|| format!("reading {}", &d[1..]))?)
        }
        Some(d) => Bytes::from(d.clone()),
        None => Bytes::new(),
    };
    let method = match &args.method {
        Some(m) => {
            Method::from_bytes(m.to_uppercase().as_bytes()).with_context(|| format!("{m:?} is not an HTTP method"))?
        }
        None if args.data.is_some() => Method::POST,
        None => Method::GET,
    };
    let mut path = args.path.clone().unwrap_or_else(|| "/".into());
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let mut headers = Vec::new();
    for h in &args.headers {
        let (k, v) = h.split_once(':').with_context(|| format!("header {h:?} is not \"Name: value\""))?;
        headers.push((k.trim(), v.trim().to_string()));
    }
    let url = format!("{}/{}{}", args.ingress.trim_end_matches('/'), args.name, path);
    let reply = Client::new().send(method, &url, &headers, body).await?;
    let mut out = std::io::stdout().lock();
    if args.include {
        writeln!(out, "HTTP {}", reply.status)?;
        for (k, v) in &reply.headers {
            writeln!(out, "{k}: {}", v.to_str().unwrap_or("?"))?;
        }
        writeln!(out)?;
    }
    out.write_all(&reply.body)?;
    if !reply.body.ends_with(b"\n") && !reply.body.is_empty() {
        writeln!(out)?;
    }
    Ok(if reply.status.is_success() { ExitCode::SUCCESS } else { ExitCode::from(22) })
}
