//! The cluster: membership (chitchat gossip), the control-plane log (openraft over the
//! node's RocksDB), node modes, the Service Manager (every node) and the Cluster Manager
//! (leader only). DESIGN.md sections 1 and 6.
//!
//! A node started without `--peer-listen` has no [`Cluster`] and runs in `single` mode.
//! Clustered nodes write every admin change through Raft: any node validates the change
//! against its copy of the committed state, forwards it to the leader, waits until its own
//! state machine has applied it, and reconciles its services before answering.

pub mod assignment;
mod contact;
pub mod events;
pub mod experiment;
mod foreign;
pub mod formation;
mod gossip;
pub mod grid;
mod k8s_scaler;
pub mod leader;
mod manager;
pub mod membership;
pub mod network;
pub mod partitions;
pub mod peer;
pub mod placement;
pub mod plane;
pub mod ready;
mod remote;
pub mod reprovision;
pub mod scaling;
pub mod service_manager;
mod store;
pub mod traffic;
pub mod traffic_sampler;
pub mod types;
pub mod views;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use serde::Serialize;

pub use gossip::PeerInfo;
pub use network::{GraphReq, WriteReply};
pub use types::{Command, ControlState, Member};

pub use crate::transport::Faults;
use crate::transport::secrets::ClusterSecrets;
use crate::transport::server::PeerStats;
use crate::transport::tls::PeerTls;
use crate::transport::{PeerClient, PeerTarget};

use crate::grid::Grid;
use crate::services::{AdminError, Deploy, Registry, ServiceSpec, spec::ServiceRequest};
use gossip::{Gossip, GossipConfig};
use membership::{Membership, MembershipDeps};
use service_manager::{ServiceManager, ServiceManagerDeps};
pub use store::LogGrowth;
use store::{LogStore, StateMachine};
use types::{Control, raft_id};

/// How a node takes part in its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No cluster configured.
    Single,
    /// Clustered but not part of a majority (or not yet a member): serves nothing.
    Dormant,
    Follower,
    Leader,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Single => "single",
            Mode::Dormant => "dormant",
            Mode::Follower => "follower",
            Mode::Leader => "leader",
        }
    }
}

/// `nanogrid serve` cluster settings.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub peer_listen: SocketAddr,
    pub gossip_listen: SocketAddr,
    /// Gossip addresses of other nodes (`host:port`).
    pub seeds: Vec<String>,
    /// How many members vote (the rest are learners).
    pub voters: usize,
    /// How many joining nodes must see each other before a brand-new cluster forms (1: a
    /// lone node forms one after gossip settles; the number of nodes started together
    /// keeps nodes that cannot see each other yet from forming separate clusters).
    pub bootstrap_expect: usize,
    pub gossip_interval: Duration,
    /// chitchat's phi accrual threshold: higher detects failures later but more surely.
    pub phi_threshold: f64,
    /// Allow `POST /v1/debug/gossip` (a scenario test only).
    pub fault_injection: bool,
    /// The address other nodes dial this one at, when a listener binds a wildcard address.
    pub advertise_host: Option<std::net::IpAddr>,
    /// Build a control-plane snapshot every this many log entries, and keep this many
    /// entries behind it (a node further behind catches up from the snapshot).
    pub snapshot_every: u64,
    /// Replicas per kv partition (capped at the number of members).
    pub replication: usize,
    /// Partition-log entries kept per partition (a replica further behind gets a snapshot).
    pub grid_log_keep: u64,
    /// A node calling a service at least this often (calls per second, all its callers
    /// together) is hot for it: placement puts the service's odd instances there first.
    /// 0 turns co-location off.
    pub colocate_min_rate: f64,
    /// How often the leader samples call traffic (the rate is measured over this window).
    pub traffic_window: Duration,
    /// The cluster's secrets (`nanogrid cluster init`): CA, gossip key, this node's
    /// certificate.
    pub cluster_dir: std::path::PathBuf,
    /// Peer RPC in cleartext, for benchmarks comparing with TLS; refused unless every
    /// cluster listener is on loopback.
    pub plaintext_peers: bool,
    /// How far a gossip packet's clock may be from this node's before it is dropped.
    pub gossip_window: Duration,
    /// The largest component fetched from a peer (the node's upload limit).
    pub max_component_bytes: usize,
    /// Autoscaling of instances and nodes.
    pub scaling: scaling::ScalingConfig,
    /// Traffic-driven re-provisioning and its experiments.
    pub experiments: experiment::ExperimentConfig,
}

