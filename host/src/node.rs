//! A node: storage, runtime, service registry, ingress and admin listeners, wired together.
//!
//! [`start`] takes already-bound listeners (tests bind `127.0.0.1:0`) and returns a
//! [`NodeHandle`] whose `shutdown` drains both listeners.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::control::{Cluster, ClusterConfig, Mode, PeerInfo, advertised};
use crate::grid::{Grid, RocksStorage};
use crate::ingress::{self, IngressConfig};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::server::{self, ServerLimits};
use crate::services::Registry;

/// Everything a node needs to know to start. Defaults match `nanogrid serve` with no flags.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: String,
    pub data_dir: PathBuf,
    /// Compiled-component cache; default `<data_dir>/compiled`.
    pub compile_cache: Option<PathBuf>,
    /// Admin bearer token; default: read or create `<data_dir>/admin-token`.
    pub admin_token: Option<String>,
    pub pool_instances: u32,
    pub max_body_bytes: usize,
    pub max_upload_bytes: usize,
    /// Meter fuel so services can set `limits.fuel`.
    pub fuel: bool,
    pub server: ServerLimits,
    /// Join a cluster (`--peer-listen`, `--gossip-listen`, `--seeds`); `None` is single mode.
    pub cluster: Option<ClusterConfig>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_id: "n1".into(),
            data_dir: PathBuf::from(".nanogrid"),
            compile_cache: None,
            admin_token: None,
            pool_instances: 1000,
            max_body_bytes: 8 << 20,
            max_upload_bytes: 64 << 20,
            fuel: false,
            server: ServerLimits::default(),
            cluster: None,
        }
    }
}

pub struct Node {
    pub config: NodeConfig,
    pub registry: Arc<Registry>,
    pub cluster: Option<Arc<Cluster>>,
    pub started: Instant,
    token: String,
    ingress_addr: SocketAddr,
    admin_addr: SocketAddr,
}

impl Node {
    pub fn admin_token(&self) -> &str {
        &self.token
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

pub struct NodeHandle {
    pub node: Arc<Node>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl NodeHandle {
    /// Stop accepting, let requests in flight finish, then return.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        if let Some(c) = &self.node.cluster {
            c.shutdown().await;
        }
    }
}

/// The token file in a data dir.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin-token")
}

fn load_or_create_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = token_path(data_dir);
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_string();
        if !t.is_empty() {
            return Ok(t);
        }
    }
    let mut raw = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .context("reading /dev/urandom for the admin token")?;
    let token = hex::encode(raw);
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    tracing::info!(path = %path.display(), "created a new admin token");
    Ok(token)
}

