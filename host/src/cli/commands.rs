//! The subcommands: `serve` runs a node; the rest talk to one over HTTP.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};

use super::node_config::{cluster_config, node_config};
use super::{ClientArgs, DeployArgs, InvokeArgs, ServeArgs};
use crate::api::{BarrierList, BarrierReport, ChainMode, ServiceAnswer};
use crate::boot::{self, NodeHandle};
use crate::client::{AdminClient, Client, Reply};
use crate::config::FileConfig;
use crate::node::NodeConfig;

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,wasmtime=warn,cranelift=warn,openraft=warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
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
    let handle = boot::start(cfg, ingress_l, admin_l).await?;
    let n = &handle.node;
    let mut out = std::io::stdout().lock();
    match &n.cluster {
        None => {
            let _ = writeln!(out, "nanogrid node {} (mode single)", n.config.node_id);
        }
        Some(c) => {
            let tls = if c.security.tls.is_some() { "mutual TLS" } else { "cleartext (benchmark mode)" };
            let _ = writeln!(
                out,
                "nanogrid node {} (clustered: cluster {}, peer {} over {tls}, gossip {} sealed)",
                n.config.node_id, c.security.cluster_id, c.config.peer_listen, c.config.gossip_listen
            );
        }
    }
    let scheme = if n.config.tls.is_some() { "https" } else { "http" };
    let _ = writeln!(out, "ingress listening on {scheme}://{}", n.ingress_addr());
    let _ = writeln!(out, "admin listening on {scheme}://{}", n.admin_addr());
    if let (false, Some(c)) = (explicit_token, &n.cluster) {
        let _ = writeln!(out, "admin token in {}", c.config.cluster_dir.join("admin-token").display());
    } else if !explicit_token {
        let _ = writeln!(out, "admin token in {}", boot::token_path(&n.config.data_dir).display());
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
    boot::private_files();
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
        std::fs::read_to_string(boot::token_path(&dir)).ok().map(|t| t.trim().to_string())
    });
    AdminClient::new(&args.admin, token)
}

/// Turn an error reply into a readable error.
pub(super) fn check(reply: Reply) -> anyhow::Result<Value> {
    if reply.status.is_success() {
        return reply.json();
    }
    match reply.error() {
        Some(e) => bail!("{} ({}, HTTP {})", e.message, e.code, reply.status.as_u16()),
        None => bail!("HTTP {}: {}", reply.status, reply.text()),
    }
}