/// The address other nodes should use for a listener bound to `bound`.
pub fn advertised(bound: SocketAddr, host: Option<std::net::IpAddr>, what: &str) -> anyhow::Result<SocketAddr> {
    if !bound.ip().is_unspecified() {
        return Ok(bound);
    }
    match host {
        Some(h) => Ok(SocketAddr::new(h, bound.port())),
        None => anyhow::bail!(
            "the {what} listener binds {bound}, which other nodes cannot dial; pass --advertise-host with this node's address on the cluster network"
        ),
    }
}

impl ClusterConfig {
    pub fn new(peer_listen: SocketAddr, gossip_listen: SocketAddr) -> Self {
        ClusterConfig {
            peer_listen,
            gossip_listen,
            seeds: Vec::new(),
            voters: 3,
            bootstrap_expect: 1,
            gossip_interval: Duration::from_millis(200),
            phi_threshold: 8.0,
            fault_injection: false,
            advertise_host: None,
            snapshot_every: 5000,
            replication: crate::grid::part::DEFAULT_REPLICATION,
            grid_log_keep: crate::grid::DEFAULT_LOG_KEEP,
            colocate_min_rate: 5.0,
            traffic_window: Duration::from_secs(10),
            cluster_dir: std::path::PathBuf::from("cluster"),
            plaintext_peers: false,
            gossip_window: Duration::from_secs(10),
            max_component_bytes: 64 << 20,
            scaling: scaling::ScalingConfig::default(),
            experiments: experiment::ExperimentConfig::default(),
        }
    }
}

/// Why a cluster write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "this node is not part of a majority of the cluster (mode {0}); the change was not made: retry on another node or once the cluster has a quorum"
    )]
    NoQuorum(&'static str),
    #[error(
        "the cluster did not commit the change within {0:?} (no leader reachable); it may still apply: check GET /v1/services"
    )]
    Timeout(Duration),
    #[error("{0}")]
    Internal(String),
}

impl From<ClusterError> for AdminError {
    fn from(e: ClusterError) -> Self {
        AdminError::Unavailable(e.to_string())
    }
}

pub struct Cluster {
    pub name: String,
    pub config: ClusterConfig,
    pub raft: openraft::Raft<Control>,
    pub peers: PeerClient,
    pub faults: Arc<Faults>,
    pub registry: Arc<Registry>,
    /// The cluster's id, this node's TLS and what the peer listener refused.
    pub security: SecurityState,
    /// What the Raft log took in (entries, bytes) since the node started.
    pub log_growth: Arc<store::LogGrowth>,
    /// Which formation of the cluster this node's Raft state belongs to.
    pub formation: Arc<formation::Formation>,
    sm: StateMachine,
    /// The gossip view and this node's mode (its own loop; owns gossip).
    membership: Membership,
    /// This node's Service Manager (its loop, and what a deploy waits for: [`ready`]).
    pub services: ServiceManager,
    rotor: AtomicU64,
    /// The leader's Partition Manager (its state between steps).
    partitions: partitions::PartitionManager,
    /// How the grid reaches other nodes (attached to the replicas; owns its report tasks).
    grid_net: Arc<grid::GridNet>,
    /// Calls per second per (calling node, callee), sampled by the leader.
    traffic: traffic_sampler::TrafficSampler,
    /// The leader's autoscaler and node plan (its own loop).
    autoscaling: scaling::Autoscaling,
    /// The leader's experiments (its own loop judges them).
    experiments: reprovision::Experiments,
    /// Warnings about nodes whose grid has another partition count (once in a while).
    mismatch_log: crate::ratelog::RateLimited,
}

/// The cluster's identity and the peer listener's security, as this node holds them.
pub struct SecurityState {
    /// The cluster's id (inside every sealed gossip packet).
    pub cluster_id: String,
    /// TLS of the peer listener and of calls to peers (`None` in cleartext benchmark mode).
    pub tls: Option<PeerTls>,
    /// When this node's certificate expires (seconds since the epoch).
    pub cert_expires: i64,
    /// What the peer listener refused.
    pub stats: Arc<PeerStats>,
}

