//! Start-up and shutdown of a node: storage, runtime, service registry, cluster, ingress
//! and admin listeners, wired together (the composition root: the one module that
//! depends on every other).
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

use crate::control::{Cluster, ClusterConfig, PeerInfo, advertised};
use crate::grid::{Grid, RocksStorage};
use crate::ingress::{self, IngressConfig};
use crate::node::{Node, NodeConfig};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::server;
use crate::services::Registry;

/// What the admin API talks to: the cluster, or this node alone.
fn control_plane(
    cluster: &Option<Arc<Cluster>>,
    config: &NodeConfig,
    registry: &Arc<Registry>,
    (ingress_addr, admin_addr): (SocketAddr, SocketAddr),
) -> Arc<dyn crate::control::plane::ControlPlane> {
    match cluster {
        Some(c) => c.clone(),
        None => Arc::new(crate::control::plane::Single {
            node_id: config.node_id.clone(),
            registry: registry.clone(),
            ingress_addr,
            admin_addr,
        }),
    }
}

pub struct NodeHandle {
    pub node: Arc<Node>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl NodeHandle {
    /// Stop accepting, let requests in flight finish, then return.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
        if let Some(c) = &self.node.cluster {
            c.shutdown().await;
        }
        // Idle reused instances hold the registry through their call context.
        self.node.registry.drop_idle_instances();
    }
}

/// A handle dropped without [`NodeHandle::shutdown`] (a test that failed half way) still
/// stops the node's tasks: told to stop, then aborted.
impl Drop for NodeHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for t in &self.tasks {
            t.abort();
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

/// The cluster's secrets for this node, with the checks that keep a misconfigured node
/// from starting half secure.
fn load_secrets(cc: &ClusterConfig, node_id: &str) -> anyhow::Result<crate::transport::secrets::ClusterSecrets> {
    if cc.plaintext_peers && !(cc.peer_listen.ip().is_loopback() && cc.gossip_listen.ip().is_loopback()) {
        anyhow::bail!(
            "cleartext peer RPC is for benchmarks on one machine only; peer and gossip listeners must be on loopback (drop the flag to use TLS)"
        );
    }
    let secrets = crate::transport::secrets::ClusterSecrets::load(&cc.cluster_dir, node_id)
        .with_context(|| format!("loading the cluster secrets for node {node_id}"))?;
    let left = secrets.node_cert_expires - time::OffsetDateTime::now_utc().unix_timestamp();
    if left < 30 * 86_400 {
        tracing::warn!(
            days = left / 86_400,
            "this node's certificate expires soon; issue a new one with `nanogrid cluster add-node {node_id} DIR --force`"
        );
    }
    Ok(secrets)
}

/// The peer listener's routes: forwarded requests go to ingress, the rest to the control
/// plane. Both see only requests the transport authenticated.
fn peer_handler(
    cluster: &Arc<Cluster>,
    config: &NodeConfig,
) -> impl Fn(
    crate::transport::Peer,
    http::Request<hyper::body::Incoming>,
) -> futures::future::BoxFuture<'static, http::Response<crate::http::Body>>
+ Clone
+ Send
+ Sync
+ 'static {
    let max_body = config.max_upload_bytes.saturating_mul(2).saturating_add(1 << 20);
    let ingress_cfg = IngressConfig { max_body: config.max_body_bytes, pace: config.pace, tls: false };
    let cluster = cluster.clone();
    move |peer, req| {
        let cluster = cluster.clone();
        Box::pin(async move {
            let req = match crate::control::peer::admit(&cluster, &peer, req).await {
                Ok(r) => r,
                Err(refused) => return refused,
            };
            let path = req.uri().path();
            if path == ingress::FORWARD_PREFIX || path.starts_with(&format!("{}/", ingress::FORWARD_PREFIX)) {
                let registry = cluster.registry.clone();
                let peers = cluster.clone() as Arc<dyn ingress::Peers>;
                ingress::handle_forwarded(registry, ingress_cfg, peers, &peer.node, req).await
            } else {
                crate::control::peer::handle(cluster, max_body, peer, req).await
            }
        })
    }
}

