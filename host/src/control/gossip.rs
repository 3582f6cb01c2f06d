//! Membership and failure detection with chitchat (UDP gossip, phi accrual detector).
//!
//! Each node publishes its addresses, mode, load and the services it has instances of.
//! Nodes are matched by name: a restarted node gossips under a new generation and its old
//! incarnation is simply declared dead.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpTransport};
use chitchat::{ChitchatConfig, ChitchatEnvelope, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use serde::Serialize;

use super::network::Faults;

pub const KEY_PEER: &str = "peer";
pub const KEY_INGRESS: &str = "ingress";
pub const KEY_ADMIN: &str = "admin";
pub const KEY_MODE: &str = "mode";
pub const KEY_SERVICES: &str = "services";
pub const KEY_LOAD: &str = "load";

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
}

pub struct GossipConfig {
    pub node_id: String,
    pub listen: SocketAddr,
    /// What peers gossip to (`listen`, unless that is a wildcard address).
    pub advertise: SocketAddr,
    pub seeds: Vec<String>,
    pub interval: Duration,
    pub phi_threshold: f64,
    pub cluster_id: String,
}

pub struct Gossip {
    handle: ChitchatHandle,
}

impl Gossip {
    pub async fn start(cfg: GossipConfig, me: &PeerInfo, faults: Arc<Faults>) -> anyhow::Result<Gossip> {
        let generation = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(cfg.node_id.clone(), generation, cfg.advertise),
            cluster_id: cfg.cluster_id,
            gossip_interval: cfg.interval,
            listen_addr: cfg.listen,
            seed_nodes: cfg.seeds,
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
        let initial = vec![
            (KEY_PEER.to_string(), me.peer.clone()),
            (KEY_INGRESS.to_string(), me.addr.clone()),
            (KEY_ADMIN.to_string(), me.admin_addr.clone()),
            (KEY_MODE.to_string(), me.mode.clone()),
            (KEY_SERVICES.to_string(), String::new()),
            (KEY_LOAD.to_string(), "0".to_string()),
        ];
        let handle = chitchat::spawn_chitchat(config, initial, &FaultyUdp { faults }).await?;
        Ok(Gossip { handle })
    }

    /// Set one of this node's keys (only when it changed, so gossip stays quiet).
    pub async fn publish(&self, key: &str, value: &str) {
        let cc = self.handle.chitchat();
        let mut cc = cc.lock().await;
        let state = cc.self_node_state();
        if state.get(key) != Some(value) {
            state.set(key, value);
        }
    }

    /// Live nodes by name, this node included.
    pub async fn live(&self) -> BTreeMap<String, PeerInfo> {
        let cc = self.handle.chitchat();
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

    pub fn shutdown(&self) {
        let _ = self.handle.initiate_shutdown();
    }
}

/// UDP, except that an isolated node neither sends nor receives.
struct FaultyUdp {
    faults: Arc<Faults>,
}

struct FaultySocket {
    inner: Box<dyn Socket>,
    faults: Arc<Faults>,
}

#[async_trait::async_trait]
impl Transport for FaultyUdp {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let inner = UdpTransport.open(listen_addr).await?;
        Ok(Box::new(FaultySocket { inner, faults: self.faults.clone() }))
    }
}

#[async_trait::async_trait]
impl Socket for FaultySocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner.local_addr()
    }

    async fn send(&mut self, to: SocketAddr, envelope: ChitchatEnvelope) -> anyhow::Result<SendOutcome> {
        if self.faults.isolated() {
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        self.inner.send(to, envelope).await
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let got = self.inner.recv().await?;
            if !self.faults.isolated() {
                return Ok(got);
            }
        }
    }
}
