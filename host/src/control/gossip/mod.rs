//! Membership and failure detection with chitchat (UDP gossip, phi accrual detector),
//! over a sealed transport ([`sealed`]) and under supervision.
//!
//! Each node publishes its addresses, mode, load and the services it has instances of.
//! Nodes are matched by name: a restarted node gossips under a new generation and its old
//! incarnation is simply declared dead.
//!
//! The chitchat task can end (its socket fails, or it panics on a packet it cannot
//! handle) or stop making progress. Either way the node must not go on serving from a
//! frozen view while the others count it dead, so a supervisor watches the task's end and
//! its heartbeat: when gossip stops, [`Gossip::running`] turns false at once (the mode
//! loop makes the node dormant), and gossip is started again under a new generation with
//! the keys last published. Bounds: an ended task is seen at once, a frozen one within
//! [`stall_limit`] (10 gossip intervals, at least 2 s); a restart follows within 200 ms,
//! backing off to 5 s while restarts keep failing.

pub mod sealed;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use nanogrid_wire::seal::{GossipKey, Opener};
use serde::Serialize;
use tokio::sync::RwLock;

use crate::ratelog::RateLimited;
use crate::transport::Faults;
pub use sealed::GossipStats;

pub const KEY_PEER: &str = "peer";
pub const KEY_INGRESS: &str = "ingress";
pub const KEY_ADMIN: &str = "admin";
pub const KEY_MODE: &str = "mode";
pub const KEY_SERVICES: &str = "services";
pub const KEY_LOAD: &str = "load";
pub const KEY_PARTITIONS: &str = "partitions";
/// What an uninitialised node publishes as its mode, so others know it wants to join.
pub const JOINING: &str = "joining";
/// What a node whose store was rebuilt publishes until the leader has made it a learner
/// (it lost its Raft vote, so it must not count as a voter) and dropped it from every
/// partition's in-sync set (it holds none of what that place promised).
pub const REBUILDING: &str = "rebuilding";
/// The nanogrid release a node runs, and the peer protocol it speaks (`transport::PROTOCOL`).
pub const KEY_RELEASE: &str = "release";
pub const KEY_PROTOCOL: &str = "protocol";
/// The node's formation id (`control::formation`), once it has one.
pub const KEY_FORMATION: &str = "formation";

/// What a node tells the others about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PeerInfo {
    pub id: String,
    pub peer: String,
    pub addr: String,
    pub admin_addr: String,
    pub mode: String,
    pub services: Vec<String>,
    pub load: u64,
    /// Partitions of the node's kv grid (all of a cluster's must agree).
    pub partitions: u32,
    /// The nanogrid release it runs (empty: a node from before it said).
    pub release: String,
    /// The peer protocol it speaks (`None`: a node from before peer protocol versions).
    pub protocol: Option<u32>,
    /// The formation of the cluster its Raft state belongs to (`None`: none yet, or a node
    /// of a cluster formed before formation ids).
    pub formation: Option<String>,
}

#[derive(Clone)]
pub struct GossipConfig {
    pub node_id: String,
    pub listen: SocketAddr,
    /// What peers gossip to (`listen`, unless that is a wildcard address).
    pub advertise: SocketAddr,
    pub seeds: Vec<String>,
    pub interval: Duration,
    pub phi_threshold: f64,
    pub cluster_id: String,
    pub key: GossipKey,
    /// How far a packet's clock may be from this node's before it is dropped.
    pub window: Duration,
}

/// How long a gossip task may go without a heartbeat before it counts as stopped.
pub fn stall_limit(interval: Duration) -> Duration {
    (interval * 10).max(Duration::from_secs(2))
}

