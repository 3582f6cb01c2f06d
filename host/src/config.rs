//! `nanogrid serve` settings: command-line flags over an optional TOML file over defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

/// The TOML file given with `--config`. Every field is optional; flags win.
///
/// ```toml
/// listen = "127.0.0.1:8080"
/// admin_listen = "127.0.0.1:8081"
/// data_dir = "/var/lib/nanogrid"
/// node_id = "n1"
/// admin_token_file = "/etc/nanogrid/admin-token"   # or admin_token = "..." (the file keeps it out of configs)
/// deploy_token_file = "/etc/nanogrid/deploy-token" # scope `deploy`: components and services
/// read_token_file = "/etc/nanogrid/read-token"     # scope `read`: GET only
/// pool_instances = 1000
/// partitions = 256              # kv grid partitions; fixed when the data dir (and cluster) is made
/// max_body_bytes = 8388608
/// max_upload_bytes = 67108864
/// fuel = false                  # meter fuel so services can set limits.fuel
/// compile = "tiered"            # new components: tiered | optimized (see --compile)
/// ingress_threads = "per-core"  # ingress connections: per-core | shared (see --ingress-threads)
/// sync = "batch"                # kv writes on disk before acknowledged: always | batch | never
/// trace_sample = 1.0            # share of new traces recorded (0 to 1)
/// trace_ring = 20000            # spans kept for GET /v1/traces
/// trace_fused_parts = 0         # share of sampled fused-chain requests that time each part
/// otlp_endpoint = "http://127.0.0.1:4318"   # export spans over OTLP/HTTP
/// min_free_mib = 64             # kv writes are refused while the data dir's disk has less free
/// tls_cert = "/etc/nanogrid/tls.pem"   # HTTPS on ingress and admin (reloaded on change/SIGHUP)
/// tls_key = "/etc/nanogrid/tls.key"
/// extra_ca = ["/etc/nanogrid/internal-ca.pem"]   # guests' outgoing HTTPS also trusts these
/// resolve = ["api.internal=203.0.113.7"]        # pin names for guests' outgoing HTTP
/// max_connections_per_ip = 256  # per listener
/// body_idle_timeout_ms = 10000  # a request body may not pause longer
/// min_body_rate = 1024          # bytes/s a request body must average ...
/// body_rate_grace_ms = 10000    # ... once this long has passed
/// max_connections = 10000       # per listener
/// header_read_timeout_ms = 10000
/// max_headers = 100
/// drain_timeout_ms = 30000      # how long shutdown waits for requests in flight
/// # cluster (peer_listen turns it on)
/// cluster_dir = "/etc/nanogrid/cluster"  # `nanogrid cluster init` + `cluster add-node`
/// peer_listen = "127.0.0.1:7001"
/// gossip_listen = "127.0.0.1:7002"
/// seeds = ["127.0.0.1:7102", "127.0.0.1:7202"]
/// voters = 3
/// bootstrap_expect = 3          # a new cluster forms once this many nodes see each other
/// gossip_interval_ms = 200
/// advertise_host = "10.0.0.1"   # when listeners bind 0.0.0.0
/// phi_threshold = 8.0           # failure detector: higher = later but surer
/// replication = 3               # replicas per kv partition (capped at the node count)
/// colocate_min_rate = 5.0       # calls/s from a node that pull a service's odd instances there; 0 = off
/// reprovision = "auto"          # traffic-driven moves as A/B experiments: auto, propose (wait for approval) or off
/// experiment_window_ms = 30000  # how long a trial runs before the leader judges it
/// experiment_min_samples = 100  # calls per arm a verdict needs
/// experiment_min_gain = 0.05    # the least p50 gain worth a move
/// gossip_window_ms = 10000      # how far a gossip packet's clock may be off (replays older are dropped)
/// autoscale_window_ms = 1000    # how often the leader measures load and decides counts
/// node_instances = 16           # instances one node is meant to run (default 8 per core)
/// node_scaler = "/usr/lib/nanogrid/scalers/kubernetes"  # or an https:// webhook
/// min_nodes = 3                 # bounds of the node count the leader asks for
/// max_nodes = 16
/// node_idle_s = 300             # surplus nodes this long: drain and remove one
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub node_id: Option<String>,
    pub admin_token: Option<String>,
    pub admin_token_file: Option<PathBuf>,
    pub deploy_token_file: Option<PathBuf>,
    pub read_token_file: Option<PathBuf>,
    pub compile_cache: Option<PathBuf>,
    pub pool_instances: Option<u32>,
    pub partitions: Option<u32>,
    pub max_body_bytes: Option<usize>,
    pub max_upload_bytes: Option<usize>,
    pub fuel: Option<bool>,
    pub compile: Option<crate::runtime::CompileMode>,
    pub ingress_threads: Option<crate::cores::IngressThreads>,
    pub sync: Option<crate::grid::SyncMode>,
    pub min_free_mib: Option<u64>,
    pub trace_sample: Option<f64>,
    pub trace_ring: Option<usize>,
    pub trace_fused_parts: Option<f64>,
    pub otlp_endpoint: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub extra_ca: Option<Vec<PathBuf>>,
    pub resolve: Option<Vec<String>>,
    pub tls_key: Option<PathBuf>,
    pub max_connections_per_ip: Option<usize>,
    pub body_idle_timeout_ms: Option<u64>,
    pub min_body_rate: Option<u64>,
    pub body_rate_grace_ms: Option<u64>,
    pub max_connections: Option<usize>,
    pub header_read_timeout_ms: Option<u64>,
    pub max_headers: Option<usize>,
    pub drain_timeout_ms: Option<u64>,
    pub peer_listen: Option<SocketAddr>,
    pub gossip_listen: Option<SocketAddr>,
    pub seeds: Option<Vec<String>>,
    pub voters: Option<usize>,
    pub bootstrap_expect: Option<usize>,
    pub gossip_interval_ms: Option<u64>,
    pub advertise_host: Option<std::net::IpAddr>,
    pub phi_threshold: Option<f64>,
    pub replication: Option<usize>,
    pub colocate_min_rate: Option<f64>,
    pub reprovision: Option<String>,
    pub experiment_window_ms: Option<u64>,
    pub experiment_min_samples: Option<usize>,
    pub experiment_min_gain: Option<f64>,
    pub cluster_dir: Option<PathBuf>,
    pub gossip_window_ms: Option<u64>,
    pub autoscale_window_ms: Option<u64>,
    pub node_instances: Option<u32>,
    pub node_scaler: Option<String>,
    pub min_nodes: Option<usize>,
    pub max_nodes: Option<usize>,
    pub node_idle_s: Option<u64>,
}

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config file {} is not valid", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<FileConfig>("lisen = \"127.0.0.1:1\"").unwrap_err();
        assert!(err.to_string().contains("lisen"));
        let ok: FileConfig = toml::from_str("listen = \"127.0.0.1:9\"\npool_instances = 10").unwrap();
        assert_eq!(ok.pool_instances, Some(10));
    }

    #[test]
    fn the_shipped_cluster_config_parses() {
        let c: FileConfig = toml::from_str(include_str!("../../deploy/cluster-node.toml")).unwrap();
        assert_eq!(c.peer_listen, Some("10.0.0.1:7001".parse().unwrap()));
        assert_eq!(c.seeds.as_ref().map(Vec::len), Some(2));
        assert_eq!(c.voters, Some(3));
        assert_eq!(c.bootstrap_expect, Some(3));
    }
}