const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Open the control-plane log and state machine in the node's store and start Raft over
/// them (not yet a member of anything: bootstrap or a leader adds it).
async fn open_raft(
    name: &str,
    config: &ClusterConfig,
    peers: &PeerClient,
    grid: Arc<Grid>,
    formation: Arc<formation::Formation>,
) -> anyhow::Result<(openraft::Raft<Control>, StateMachine, Arc<LogGrowth>)> {
    let log = LogStore::open(grid.clone()).await?;
    let log_growth = log.growth.clone();
    let sm = StateMachine::open(grid).await?;
    let raft_config = openraft::Config {
        cluster_name: "nanogrid".into(),
        heartbeat_interval: 100,
        election_timeout_min: 600,
        election_timeout_max: 1200,
        install_snapshot_timeout: 2000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_every),
        max_in_snapshot_log_to_keep: config.snapshot_every,
        ..Default::default()
    }
    .validate()?;
    let network = network::Network { client: peers.clone(), formation };
    let raft = openraft::Raft::new(raft_id(name), Arc::new(raft_config), network, log, sm.clone()).await?;
    Ok((raft, sm, log_growth))
}

fn gossip_config(name: &str, config: &ClusterConfig, secrets: &ClusterSecrets) -> anyhow::Result<GossipConfig> {
    Ok(GossipConfig {
        node_id: name.to_string(),
        listen: config.gossip_listen,
        advertise: advertised(config.gossip_listen, config.advertise_host, "gossip")?,
        seeds: config.seeds.clone(),
        interval: config.gossip_interval,
        phi_threshold: config.phi_threshold,
        cluster_id: secrets.cluster_id.clone(),
        key: secrets.gossip_key.clone(),
        window: config.gossip_window,
    })
}