pub async fn deploy(args: DeployArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let client = admin_client(&args.client);
    let up = check(client.upload(bytes).await?).with_context(|| format!("uploading {}", args.file.display()))?;
    let digest = serde_json::from_value::<crate::api::Uploaded>(up).context("reading the upload's answer")?.digest;
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
    if let Some(n) = args.reuse {
        spec["reuse"] = json!({ "requests": n });
    }
    // Sent only when set: a node older than the field refuses a request that names it.
    if args.idempotent {
        spec["idempotent"] = json!(true);
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
    let svc: ServiceAnswer = serde_json::from_value(check(
        client.call_json(Method::PUT, &format!("/v1/services/{}", args.name), &spec).await?,
    )?)
    .with_context(|| format!("deploying service {}", args.name))?;
    let spec = svc.spec();
    println!("deployed {} ({}) with {} instance(s), generation {}", args.name, digest, spec.instances, spec.generation);
    for d in svc.denied_imports() {
        println!("denied at use: {} (no {}; every use fails inside the service)", d.import, d.grant);
    }
    if let Some(u) = svc.detail().and_then(|d| d.unresolved.as_ref()) {
        println!("not ready yet: {:?} is unresolved ({})", u.interface, u.reason);
    }
    if let Some(g) = svc.detail().and_then(|d| d.graph.as_ref()) {
        let parts: Vec<&str> = g.services.iter().map(|p| p.service.as_str()).collect();
        let mode = match g.mode {
            ChainMode::Fused => "fused",
            ChainMode::Linked => "linked",
        };
        println!("chain ({mode}): {}", parts.join(" <- "));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn scale(client: &ClientArgs, name: &str, instances: i64) -> anyhow::Result<ExitCode> {
    let c = admin_client(client);
    let svc: ServiceAnswer = serde_json::from_value(check(
        c.call_json(Method::POST, &format!("/v1/services/{name}/scale"), &json!({ "instances": instances })).await?,
    )?)?;
    println!("{name}: {} instance(s)", svc.spec().instances);
    Ok(ExitCode::SUCCESS)
}

pub async fn ls(client: &ClientArgs) -> anyhow::Result<ExitCode> {
    let c = admin_client(client);
    let list: crate::api::ServiceList = serde_json::from_value(check(c.get("/v1/services").await?)?)?;
    if list.services.is_empty() {
        println!("no services deployed; try `nanogrid deploy FILE.wasm --name NAME`");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<20} {:>9} {:>7} {:>6}  {:<9}  COMPONENT", "NAME", "INSTANCES", "RUNNING", "QUEUED", "CODE");
    for s in list.services {
        let code = match s.code {
            Some(crate::runtime::Tier::Optimized) => "optimized",
            Some(crate::runtime::Tier::Baseline) => "baseline",
            None => "-",
        };
        println!(
            "{:<20} {:>9} {:>7} {:>6}  {:<9}  {}",
            s.name,
            s.instances,
            s.running,
            s.queued,
            code,
            &s.component[..s.component.len().min(19)]
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
        let path = format!("/v1/events?after={after}&limit=1000");
        let list: crate::api::EventList = serde_json::from_value(check(c.get(&path).await?)?)?;
        if list.events.is_empty() && after == 0 && !follow {
            println!("no events yet");
        }
        for e in &list.events {
            after = after.max(e.seq);
            println!("{}", event_line(e));
        }
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        let _ = std::io::stdout().flush();
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

fn event_line(e: &crate::control::events::Event) -> String {
    // The time of day in UTC is enough to read a list of recent events by.
    let day = e.at_ms / 1000 % 86_400;
    let at = format!("{:02}:{:02}:{:02}Z", day / 3600, day / 60 % 60, day % 60);
    let mut line = format!("{:>5} {at} {:<11}", e.seq, e.kind.as_str());
    for (key, v) in [("service", &e.service), ("node", &e.node)] {
        if let Some(v) = v {
            line.push_str(&format!(" {key}={v}"));
        }
    }
    if let (Some(a), Some(b)) = (e.from, e.to) {
        line.push_str(&format!(" {a}->{b}"));
    }
    line.push_str(&format!(": {}", e.reason));
    if !e.inputs.is_empty() {
        let shown: Vec<String> = e.inputs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        line.push_str(&format!(" [{}]", shown.join(" ")));
    }
    line
}

pub async fn barriers(client: &ClientArgs, id: Option<&str>) -> anyhow::Result<ExitCode> {
    let c = admin_client(client);
    let Some(id) = id else {
        let list: BarrierList = serde_json::from_value(check(c.get("/v1/barriers").await?)?)?;
        if list.pending.is_empty() {
            println!("no barriers running");
        }
        for id in list.pending {
            println!("{id}");
        }
        return Ok(ExitCode::SUCCESS);
    };
    let b: BarrierReport = serde_json::from_value(check(c.get(&format!("/v1/barriers/{id}")).await?)?)?;
    println!(
        "barrier {id}: {} for service {} (request {}), {} of {} answered, owner {}, takeovers {}",
        b.state.as_str(),
        b.service,
        b.request_id,
        b.answered,
        b.calls.len(),
        b.owner,
        b.takeovers
    );
    if let Some(end) = &b.end {
        println!("end: {}", serde_json::to_string(end)?);
    }
    println!("{:>4} {:<20} {:<30} {:>8} ANSWER", "CALL", "SERVICE", "PATH", "AFTER_MS");
    let waited = b.waited_on.as_ref().map(|w| w.call);
    for (i, call) in b.calls.iter().enumerate() {
        let answer = match (call.status, &call.error) {
            (Some(s), _) => s.to_string(),
            (None, Some(e)) => e.clone(),
            _ => "(waiting)".to_string(),
        };
        let mark = if waited == Some(i) { "  <- waited for" } else { "" };
        println!(
            "{:>4} {:<20} {:<30} {:>8} {answer}{mark}",
            i,
            call.service,
            format!("{} {}", call.method, call.path),
            call.after_ms.map_or("-".to_string(), |ms| ms.to_string()),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `nanogrid health [--live]`: one line, exit 0 when the node serves (or answers).
pub async fn health(client: &ClientArgs, live: bool) -> anyhow::Result<ExitCode> {
    let c = admin_client(client);
    let path = if live { "/v1/health/live" } else { "/v1/health" };
    let r = tokio::time::timeout(std::time::Duration::from_secs(5), c.get(path))
        .await
        .map_err(|_| anyhow::anyhow!("{} did not answer {path} within 5 s", client.admin))??;
    match serde_json::from_slice::<crate::api::Health>(&r.body) {
        Ok(h) => println!("{} {} (node {}, mode {})", r.status.as_u16(), h.status, h.node, h.mode),
        Err(_) => println!("{} (not a health answer: {})", r.status.as_u16(), r.text()),
    }
    Ok(if r.status.is_success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub async fn status(client: &ClientArgs) -> anyhow::Result<ExitCode> {
    let c = admin_client(client);
    let cluster: crate::api::ClusterView = serde_json::from_value(check(c.get("/v1/cluster").await?)?)
        .context("GET /v1/cluster answered something else than a cluster view")?;
    let grid: crate::api::GridView = serde_json::from_value(check(c.get("/v1/grid").await?)?)
        .context("GET /v1/grid answered something else than a grid view")?;
    println!(
        "leader: {}   term: {}   formation: {}",
        cluster.leader.as_deref().unwrap_or("none"),
        cluster.term,
        cluster.formation.as_deref().unwrap_or("none")
    );
    println!(
        "grid: {} partitions, replication {}, {} under-replicated",
        grid.partitions, grid.replication, grid.under_replicated
    );
    println!(
        "{:<10} {:<11} {:<8} {:<22} {:<9} {:>5} {:>9} SERVICES",
        "NODE", "MODE", "ROLE", "ADDRESS", "RELEASE", "LOAD", "PRIM/REPL"
    );
    for n in &cluster.nodes {
        let parts = grid.nodes.get(&n.id).map_or("-".to_string(), |s| format!("{}/{}", s.primaries, s.replicas));
        println!(
            "{:<10} {:<11} {:<8} {:<22} {:<9} {:>5} {:>9} {}",
            n.id,
            n.mode,
            n.role.as_str(),
            n.addr.as_deref().unwrap_or("-"),
            n.release.as_deref().unwrap_or("-"),
            n.load.map_or("-".to_string(), |l| l.to_string()),
            parts,
            n.services.join(", ")
        );
    }
    if let Some(why) = &cluster.out_of_touch {
        println!("warning: {} is dormant: {why}", cluster.node);
    }
    let foreign: Vec<&str> =
        cluster.nodes.iter().filter(|n| n.role == crate::api::Role::Foreign).map(|n| n.id.as_str()).collect();
    if !foreign.is_empty() {
        println!(
            "warning: nodes of another cluster: {} (the nodes formed a cluster more than once and the parts do \
             not merge; keep one part, and stop, empty the --data-dir of and restart each node of the other: the \
             node's log says more)",
            foreign.join(", ")
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