pub async fn start(
    config: NodeConfig,
    ingress_listener: TcpListener,
    admin_listener: TcpListener,
) -> anyhow::Result<NodeHandle> {
    let admin_addr = admin_listener.local_addr()?;
    let explicit_token = config.admin_token.as_deref().is_some_and(|t| !t.trim().is_empty());
    if !admin_addr.ip().is_loopback() && !explicit_token {
        anyhow::bail!(
            "refusing to serve the admin API on {admin_addr} without an explicit token: anyone who can reach it \
             could deploy code; pass --admin-token (or NANOGRID_TOKEN, or admin_token in the config file), \
             or keep --admin-listen on 127.0.0.1"
        );
    }
    if config.cluster.is_some() && !explicit_token {
        anyhow::bail!(
            "a clustered node needs the cluster's admin token: every node of a cluster must accept the same one, \
             and nodes use it to authenticate each other; pass --admin-token (or NANOGRID_TOKEN, or admin_token in the config file)"
        );
    }
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let token = match &config.admin_token {
        Some(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => load_or_create_token(&data_dir)?,
    };
    let db_dir = data_dir.join("db");
    let storage = tokio::task::spawn_blocking(move || RocksStorage::open(&db_dir))
        .await?
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| {
            format!(
                "opening the database in {} (is another nanogrid using this data dir?)",
                data_dir.join("db").display()
            )
        })?;
    let storage: Arc<dyn crate::grid::Storage> = Arc::new(storage);
    let keep = config.cluster.as_ref().map_or(crate::grid::DEFAULT_LOG_KEEP, |c| c.grid_log_keep);
    {
        let s = storage.clone();
        tokio::task::spawn_blocking(move || crate::grid::plog::migrate(s.as_ref(), keep))
            .await?
            .map_err(|e| anyhow::anyhow!("moving kv data into partitions: {e}"))?;
    }
    let grid = Arc::new(Grid::open(storage, &config.node_id, config.cluster.is_some(), keep));

    let runtime_cfg = RuntimeConfig {
        compile_cache: config.compile_cache.clone().unwrap_or_else(|| config.data_dir.join("compiled")),
        pool_instances: config.pool_instances,
        pool_max_memory: 1 << 30,
        fuel: config.fuel,
    };
    let runtime = Arc::new(tokio::task::spawn_blocking(move || Runtime::new(&runtime_cfg)).await??);
    let registry = Registry::new(runtime, grid.clone());
    registry.barriers.set_node(&config.node_id);
    let ingress_addr = ingress_listener.local_addr()?;
    let (tx, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut forwarder = ingress::Forwarder::new(None);
    let cluster = match &config.cluster {
        None => {
            let restored = registry.restore().await?;
            if restored > 0 {
                tracing::info!(services = restored, "restored services");
            }
            None
        }
        Some(cc) => {
            // Services come from the control plane's committed state, not the local table.
            let peer_listener = TcpListener::bind(cc.peer_listen)
                .await
                .with_context(|| format!("binding the peer listener on {}", cc.peer_listen))?;
            let host = cc.advertise_host;
            let me = PeerInfo {
                id: config.node_id.clone(),
                peer: advertised(peer_listener.local_addr()?, host, "peer")?.to_string(),
                addr: advertised(ingress_addr, host, "ingress")?.to_string(),
                admin_addr: advertised(admin_addr, host, "admin")?.to_string(),
                mode: "joining".into(),
                ..Default::default()
            };
            let cluster = Cluster::start(&config.node_id, cc.clone(), &token, me, grid, registry.clone()).await?;
            // Ingress and `invoke` share one connection pool to the other nodes.
            forwarder.peers = Some(cluster.clone() as Arc<dyn ingress::Peers>);
            registry.set_remote(Arc::new(crate::control::RemoteCalls {
                cluster: Arc::downgrade(&cluster),
                forwarder: forwarder.without_peers(),
            }));
            let max_body = config.max_upload_bytes.saturating_mul(2).saturating_add(1 << 20);
            let c = cluster.clone();
            let handler = move |req| crate::control::peer::handle(c.clone(), max_body, req);
            tasks.push(tokio::spawn(server::serve("peer", peer_listener, config.server, rx.clone(), handler)));
            tasks.push(tokio::spawn(cluster.clone().run(rx.clone())));
            tracing::info!(node = %config.node_id, peer = %cc.peer_listen, gossip = %cc.gossip_listen, seeds = ?cc.seeds, "joining a cluster");
            Some(cluster)
        }
    };

    // Barriers whose driver stopped (this node's earlier run, or a node that died).
    tasks.push(tokio::spawn(registry.clone().sweep_barriers(rx.clone())));
    let node = Arc::new(Node {
        ingress_addr,
        admin_addr: admin_listener.local_addr()?,
        config,
        registry,
        cluster,
        started: Instant::now(),
        token,
    });
    {
        let registry = node.registry.clone();
        let cfg = IngressConfig { max_body: node.config.max_body_bytes };
        let handler = move |req| ingress::handle(registry.clone(), cfg, forwarder.clone(), req);
        tasks.push(tokio::spawn(server::serve("ingress", ingress_listener, node.config.server, rx.clone(), handler)));
    }
    {
        let n = node.clone();
        let handler = move |req| crate::admin::handle(n.clone(), req);
        tasks.push(tokio::spawn(server::serve("admin", admin_listener, node.config.server, rx, handler)));
    }
    Ok(NodeHandle { node, shutdown: tx, tasks })
}