impl Cluster {
    /// Open the Raft storage, start gossip and Raft. The caller serves the peer listener
    /// with [`peer::handle`] and runs [`Cluster::run`].
    pub async fn start(
        name: &str,
        config: ClusterConfig,
        secrets: &ClusterSecrets,
        me: PeerInfo,
        grid: Arc<Grid>,
        registry: Arc<Registry>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<Arc<Cluster>> {
        let faults = Arc::new(Faults::default());
        let tls = if config.plaintext_peers { None } else { Some(secrets.peer_tls()?) };
        let peers = PeerClient::new(name, tls.as_ref().map(|t| t.client.clone()));
        let formation = formation::Formation::open(grid.clone()).await?;
        let (raft, sm, log_growth) = open_raft(name, &config, &peers, grid, formation.clone()).await?;
        let initialized = raft.is_initialized().await.map_err(|e| anyhow::anyhow!("reading Raft's state: {e}"))?;
        formation.drop_unused(initialized).await?;
        let gossip = Gossip::start(gossip_config(name, &config, secrets)?, &me, faults.clone()).await?;
        let membership = Membership::spawn(
            MembershipDeps {
                name: name.to_string(),
                raft: raft.clone(),
                sm: sm.clone(),
                registry: registry.clone(),
                gossip: gossip.clone(),
                gossip_interval: config.gossip_interval,
                voters: config.voters,
                bootstrap_expect: config.bootstrap_expect,
                formation: formation.clone(),
            },
            stop.clone(),
        );
        let services = ServiceManager::spawn(
            ServiceManagerDeps {
                name: name.to_string(),
                sm: sm.clone(),
                registry: registry.clone(),
                peers: peers.clone(),
                live: membership.live().clone(),
                gossip: gossip.clone(),
                max_component_bytes: config.max_component_bytes,
            },
            stop.clone(),
        );
        let sampling =
            traffic_sampler::TrafficConfig { window: config.traffic_window, min_rate: config.colocate_min_rate };
        let (scaling, experiments) = (config.scaling.clone(), config.experiments.clone());
        let cluster = Arc::new_cyclic(|me: &std::sync::Weak<Cluster>| Cluster {
            autoscaling: scaling::Autoscaling::spawn(scaling, me.clone(), stop.clone()),
            experiments: reprovision::Experiments::spawn(experiments, me.clone(), stop.clone()),
            traffic: traffic_sampler::TrafficSampler::spawn(sampling, me.clone(), stop),
            grid_net: Arc::new(grid::GridNet::new(me.clone())),
            name: name.to_string(),
            config,
            raft,
            peers,
            faults,
            registry,
            security: SecurityState {
                cluster_id: secrets.cluster_id.clone(),
                tls,
                cert_expires: secrets.node_cert_expires,
                stats: Arc::new(PeerStats::default()),
            },
            log_growth,
            formation,
            sm,
            membership,
            services,
            rotor: AtomicU64::new(0),
            partitions: Default::default(),
            mismatch_log: crate::ratelog::RateLimited::new(Duration::from_secs(30)),
        });
        cluster.registry.grid().replicas().attach(cluster.grid_net.clone());
        Ok(cluster)
    }

    /// Gossip counters (sealed packets dropped by reason, restarts).
    pub fn gossip_stats(&self) -> &gossip::GossipStats {
        self.membership.gossip_stats()
    }

    /// Whether the gossip task runs (a node whose gossip stopped is dormant).
    pub fn gossip_running(&self) -> bool {
        self.membership.gossip().running()
    }

    pub fn mode(&self) -> Mode {
        self.membership.mode()
    }

    /// Live nodes as gossip last showed them (this node included).
    pub fn live(&self) -> BTreeMap<String, PeerInfo> {
        self.membership.live().get()
    }

    /// Other live, serving nodes that have instances of `service`:
    /// those gossip shows serving it first (least loaded first), then those the committed
    /// assignment gives instances (gossip may lag a deploy by a few rounds). Each group
    /// is rotated before sorting, so equally loaded nodes share forwarded requests.
    pub fn holders(&self, service: &str) -> Vec<PeerTarget> {
        let state = self.sm.current();
        // Only members that were not removed: a removed node keeps its certificate and the
        // gossip key, and may still gossip that it serves.
        let members = self.member_names();
        let ok = |p: &PeerInfo| {
            p.id != self.name
                && p.mode != Mode::Dormant.as_str()
                && members.contains(&p.id)
                && !state.state.removed.contains(&p.id)
        };
        let n = self.rotor.fetch_add(1, Ordering::Relaxed) as usize;
        // Per forwarded request: the view is read in place, not copied.
        self.membership.live().read(|live| {
            let (mut serving, mut assigned) = (Vec::new(), Vec::new());
            for p in live.values().filter(|p| ok(p)) {
                if p.services.iter().any(|s| s == service) {
                    serving.push(p);
                } else if state.state.slots(service, &p.id) > 0 {
                    assigned.push(p);
                }
            }
            for group in [&mut serving, &mut assigned] {
                if !group.is_empty() {
                    let k = n % group.len();
                    group.rotate_left(k);
                }
            }
            serving.sort_by_key(|p| p.load);
            serving.iter().chain(&assigned).map(|p| PeerTarget { node: p.id.clone(), addr: p.peer.clone() }).collect()
        })
    }

    /// Commit a command through Raft (forwarding to the leader) and wait until this node
    /// has applied it and reconciled its services. Every command is idempotent (it states
    /// a result, not a step), so retrying after a lost answer cannot apply a change twice.
    pub async fn write(&self, cmd: Command) -> Result<(), ClusterError> {
        let mode = self.mode();
        if mode == Mode::Dormant {
            return Err(ClusterError::NoQuorum(mode.as_str()));
        }
        let started = Instant::now();
        let deadline = started + WRITE_TIMEOUT;
        let index = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClusterError::Timeout(WRITE_TIMEOUT));
            }
            match tokio::time::timeout(left, self.raft.client_write(self.with_first_placement(cmd.clone()))).await {
                Err(_) => return Err(ClusterError::Timeout(WRITE_TIMEOUT)),
                Ok(Ok(r)) => {
                    self.announce_commit().await;
                    break r.log_id.index;
                }
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                    if let Some(leader) = f.leader_node {
                        let t = left.min(Duration::from_secs(5));
                        match self.peers.call(&leader.name, &leader.peer, &cmd, t).await {
                            Ok(r) => break r.index,
                            Err(e) => tracing::debug!(leader = %leader, error = %e, "forwarding a write failed"),
                        }
                    }
                }
                Ok(Err(e)) => return Err(ClusterError::Internal(e.to_string())),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let committed = started.elapsed();
        self.wait_applied(index, deadline).await?;
        let applied = started.elapsed();
        self.services.reconcile().await;
        tracing::debug!(index, ?committed, ?applied, reconciled = ?started.elapsed(), "write done");
        Ok(())
    }

    /// On the leader, after a commit: tell the followers now rather than at the next
    /// heartbeat (up to 100 ms later), so they apply it at once. A deploy waits for every
    /// node to serve it (`ready.rs`): one commit for a new service (its spec with its first
    /// placement), two for a redeploy that moves instances (the spec, then its placement).
    pub async fn announce_commit(&self) {
        if let Err(e) = self.raft.trigger().heartbeat().await {
            tracing::debug!(error = %e, "could not send the commit to followers early");
        }
    }

    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), ClusterError> {
        let mut rx = self.sm.subscribe();
        let wait = rx.wait_for(|s| s.last_applied.is_some_and(|l| l.index >= index));
        match tokio::time::timeout_at(deadline.into(), wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(ClusterError::Internal(e.to_string())),
            Err(_) => Err(ClusterError::Timeout(WRITE_TIMEOUT)),
        }
    }

    /// Deploy or replace a service cluster-wide.
    pub async fn put_service(&self, name: &str, req: ServiceRequest) -> Result<Deploy, AdminError> {
        crate::services::spec::validate_digest(&req.component).map_err(AdminError::BadRequest)?;
        self.services.ensure_component(&req.component).await?;
        let mut deploy = self.registry.validate_service(name, req).await?;
        self.write(Command::PutService { spec: Box::new(deploy.spec.clone()) }).await?;
        deploy.not_serving = self.await_serving(&deploy.spec).await;
        Ok(deploy)
    }

    pub async fn scale(&self, name: &str, instances: u32, max_queue: Option<u32>) -> Result<ServiceSpec, AdminError> {
        let spec = self.registry.scaled_spec(name, instances, max_queue)?;
        self.write(Command::PutService { spec: Box::new(spec.clone()) }).await?;
        self.await_serving(&spec).await;
        Ok(spec)
    }

    pub async fn delete(&self, name: &str) -> Result<ServiceSpec, AdminError> {
        let spec = self.registry.deletable(name)?;
        self.write(Command::DeleteService { name: name.to_string() }).await?;
        Ok(spec)
    }

    /// Decommission a node: it leaves the Raft membership and gets no instances again.
    pub async fn remove_node(&self, node: &str) -> Result<(), AdminError> {
        if !self.sm.current().membership.membership().nodes().any(|(_, m)| m.name == node) {
            return Err(AdminError::NotFound(format!("no node named {node:?} is a member of this cluster")));
        }
        self.write(Command::RemoveNode { name: node.to_string(), stop: false, at_ms: crate::services::now_ms() })
            .await?;
        Ok(())
    }

    /// Names of every member (voters and learners).
    pub fn member_names(&self) -> std::collections::BTreeSet<String> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        m.membership().nodes().map(|(_, member)| member.name.clone()).collect()
    }

    /// Members of the Raft configuration by name: (voters, learners).
    pub fn members(&self) -> (Vec<Member>, Vec<Member>) {
        membership::members(&self.raft)
    }

    /// Stop what the cluster runs besides its loops (those stop with the node's stop
    /// signal): its owners (the autoscaler with a node scaler run in progress and the
    /// experiments first, then the Service Manager, the traffic sampler, membership and
    /// with it gossip), the grid's report tasks and replicators, and Raft.
    pub async fn shutdown(&self) {
        // First the owners whose steps commit and read the others: a step in progress is
        // cut off here (every command is idempotent; the next leader decides again), not
        // left running against a Service Manager or gossip already stopped.
        self.autoscaling.shutdown().await;
        self.experiments.shutdown().await;
        self.services.shutdown().await;
        self.traffic.shutdown().await;
        self.membership.shutdown().await;
        self.grid_net.shutdown().await;
        let replicas = self.registry.grid().replicas();
        if tokio::time::timeout(Duration::from_secs(5), replicas.stop_replicators()).await.is_err() {
            tracing::warn!("the grid's replicators did not stop within 5 s; leaving them");
        }
        // Bounded: a Raft write waiting for room on a full disk (`store.rs`) would hold
        // the Raft core, and with it the shutdown, for as long as the disk stays full.
        if tokio::time::timeout(Duration::from_secs(10), self.raft.shutdown()).await.is_err() {
            tracing::warn!("Raft did not stop within 10 s (a write waiting for disk room?); leaving it");
        }
    }

    pub fn uptime(&self) -> Duration {
        self.membership.uptime()
    }
}

#[cfg(test)]
mod tests {
    use super::advertised;

    #[test]
    fn wildcard_listeners_need_an_advertised_host() {
        let bound = "0.0.0.0:7001".parse().unwrap();
        let err = advertised(bound, None, "peer").unwrap_err().to_string();
        assert!(err.contains("--advertise-host") && err.contains("0.0.0.0:7001"), "{err}");
        let host = Some("10.0.0.5".parse().unwrap());
        assert_eq!(advertised(bound, host, "peer").unwrap().to_string(), "10.0.0.5:7001");
        let specific = "127.0.0.1:9".parse().unwrap();
        assert_eq!(advertised(specific, host, "peer").unwrap(), specific);
    }
}