/// The node's Wasm runtime (its engine is built off the async runtime: that compiles
/// nothing yet but sets up the pooling allocator's reservations).
async fn start_runtime(config: &NodeConfig, listeners: &[SocketAddr]) -> anyhow::Result<Arc<Runtime>> {
    let runtime_cfg = RuntimeConfig {
        compile_cache: config.compile_cache.clone().unwrap_or_else(|| config.data_dir.join("compiled")),
        pool_instances: config.pool_instances,
        pool_max_memory: 1 << 30,
        fuel: config.fuel,
        tiered: config.compile == crate::runtime::CompileMode::Tiered,
        fused_parts: config.tracing.fused_parts,
        outbound: Some(Arc::new(crate::runtime::outbound::OutboundNet::new(&config.extra_ca, config.resolve.clone())?)),
    };
    let runtime = Arc::new(tokio::task::spawn_blocking(move || Runtime::new(&runtime_cfg)).await??);
    runtime.outbound().set_own(own_addresses(config, listeners));
    Ok(runtime)
}

pub async fn start(
    config: NodeConfig,
    ingress_listener: TcpListener,
    admin_listener: TcpListener,
) -> anyhow::Result<NodeHandle> {
    let admin_addr = admin_listener.local_addr()?;
    let secrets = match &config.cluster {
        Some(cc) => Some(load_secrets(cc, &config.node_id)?),
        None => None,
    };
    private_dir(&config.data_dir)?;
    halt_poll_hint(config.ingress_threads);
    let tokens = crate::auth::Tokens {
        admin: admin_token(&config, secrets.as_ref(), admin_addr)?,
        deploy: config.deploy_token.clone().or_else(|| secrets.as_ref().and_then(|s| s.deploy_token.clone())),
        read: config.read_token.clone().or_else(|| secrets.as_ref().and_then(|s| s.read_token.clone())),
    };
    let grid = open_grid(&config).await?;
    let runtime = start_runtime(&config, &[ingress_listener.local_addr()?, admin_addr]).await?;
    let registry = Registry::new(runtime, grid.clone());
    registry.barriers.set_node(&config.node_id);
    let t = &config.tracing;
    let exporter = t.otlp.clone().map(|url| crate::trace::otlp::Exporter::start(url, &config.node_id));
    registry.set_tracer(Arc::new(crate::trace::Tracer::new(&config.node_id, t.sample, t.ring_spans, exporter)));
    let ingress_addr = ingress_listener.local_addr()?;
    let (tx, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let tls = listener_tls(&config, (ingress_addr, admin_addr), &rx, &mut tasks)?;
    let (cluster, forwarder) = match (&config.cluster, &secrets) {
        (Some(cc), Some(secrets)) => {
            // Services come from the control plane's committed state, not the local table.
            let addrs = (ingress_addr, admin_addr);
            let (cluster, forwarder) =
                join_cluster(&config, cc, secrets, addrs, grid, &registry, &rx, &mut tasks).await?;
            (Some(cluster), forwarder)
        }
        _ => {
            let restored = registry.restore().await?;
            if restored > 0 {
                tracing::info!(services = restored, "restored services");
            }
            let window = std::time::Duration::from_secs(1);
            tasks.push(tokio::spawn(crate::autoscale::run_single(registry.clone(), window, rx.clone())));
            (None, ingress::Forwarder::new(None, None))
        }
    };

    // Barriers whose driver stopped (this node's earlier run, or a node that died).
    tasks.push(tokio::spawn(registry.clone().sweep_barriers(rx.clone())));
    let plane = control_plane(&cluster, &config, &registry, (ingress_addr, admin_addr));
    let forwards = forwarder.counts().clone();
    let node = Arc::new(Node {
        ingress_addr,
        admin_addr,
        config,
        registry,
        cluster,
        plane,
        forwards,
        started: Instant::now(),
        tokens,
    });
    {
        let registry = node.registry.clone();
        let cfg = IngressConfig { max_body: node.config.max_body_bytes, pace: node.config.pace, tls: tls.is_some() };
        let handler = move |req| ingress::handle(registry.clone(), cfg, forwarder.clone(), req);
        let cores = crate::cores::Cores::for_mode(node.config.ingress_threads, "ingress-core")?;
        if let Some(c) = &cores {
            tracing::info!(threads = c.threads(), pinned_to_cpus = ?c.pinned(), "ingress connection threads");
        }
        let serve =
            server::serve("ingress", ingress_listener, node.config.server, tls.clone(), rx.clone(), cores, handler);
        tasks.push(tokio::spawn(serve));
    }
    {
        let n = node.clone();
        let handler = move |req| crate::admin::handle(n.clone(), req);
        tasks.push(tokio::spawn(server::serve("admin", admin_listener, node.config.server, tls, rx, None, handler)));
    }
    Ok(NodeHandle { node, shutdown: tx, tasks })
}

/// This node's listeners as a guest would reach them: a wildcard bind at every address of
/// the machine's interfaces (and the advertised host).
fn own_addresses(config: &NodeConfig, bound: &[SocketAddr]) -> Vec<SocketAddr> {
    let cluster = config.cluster.as_ref();
    let mut hosts = local_ips();
    hosts.extend(cluster.and_then(|c| c.advertise_host));
    let mut all: Vec<SocketAddr> = bound.to_vec();
    all.extend(cluster.map(|c| c.peer_listen));
    all.into_iter()
        .flat_map(|a| match a.ip().is_unspecified() {
            false => vec![a],
            true => hosts.iter().map(|h| SocketAddr::new(*h, a.port())).collect(),
        })
        .collect()
}

/// The addresses of this machine's network interfaces.
fn local_ips() -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we only read, then free once.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut cur = list;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let a = &*(addr as *const libc::sockaddr_in);
                        out.push(std::net::IpAddr::V4(std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))));
                    }
                    libc::AF_INET6 => {
                        let a = &*(addr as *const libc::sockaddr_in6);
                        out.push(std::net::IpAddr::V6(std::net::Ipv6Addr::from(a.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out
}

/// The listeners' TLS, with a task that reloads the certificate when it changes; a
/// warning for a listener off loopback that speaks plain HTTP.
fn listener_tls(
    config: &NodeConfig,
    (ingress, admin): (SocketAddr, SocketAddr),
    rx: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    let Some(files) = &config.tls else {
        for (what, addr) in [("ingress", ingress), ("admin", admin)] {
            if !addr.ip().is_loopback() {
                tracing::warn!(listener = what, %addr, "this listener speaks plain HTTP off loopback; give --tls-cert and --tls-key, or terminate TLS in front of it");
            }
        }
        return Ok(None);
    };
    let certs = crate::listener_tls::CertFiles::load(files.clone())?;
    let cfg = certs.server_config()?;
    tasks.push(tokio::spawn(certs.watch(rx.clone())));
    Ok(Some(cfg))
}

/// Tell the operator of a VM whose guest halt polling is off what it costs a lone client.
/// Such a VM halts an idle vCPU at once, and waking it again is slow: measured here
/// (docs/BENCHMARKS.md, "Tried for hello throughput"), one client's p50 read 70-110 µs
/// instead of 16-35 µs, native hyper's as much as the node's. A runtime per core pays it
/// more often than the shared one (a lone client served 15-25 % fewer requests a second
/// there, none fewer with polling on: "Kept, 2026-12-06: ingress connections on a runtime
/// per core"). Nothing else changes.
fn halt_poll_hint(threads: crate::cores::IngressThreads) {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let driver = read("/sys/devices/system/cpu/cpuidle/current_driver");
    let ns = read(HALT_POLL_KNOB);
    if !halt_poll_off(driver.as_deref(), ns.as_deref()) {
        return;
    }
    tracing::info!(
        knob = HALT_POLL_KNOB,
        "guest halt polling is off on this VM: a lone client's request waits for halted vCPUs to wake (50-70 µs more at p50 where measured); writing 200000 to the knob trades idle CPU for that latency (deploy/README.md)"
    );
    if threads == crate::cores::IngressThreads::PerCore {
        tracing::info!(
            "with halt polling off, ingress threads per core cost a lone client 10-25 % of its requests per second where measured (under load they served wasi:http 11-42 % more); turn polling on, or pass --ingress-threads shared if lone clients matter more"
        );
    }
}

const HALT_POLL_KNOB: &str = "/sys/module/haltpoll/parameters/guest_halt_poll_ns";

/// The cpuidle driver is the guest's `haltpoll` one and its polling window is zero.
fn halt_poll_off(driver: Option<&str>, ns: Option<&str>) -> bool {
    driver.is_some_and(|d| d.trim() == "haltpoll") && ns.is_some_and(|n| n.trim() == "0")
}

/// Create the data dir readable by its owner only (it holds every kv value and the admin
/// token); warn about an existing one that others can read.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if dir.exists() {
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o777), "the data dir is readable by other users; chmod 700 it");
        }
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating data dir {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting data dir {} to its owner", dir.display()))
}