pub struct Gossip {
    cfg: GossipConfig,
    transport: sealed::SealedUdp,
    current: RwLock<Arc<ChitchatHandle>>,
    /// This node's keys as last published, for a restart.
    published: Mutex<BTreeMap<String, String>>,
    pub stats: Arc<GossipStats>,
    supervisor: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Gossip {
    pub async fn start(cfg: GossipConfig, me: &PeerInfo, faults: Arc<Faults>) -> anyhow::Result<Arc<Gossip>> {
        let stats = Arc::new(GossipStats::default());
        let opener = Opener::new(cfg.key.clone(), &cfg.cluster_id, cfg.window.as_millis() as u64);
        let transport = sealed::SealedUdp {
            key: cfg.key.clone(),
            cluster_id: cfg.cluster_id.clone(),
            opener: Arc::new(Mutex::new(opener)),
            faults,
            stats: stats.clone(),
            log: Arc::new(RateLimited::new(Duration::from_secs(10))),
        };
        let initial: BTreeMap<String, String> = [
            (KEY_PEER, me.peer.clone()),
            (KEY_INGRESS, me.addr.clone()),
            (KEY_ADMIN, me.admin_addr.clone()),
            (KEY_MODE, me.mode.clone()),
            (KEY_SERVICES, String::new()),
            (KEY_LOAD, "0".to_string()),
            (KEY_PARTITIONS, me.partitions.to_string()),
            // This build's, whatever `me` says.
            (KEY_RELEASE, env!("CARGO_PKG_VERSION").to_string()),
            (KEY_PROTOCOL, crate::transport::PROTOCOL.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let handle = spawn(&cfg, &transport, &initial).await?;
        stats.running.store(true, std::sync::atomic::Ordering::Relaxed);
        let gossip = Arc::new(Gossip {
            cfg,
            transport,
            current: RwLock::new(Arc::new(handle)),
            published: Mutex::new(initial),
            stats,
            supervisor: Mutex::new(None),
        });
        let task = tokio::spawn(supervise(Arc::downgrade(&gossip)));
        *gossip.supervisor.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        Ok(gossip)
    }

    /// Whether the gossip task is running (otherwise this node's view is not current).
    pub fn running(&self) -> bool {
        self.stats.running.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Set one of this node's keys (only when it changed, so gossip stays quiet).
    pub async fn publish(&self, key: &str, value: &str) {
        self.published.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_string(), value.to_string());
        let handle = self.current.read().await.clone();
        let cc = handle.chitchat();
        let mut cc = cc.lock().await;
        let state = cc.self_node_state();
        if state.get(key) != Some(value) {
            state.set(key, value);
        }
    }

    /// Live nodes by name, this node included.
    pub async fn live(&self) -> BTreeMap<String, PeerInfo> {
        let handle = self.current.read().await.clone();
        let cc = handle.chitchat();
        let cc = cc.lock().await;
        let mut out = BTreeMap::new();
        let mut generation: BTreeMap<String, u64> = BTreeMap::new();
        for id in cc.live_nodes() {
            let Some(state) = cc.node_state(id) else { continue };
            let Some(peer) = state.get(KEY_PEER) else { continue };
            let info = PeerInfo {
                id: id.node_id.to_string(),
                peer: peer.to_string(),
                addr: state.get(KEY_INGRESS).unwrap_or_default().to_string(),
                admin_addr: state.get(KEY_ADMIN).unwrap_or_default().to_string(),
                mode: state.get(KEY_MODE).unwrap_or_default().to_string(),
                services: state
                    .get(KEY_SERVICES)
                    .unwrap_or_default()
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
                load: state.get(KEY_LOAD).and_then(|l| l.parse().ok()).unwrap_or(0),
                // Nodes from before the setting do not say: theirs was fixed at 256.
                partitions: state
                    .get(KEY_PARTITIONS)
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(crate::grid::part::DEFAULT_PARTITIONS),
                release: state.get(KEY_RELEASE).unwrap_or_default().to_string(),
                protocol: state.get(KEY_PROTOCOL).and_then(|p| p.parse().ok()),
                formation: state.get(KEY_FORMATION).filter(|f| !f.is_empty()).map(str::to_string),
            };
            // Two live incarnations of one name (a quick restart): keep the newer.
            let newest = generation.entry(info.id.clone()).or_insert(id.generation_id);
            if *newest > id.generation_id {
                continue;
            }
            *newest = id.generation_id;
            out.insert(info.id.clone(), info);
        }
        out
    }

    /// Stop gossip and wait (a little) for the task to end, so its port is free.
    pub async fn shutdown(&self) {
        if let Some(t) = self.supervisor.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
        let handle = self.current.read().await.clone();
        if handle.initiate_shutdown().is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), handle.termination_watcher()).await;
        }
        handle.abort();
    }
}

/// Watch the chitchat task; when it ends or freezes, restart it.
async fn supervise(gossip: std::sync::Weak<Gossip>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let Some(g) = gossip.upgrade() else { return };
        let handle = g.current.read().await.clone();
        let interval = g.cfg.interval;
        drop(g);
        let started = tokio::time::Instant::now();
        let why = tokio::select! {
            r = handle.termination_watcher() => match r {
                Ok(()) => return, // shut down on purpose
                Err(e) => format!("it ended: {e:#}"),
            },
            () = frozen(&handle, interval) => format!("it made no progress for {:?}", stall_limit(interval)),
        };
        let Some(g) = gossip.upgrade() else { return };
        g.stats.running.store(false, std::sync::atomic::Ordering::Relaxed);
        g.stats.restarts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::error!(reason = %why, "the gossip task stopped; this node is dormant until gossip runs again");
        handle.abort();
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_millis(200);
        }
        loop {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            let initial = g.published.lock().unwrap_or_else(|e| e.into_inner()).clone();
            match spawn(&g.cfg, &g.transport, &initial).await {
                Ok(h) => {
                    *g.current.write().await = Arc::new(h);
                    // What was published while the new task started went to the old one.
                    let latest = g.published.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    for (k, v) in latest {
                        g.publish(&k, &v).await;
                    }
                    g.stats.running.store(true, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!("gossip restarted");
                    break;
                }
                Err(e) => tracing::error!(error = %format!("{e:#}"), "restarting gossip failed; retrying"),
            }
        }
    }
}

