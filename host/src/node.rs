//! A node's shared state: its configuration and the parts every request path reaches
//! (the service registry, the cluster, the control plane the admin API talks to). The admin
//! API, `/metrics` and the console read it; [`crate::boot`] builds it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::control::{Cluster, ClusterConfig, Mode};
use crate::server::ServerLimits;
use crate::services::Registry;

/// Everything a node needs to know to start. Defaults match `nanogrid serve` with no flags.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: String,
    pub data_dir: PathBuf,
    /// Compiled-component cache; default `<data_dir>/compiled`.
    pub compile_cache: Option<PathBuf>,
    /// Admin bearer token; default: the cluster's, else read or create
    /// `<data_dir>/admin-token`.
    pub admin_token: Option<String>,
    /// Tokens of the `deploy` and `read` scopes (none unless given or in the cluster dir).
    pub deploy_token: Option<String>,
    pub read_token: Option<String>,
    pub pool_instances: u32,
    /// Partitions of the kv grid: a new data dir takes this count; an existing one must
    /// match it (as must every node of a cluster).
    pub partitions: u32,
    pub max_body_bytes: usize,
    pub max_upload_bytes: usize,
    /// Meter fuel so services can set `limits.fuel`.
    pub fuel: bool,
    /// New components: baseline code first, or wait for the optimized (`--compile`).
    pub compile: crate::runtime::CompileMode,
    /// Where ingress connections run (`--ingress-threads`).
    pub ingress_threads: crate::cores::IngressThreads,
    /// When kv writes reach the disk (`--sync`).
    pub sync: crate::grid::SyncMode,
    /// Bytes kept free on the data dir's disk: kv writes are refused below it (`--min-free-mib`).
    pub min_free: u64,
    /// Move a damaged store aside and rebuild from peers (`--rebuild-store`).
    pub rebuild_store: bool,
    pub server: ServerLimits,
    /// How fast request bodies must arrive (ingress and admin).
    pub pace: crate::pace::Pace,
    /// Certificate and key of the ingress and admin listeners (`None`: plain HTTP).
    pub tls: Option<crate::listener_tls::TlsFiles>,
    /// CA files guests' outgoing HTTPS trusts besides the Mozilla roots (`--extra-ca`).
    pub extra_ca: Vec<PathBuf>,
    /// Names pinned to addresses for guests' outgoing HTTP (`--resolve NAME=IP`).
    pub resolve: std::collections::HashMap<String, std::net::IpAddr>,
    /// How requests are traced (`--trace-sample`, `--trace-ring`, `--otlp-endpoint`).
    pub tracing: TracingConfig,
    /// Join a cluster (`--peer-listen`, `--gossip-listen`, `--seeds`); `None` is single mode.
    pub cluster: Option<ClusterConfig>,
}

#[derive(Debug, Clone)]
pub struct TracingConfig {
    pub sample: f64,
    pub ring_spans: usize,
    /// The collector's `/v1/traces` URL (checked by `trace::otlp::traces_url`).
    pub otlp: Option<String>,
    /// Share of sampled requests to a fused chain that run its timed composition.
    pub fused_parts: f64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig { sample: 1.0, ring_spans: 20_000, otlp: None, fused_parts: 0.0 }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_id: "n1".into(),
            data_dir: PathBuf::from(".nanogrid"),
            compile_cache: None,
            admin_token: None,
            deploy_token: None,
            read_token: None,
            pool_instances: 1000,
            partitions: crate::grid::part::DEFAULT_PARTITIONS,
            max_body_bytes: 8 << 20,
            max_upload_bytes: 64 << 20,
            fuel: false,
            compile: crate::runtime::CompileMode::Tiered,
            ingress_threads: crate::cores::IngressThreads::PerCore,
            sync: crate::grid::SyncMode::default(),
            min_free: crate::grid::disk::DEFAULT_MIN_FREE,
            rebuild_store: false,
            server: ServerLimits::default(),
            pace: crate::pace::Pace::default(),
            tls: None,
            extra_ca: Vec::new(),
            resolve: Default::default(),
            tracing: TracingConfig::default(),
            cluster: None,
        }
    }
}

pub struct Node {
    pub config: NodeConfig,
    pub registry: Arc<Registry>,
    pub cluster: Option<Arc<Cluster>>,
    /// What the admin API talks to: the cluster, or this node alone.
    pub plane: Arc<dyn crate::control::plane::ControlPlane>,
    /// Requests and `invoke` calls this node sent to others, by outcome (`/metrics`).
    pub forwards: Arc<crate::forward::ForwardCounts>,
    pub started: Instant,
    pub(crate) tokens: crate::auth::Tokens,
    pub(crate) ingress_addr: SocketAddr,
    pub(crate) admin_addr: SocketAddr,
}

impl Node {
    pub fn admin_token(&self) -> &str {
        &self.tokens.admin
    }
    pub fn tokens(&self) -> &crate::auth::Tokens {
        &self.tokens
    }
    pub fn ingress_addr(&self) -> SocketAddr {
        self.ingress_addr
    }
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }
    pub fn mode(&self) -> Mode {
        self.cluster.as_ref().map_or(Mode::Single, |c| c.mode())
    }
}