/// Files the node creates from now on (RocksDB's, the compile cache, tokens) are its
/// user's only: other local users must not read kv values.
pub fn private_files() {
    // SAFETY: umask only sets the process's file mode mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// The admin token: given, else the cluster's, else the data dir's (made on first start).
/// An admin API off loopback needs one given explicitly.
fn admin_token(
    config: &NodeConfig,
    secrets: Option<&crate::transport::secrets::ClusterSecrets>,
    admin_addr: SocketAddr,
) -> anyhow::Result<String> {
    let given = config.admin_token.as_deref().map(str::trim).filter(|t| !t.is_empty());
    let cluster = secrets.and_then(|s| s.admin_token.clone());
    if !admin_addr.ip().is_loopback() && given.is_none() && cluster.is_none() {
        anyhow::bail!(
            "refusing to serve the admin API on {admin_addr} without an explicit token: anyone who can reach it \
             could deploy code; pass --admin-token (or NANOGRID_TOKEN, or admin_token in the config file), \
             or keep --admin-listen on 127.0.0.1"
        );
    }
    match (given, cluster) {
        (Some(t), _) => Ok(t.to_string()),
        (None, Some(t)) => Ok(t),
        (None, None) if secrets.is_some() => anyhow::bail!(
            "a clustered node needs the cluster's admin token: every node must accept the same one; \
             keep the admin-token file `nanogrid cluster init` wrote in the cluster directory, or pass --admin-token"
        ),
        (None, None) => load_or_create_token(&config.data_dir),
    }
}

/// Open the node's RocksDB (off the async workers), move pre-grid kv rows into
/// partitions once, and wrap it in the grid. A damaged store stops the start with what to
/// do, or (`--rebuild-store`, cluster mode) is moved aside for an empty one that the
/// peers fill again.
async fn open_grid(config: &NodeConfig) -> anyhow::Result<Arc<Grid>> {
    let db_dir = config.data_dir.join("db");
    let (storage, rebuilt) = match open_store(&db_dir, config).await? {
        Ok(storage) => (storage, false),
        Err(damage) if config.rebuild_store && config.cluster.is_some() => {
            let aside = config.data_dir.join(format!("db.damaged-{}", unix_now()));
            tracing::error!(%damage, aside = %aside.display(), "the store is damaged; moving it aside and rebuilding from the peers");
            std::fs::rename(&db_dir, &aside)
                .with_context(|| format!("moving the damaged store {} to {}", db_dir.display(), aside.display()))?;
            let storage = open_store(&db_dir, config).await?.map_err(|d| anyhow::anyhow!("{d}"))?;
            (storage, true)
        }
        Err(damage) => {
            let fix = if config.cluster.is_some() {
                "restart with --rebuild-store to move it aside and rebuild this node from its peers \
                 (nothing a majority acknowledged is lost)"
            } else {
                "a single node has no peers to rebuild from: restore the data dir from a backup, or move \
                 the db directory aside to start empty"
            };
            anyhow::bail!("{damage}. Nothing was served from it. To recover: {fix}");
        }
    };
    let storage: Arc<dyn crate::grid::Storage> = Arc::new(storage);
    let keep = config.cluster.as_ref().map_or(crate::grid::DEFAULT_LOG_KEEP, |c| c.grid_log_keep);
    let s = storage.clone();
    let wanted = config.partitions;
    let partitions = tokio::task::spawn_blocking(move || crate::grid::plog::partitions(s.as_ref(), wanted))
        .await?
        .map_err(|e| anyhow::anyhow!("reading the data dir's partition count: {e}"))?;
    if partitions != wanted {
        anyhow::bail!(
            "--partitions {wanted} does not match this data dir: its kv grid was made with {partitions} partitions, \
             fixed for its life. Start with --partitions {partitions}, or give a new --data-dir for a grid of {wanted}"
        );
    }
    {
        let s = storage.clone();
        tokio::task::spawn_blocking(move || crate::grid::plog::migrate(s.as_ref(), keep, partitions))
            .await?
            .map_err(|e| anyhow::anyhow!("moving kv data into partitions: {e}"))?;
    }
    // Until the control plane has made this node a learner again, a rebuilt store stays
    // marked (also across restarts): no Raft votes, no partition it was not chosen for.
    let s = storage.clone();
    let rebuilt = tokio::task::spawn_blocking(move || {
        use crate::grid::{BatchOp, Durability, Table};
        if rebuilt {
            s.write(
                vec![BatchOp::Put(Table::Meta, crate::grid::REBUILT_KEY.to_vec(), b"1".to_vec())],
                Durability::Synced,
            )?;
            return Ok(true);
        }
        s.get(Table::Meta, crate::grid::REBUILT_KEY).map(|v| v.is_some())
    })
    .await?
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let grid = Grid::open(storage, &config.node_id, config.cluster.is_some(), keep, partitions);
    grid.replicas().set_rebuilt(rebuilt);
    Ok(Arc::new(grid))
}

/// Open the RocksDB in `dir` off the async workers: `Ok(Err(..))` when it is damaged.
async fn open_store(
    dir: &Path,
    config: &NodeConfig,
) -> anyhow::Result<Result<RocksStorage, crate::grid::StoreDamaged>> {
    let (path, shown) = (dir.to_path_buf(), dir.display().to_string());
    let (sync, min_free) = (config.sync, config.min_free);
    match tokio::task::spawn_blocking(move || RocksStorage::open_keeping(&path, sync, min_free)).await? {
        Ok(s) => Ok(Ok(s)),
        Err(crate::grid::StorageError::Damaged(d)) => Ok(Err(d)),
        Err(e) => Err(anyhow::anyhow!("{e}"))
            .with_context(|| format!("opening the database in {shown} (is another nanogrid using this data dir?)")),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Bind the peer listener, start the cluster and its loops, and serve peers. Returns the
/// cluster and the forwarder ingress uses (it shares the peer connections).
#[allow(clippy::too_many_arguments)]
async fn join_cluster(
    config: &NodeConfig,
    cc: &ClusterConfig,
    secrets: &crate::transport::secrets::ClusterSecrets,
    (ingress_addr, admin_addr): (SocketAddr, SocketAddr),
    grid: Arc<Grid>,
    registry: &Arc<Registry>,
    rx: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<(Arc<Cluster>, ingress::Forwarder)> {
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
        partitions: grid.replicas().count(),
        ..Default::default()
    };
    let mut cc = cc.clone();
    cc.max_component_bytes = config.max_upload_bytes;
    let cluster = Cluster::start(&config.node_id, cc.clone(), secrets, me, grid, registry.clone(), rx.clone()).await?;
    let forwarder =
        ingress::Forwarder::new(Some(cluster.clone() as Arc<dyn ingress::Peers>), Some(cluster.peers.clone()));
    let peers: std::sync::Weak<dyn ingress::Peers> = Arc::downgrade(&cluster) as _;
    registry.set_routes(crate::services::route::Routes { peers, forward: Arc::new(forwarder.without_peers()) });
    let handler = peer_handler(&cluster, config);
    let tls = cluster.security.tls.as_ref().map(|t| t.server.clone());
    let stats = cluster.security.stats.clone();
    let serve = crate::transport::server::serve(peer_listener, tls, config.server, stats, rx.clone(), handler);
    tasks.push(tokio::spawn(serve));
    tasks.push(tokio::spawn(cluster.clone().run(rx.clone())));
    tracing::info!(node = %config.node_id, peer = %cc.peer_listen, gossip = %cc.gossip_listen, seeds = ?cc.seeds, "joining a cluster");
    Ok((cluster, forwarder))
}

#[cfg(test)]
mod tests {
    use super::halt_poll_off;

    #[test]
    fn halt_polling_is_off_only_with_the_haltpoll_driver_and_a_zero_window() {
        assert!(halt_poll_off(Some("haltpoll\n"), Some("0\n")));
        assert!(!halt_poll_off(Some("haltpoll\n"), Some("200000\n")));
        // Bare metal or another idle driver: the knob means nothing there.
        assert!(!halt_poll_off(Some("intel_idle\n"), Some("0\n")));
        assert!(!halt_poll_off(None, Some("0\n")));
        assert!(!halt_poll_off(Some("haltpoll\n"), None));
    }
}