impl Drop for Gossip {
    fn drop(&mut self) {
        if let Some(t) = self.supervisor.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
    }
}

/// Resolves once the task's own heartbeat has not moved for [`stall_limit`].
async fn frozen(handle: &ChitchatHandle, interval: Duration) {
    let limit = stall_limit(interval);
    let mut last = None;
    let mut since = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(interval.max(Duration::from_millis(50))).await;
        let cc = handle.chitchat();
        // A lock held for good counts as no progress too.
        let beat = match tokio::time::timeout(limit, cc.lock()).await {
            Ok(mut cc) => Some(cc.self_node_state().heartbeat()),
            Err(_) => None,
        };
        if beat.is_some() && beat != last {
            last = beat;
            since = tokio::time::Instant::now();
        } else if since.elapsed() >= limit {
            return;
        }
    }
}

async fn spawn(
    cfg: &GossipConfig,
    transport: &sealed::SealedUdp,
    keys: &BTreeMap<String, String>,
) -> anyhow::Result<ChitchatHandle> {
    // A new generation per start: peers take the newest incarnation of a name.
    let generation = sealed::now_ms();
    let config = ChitchatConfig {
        chitchat_id: ChitchatId::new(cfg.node_id.clone(), generation, cfg.advertise),
        cluster_id: cfg.cluster_id.clone(),
        gossip_interval: cfg.interval,
        listen_addr: cfg.listen,
        seed_nodes: cfg.seeds.clone(),
        failure_detector_config: FailureDetectorConfig {
            phi_threshold: cfg.phi_threshold,
            initial_interval: cfg.interval,
            // Forget dead incarnations after a while; a live node is re-learnt at once.
            dead_node_grace_period: Duration::from_secs(3600),
            ..Default::default()
        },
        marked_for_deletion_grace_period: Duration::from_secs(3600),
        catchup_callback: None,
        extra_liveness_predicate: None,
        protocol_version: chitchat::ProtocolVersion::V0,
    };
    let initial = keys.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    chitchat::spawn_chitchat(config, initial, transport).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_udp() -> SocketAddr {
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
    }

    async fn node(name: &str, key: [u8; 32], at: SocketAddr, seed: SocketAddr) -> Arc<Gossip> {
        let cfg = GossipConfig {
            node_id: name.into(),
            listen: at,
            advertise: at,
            seeds: vec![seed.to_string()],
            interval: Duration::from_millis(50),
            phi_threshold: 8.0,
            cluster_id: "ng-test".into(),
            key: GossipKey::from_bytes(key),
            window: Duration::from_secs(10),
        };
        let me =
            PeerInfo { id: name.into(), peer: format!("{name}-peer"), mode: "joining".into(), ..Default::default() };
        Gossip::start(cfg, &me, Arc::new(Faults::default())).await.unwrap()
    }

    async fn sees(g: &Gossip, names: &[&str]) -> bool {
        let live = g.live().await;
        names.iter().all(|n| live.contains_key(*n))
    }

    /// Real chitchat traffic through the sealed transport: nodes with the key find each
    /// other (every packet passes the check), a node with another key never shows up, and
    /// a restarted gossip task (a second incarnation of a name) is taken in too.
    #[tokio::test]
    async fn sealed_gossip_converges_and_keeps_strangers_out() {
        let (a_at, b_at, c_at) = (free_udp(), free_udp(), free_udp());
        let a = node("a", [3; 32], a_at, b_at).await;
        let b = node("b", [3; 32], b_at, a_at).await;
        let c = node("c", [4; 32], c_at, a_at).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !(sees(&a, &["a", "b"]).await && sees(&b, &["a", "b"]).await) {
            assert!(tokio::time::Instant::now() < deadline, "a and b did not find each other");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // c keeps gossiping at a; a drops every packet as forged and never lists c.
        let forged = |g: &Gossip| g.stats.rejected().into_iter().find(|(r, _)| *r == "forged").unwrap().1;
        while forged(&a) < 5 {
            assert!(tokio::time::Instant::now() < deadline, "c's packets did not arrive");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!a.live().await.contains_key("c"));
        assert_eq!(c.live().await.keys().collect::<Vec<_>>(), ["c"]);
        // b's gossip restarts (as its supervisor would): a takes in the new incarnation.
        b.current.read().await.abort();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while b.stats.restarts.load(std::sync::atomic::Ordering::Relaxed) == 0 || !sees(&b, &["a", "b"]).await {
            assert!(tokio::time::Instant::now() < deadline, "b's gossip did not restart and rejoin");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        b.publish(KEY_MODE, "follower").await;
        while a.live().await.get("b").map(|p| p.mode.as_str()) != Some("follower") {
            assert!(tokio::time::Instant::now() < deadline, "a did not see b's new incarnation");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for g in [&a, &b] {
            for (reason, n) in g.stats.rejected() {
                if reason != "forged" {
                    assert_eq!(n, 0, "cluster gossip dropped as {reason}");
                }
            }
        }
        for g in [a, b, c] {
            g.shutdown().await;
        }
    }
}
