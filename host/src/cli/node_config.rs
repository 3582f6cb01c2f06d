//! A node's configuration from its flags, over its config file, over the defaults:
//! `serve`, `up` and `dev` all build theirs here.

use anyhow::{Context as _, bail};

use super::{ClusterArgs, NodeArgs};
use crate::config::FileConfig;
use crate::control::ClusterConfig;
use crate::node::NodeConfig;
use crate::server::ServerLimits;
use std::time::Duration;

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
        partitions: match args.partitions.or(file.partitions).unwrap_or(d.partitions) {
            n @ 1..=crate::grid::part::MAX_PARTITIONS => n,
            n => {
                bail!("--partitions {n} is out of range: use 256 (1 to {} allowed)", crate::grid::part::MAX_PARTITIONS)
            }
        },
        max_body_bytes: file.max_body_bytes.unwrap_or(d.max_body_bytes),
        max_upload_bytes: file.max_upload_bytes.unwrap_or(d.max_upload_bytes),
        fuel: args.fuel || file.fuel.unwrap_or(false),
        compile: args.compile.or(file.compile).unwrap_or_default(),
        ingress_threads: args.ingress_threads.or(file.ingress_threads).unwrap_or_default(),
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
    c.bootstrap_expect = args.bootstrap_expect.or(file.bootstrap_expect).unwrap_or(c.bootstrap_expect);
    if !(1..=64).contains(&c.bootstrap_expect) {
        bail!(
            "--bootstrap-expect {} is out of range: give the number of nodes started together (1 to 64)",
            c.bootstrap_expect
        );
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

fn tracing_config(args: &NodeArgs, file: &crate::config::FileConfig) -> anyhow::Result<crate::node::TracingConfig> {
    let d = crate::node::TracingConfig::default();
    let sample = args.trace_sample.or(file.trace_sample).unwrap_or(d.sample);
    if !(0.0..=1.0).contains(&sample) {
        bail!("--trace-sample {sample} is not a share: give a number from 0 (no new traces) to 1 (all)");
    }
    let fused_parts = args.trace_fused_parts.or(file.trace_fused_parts).unwrap_or(d.fused_parts);
    if !(0.0..=1.0).contains(&fused_parts) {
        bail!(
            "--trace-fused-parts {fused_parts} is not a share: give a number from 0 (fused parts never timed) to 1 \
             (every sampled request)"
        );
    }
    let otlp = args.otlp_endpoint.as_ref().or(file.otlp_endpoint.as_ref());
    Ok(crate::node::TracingConfig {
        sample,
        ring_spans: args.trace_ring.or(file.trace_ring).unwrap_or(d.ring_spans).clamp(1, 1_000_000),
        fused_parts,
        otlp: otlp.map(|u| crate::trace::otlp::traces_url(u)).transpose().map_err(anyhow::Error::msg)?,
    })
}
