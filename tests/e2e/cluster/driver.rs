//! The scenario driver: a cluster of `nanogrid serve` processes on loopback, each with its
//! own data dir and fixed peer/gossip ports (so a restarted node is the same member), and
//! the steps scenarios are written in: start, stop, kill -9, cut off, heal, wait until.
//! Scenarios that cut nodes off start their cluster in network namespaces
//! ([`Cluster::start_in_namespaces`], root only): a cut is then packets dropped by the
//! kernel (the fault campaign's `net.rs`), which the whole node sees, ingress
//! forwarding included.
//! Every cluster has its own secrets, made with `nanogrid cluster init` and `cluster
//! add-node` as a user would.

use bytes::Bytes;
use http::Method;
use nanogrid::api::{ClusterView, GridView, Role};
use nanogrid::client::{Client, Reply};

use crate::support::TestNode;
pub use crate::support::eventually;

#[path = "../../../chaos/src/net.rs"]
#[allow(dead_code)]
mod net;

pub struct Member {
    pub name: String,
    pub peer: u16,
    pub gossip: u16,
    pub node: TestNode,
}

pub struct Cluster {
    pub nodes: Vec<Member>,
    seeds: String,
    /// Extra `serve` flags and environment every node gets.
    extra: Vec<String>,
    env: Vec<(String, String)>,
    http: Client,
    /// Config files of nodes started from one.
    configs: Vec<tempfile::TempDir>,
    /// The cluster's secrets (`nanogrid cluster init`).
    pub secrets: tempfile::TempDir,
    /// The namespaces the nodes run in, if they do (declared after the nodes: removed
    /// once they are gone).
    net: Option<net::Net>,
    /// This scenario's turn (declared last: given back once everything above is gone).
    _turn: tokio::sync::OwnedSemaphorePermit,
}

/// Cluster scenarios take turns: each runs three to five node processes with failure
/// detectors and election timers, and two at once on a two-core machine starve each
/// other's heartbeats (elections and failovers then take longer than the scenarios
/// allow). Single-node tests still run beside them.
async fn turn() -> tokio::sync::OwnedSemaphorePermit {
    static TURNS: std::sync::LazyLock<std::sync::Arc<tokio::sync::Semaphore>> =
        std::sync::LazyLock::new(|| std::sync::Arc::new(tokio::sync::Semaphore::new(1)));
    TURNS.clone().acquire_owned().await.expect("the semaphore is never closed")
}

/// Run the `nanogrid` binary (a CLI command that needs no node) and check it succeeded.
pub fn nanogrid(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nanogrid")).args(args).output().expect("running nanogrid");
    assert!(out.status.success(), "nanogrid {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A new cluster directory with certificates for `nodes`.
pub fn cluster_secrets(nodes: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cluster");
    let p = path.to_str().expect("utf-8 path");
    let out = nanogrid(&["cluster", "init", p]);
    assert!(out.contains("created cluster ng-"), "{out}");
    for n in nodes {
        nanogrid(&["cluster", "add-node", n, p]);
    }
    dir
}

/// Fixed ports for peer and gossip listeners come from below the kernel's ephemeral range
/// (32768 and up on Linux), so an outgoing connection cannot take one between this check
/// and the node binding it; a counter keeps the tests of this process apart.
fn fixed_port(bindable: impl Fn(u16) -> bool) -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = 20000 + (std::process::id() % 50) as u16 * 200;
    loop {
        let port = start + NEXT.fetch_add(1, Ordering::Relaxed) % 12000;
        let port = if port >= 32000 { port - 12000 } else { port };
        if bindable(port) {
            return port;
        }
    }
}

fn free_tcp_port() -> u16 {
    fixed_port(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
}

fn free_udp_port() -> u16 {
    fixed_port(|p| std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok())
}

impl Cluster {
    /// Start `n` nodes named n1..nN that all seed from each other.
    pub async fn start(n: usize) -> Cluster {
        Self::start_with(n, &[]).await
    }

    /// [`Cluster::start`] with extra `serve` flags on every node.
    pub async fn start_with(n: usize, extra: &[&str]) -> Cluster {
        Self::start_with_env(n, extra, &[]).await
    }

    /// [`Cluster::start_with`] with environment variables for every node.
    pub async fn start_with_env(n: usize, extra: &[&str], env: &[(&str, &str)]) -> Cluster {
        let turn = turn().await;
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_tcp_port(), free_udp_port())).collect();
        let seeds = ports.iter().map(|(_, g)| format!("127.0.0.1:{g}")).collect::<Vec<_>>().join(",");
        let extra = extra.iter().map(|s| s.to_string()).collect();
        let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let secrets = cluster_secrets(&names.iter().map(String::as_str).collect::<Vec<_>>());
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut c = Cluster {
            nodes: Vec::new(),
            seeds,
            extra,
            env,
            http: Client::new(),
            configs: Vec::new(),
            secrets,
            net: None,
            _turn: turn,
        };
        for (peer, gossip) in ports {
            c.spawn(peer, gossip).await;
        }
        c
    }

    /// The gossip addresses every node seeds from (`--seeds`).
    pub fn seeds(&self) -> &str {
        &self.seeds
    }

    /// `n` nodes, each in its own network namespace on a bridge (root only), so that
    /// [`Cluster::isolate`] cuts a node off with real dropped packets.
    pub async fn start_in_namespaces(n: usize) -> Cluster {
        Self::namespaces(n, false, n).await
    }

    /// [`Cluster::start_in_namespaces`], every node cut off from the others before it
    /// starts (heal with `isolate(_, false)`); only the first `started` are started
    /// (`restart(i)` starts another).
    pub async fn start_in_namespaces_apart(n: usize, started: usize) -> Cluster {
        Self::namespaces(n, true, started).await
    }

    /// [`Cluster::start_in_namespaces`], only the first `started` nodes started
    /// (`restart(i)` starts another).
    pub async fn start_in_namespaces_some(n: usize, started: usize) -> Cluster {
        Self::namespaces(n, false, started).await
    }

    async fn namespaces(n: usize, apart: bool, started: usize) -> Cluster {
        use std::sync::atomic::{AtomicU8, Ordering};
        let turn = turn().await;
        static K: AtomicU8 = AtomicU8::new(0);
        let (pid, k) = (std::process::id(), K.fetch_add(1, Ordering::Relaxed));
        let subnet = ((pid % 100) * 2 + u32::from(k)) % 250;
        let net = net::Net::create_in(&format!("nge{}{k}", pid % 1000), 78, subnet as u8, n)
            .expect("network namespaces for the cluster (run the suite as root)");
        let seeds = (0..n).map(|i| format!("{}:7002", net.ip(i))).collect::<Vec<_>>().join(",");
        let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let secrets = cluster_secrets(&names.iter().map(String::as_str).collect::<Vec<_>>());
        for i in (0..n).filter(|_| apart) {
            for j in (0..n).filter(|&j| j != i) {
                net.block(i, j).unwrap();
            }
        }
        let mut c = Cluster {
            nodes: Vec::new(),
            seeds,
            extra: Vec::new(),
            env: Vec::new(),
            http: Client::new(),
            configs: Vec::new(),
            secrets,
            net: None,
            _turn: turn,
        };
        for (i, name) in names.into_iter().enumerate() {
            let ip = net.ip(i);
            let args = c.member_args(&name, &format!("{ip}:7001"), &format!("{ip}:7002"));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut node = TestNode::unstarted(true, &args);
            node.netns = Some((net.ns(i), ip));
            if i < started {
                node.restart();
            }
            c.nodes.push(Member { name, peer: 7001, gossip: 7002, node });
        }
        c.net = Some(net);
        c
    }

    /// The cluster directory (`--cluster-dir`).
    pub fn cluster_dir(&self) -> std::path::PathBuf {
        self.secrets.path().join("cluster")
    }

    /// A peer client with node `as_node`'s certificate, to speak to the nodes as that node
    /// does (mutual TLS against the cluster CA).
    pub fn peer_client(&self, as_node: &str) -> nanogrid::transport::PeerClient {
        let secrets = nanogrid::transport::secrets::ClusterSecrets::load(&self.cluster_dir(), as_node).unwrap();
        let tls = secrets.peer_tls().unwrap();
        nanogrid::transport::PeerClient::new(as_node, Some(tls.client))
    }

    /// Node `i`'s peer listener address.
    pub fn peer_addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[i].peer)
    }

    /// Issue a certificate for a node that is not in the cluster yet.
    pub fn add_certificate(&self, name: &str) {
        nanogrid(&["cluster", "add-node", name, self.cluster_dir().to_str().unwrap()]);
    }

    /// The `serve` flags that make a process member `name` of this cluster.
    fn member_args(&self, name: &str, peer: &str, gossip: &str) -> Vec<String> {
        let dir = self.cluster_dir().to_str().unwrap().to_string();
        [
            "--cluster-dir",
            &dir,
            "--node-id",
            name,
            "--peer-listen",
            peer,
            "--gossip-listen",
            gossip,
            "--seeds",
            &self.seeds,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    async fn spawn(&mut self, peer: u16, gossip: u16) -> usize {
        let name = format!("n{}", self.nodes.len() + 1);
        if !self.cluster_dir().join("nodes").join(&name).exists() {
            self.add_certificate(&name);
        }
        let args = self.member_args(&name, &format!("127.0.0.1:{peer}"), &format!("127.0.0.1:{gossip}"));
        let args: Vec<&str> = args.iter().chain(&self.extra).map(String::as_str).collect();
        let mut node = TestNode::unstarted(true, &args);
        node.env = self.env.clone();
        node.restart();
        self.nodes.push(Member { name, peer, gossip, node });
        self.nodes.len() - 1
    }

    /// Start one more node that seeds from the existing ones, with `extra` as its `serve`
    /// flags instead of the cluster's.
    pub async fn add_node_with(&mut self, extra: &[&str]) -> usize {
        let kept = std::mem::replace(&mut self.extra, extra.iter().map(|s| s.to_string()).collect());
        let i = self.spawn(free_tcp_port(), free_udp_port()).await;
        self.extra = kept;
        i
    }

    /// Start one more node that seeds from the existing ones, its cluster settings in a
    /// TOML config file (`serve --config`) instead of flags.
    pub async fn add_node_from_config(&mut self) -> usize {
        let (peer, gossip) = (free_tcp_port(), free_udp_port());
        let name = format!("n{}", self.nodes.len() + 1);
        self.add_certificate(&name);
        let seeds: Vec<String> = self.seeds.split(',').map(|s| format!("{s:?}")).collect();
        let toml = format!(
            "node_id = \"{name}\"\ncluster_dir = {:?}\npeer_listen = \"127.0.0.1:{peer}\"\ngossip_listen = \"127.0.0.1:{gossip}\"\nseeds = [{}]\nvoters = 3\ngossip_interval_ms = 200\n",
            self.cluster_dir(),
            seeds.join(", ")
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, toml).unwrap();
        let args = ["--config", path.to_str().unwrap()];
        let node = TestNode::start_with_args(true, &args).await;
        self.configs.push(dir);
        self.nodes.push(Member { name, peer, gossip, node });
        self.nodes.len() - 1
    }

    pub fn kill(&mut self, i: usize) {
        self.nodes[i].node.kill();
    }

    pub fn stop(&mut self, i: usize) {
        self.nodes[i].node.stop();
    }

    pub fn restart(&mut self, i: usize) {
        self.nodes[i].node.restart();
    }

    /// Cut node `i` off from the other nodes (every packet between them dropped, both
    /// ways; the test's own requests still reach it), or heal every cut.
    pub fn isolate(&self, i: usize, on: bool) {
        let net = self.net.as_ref().expect("cutting nodes off needs Cluster::start_in_namespaces");
        if !on {
            return net.heal().unwrap();
        }
        for j in (0..self.nodes.len()).filter(|&j| j != i) {
            net.block(i, j).unwrap();
            net.block(j, i).unwrap();
        }
    }

    /// Node `i` drops every TCP segment from the nodes `from` (their peer connections to
    /// it fail; gossip still passes), and nothing else: its earlier cuts are replaced at
    /// once. `isolate(_, false)` heals every cut.
    pub fn drop_tcp_from(&self, i: usize, from: &[usize]) {
        let net = self.net.as_ref().expect("cutting nodes off needs Cluster::start_in_namespaces");
        net.drop_tcp_from(i, from).unwrap();
    }

    /// [`Cluster::drop_tcp_from`], but connection attempts are refused at once (a reset).
    pub fn refuse_tcp_from(&self, i: usize, from: &[usize]) {
        let net = self.net.as_ref().expect("cutting nodes off needs Cluster::start_in_namespaces");
        net.refuse_tcp_from(i, from).unwrap();
    }

    /// `GET /v1/cluster` on node `i` (None if it does not answer).
    pub async fn status(&self, i: usize) -> Option<ClusterView> {
        let r = self.nodes[i].node.admin().get("/v1/cluster").await.ok()?;
        (r.status == 200).then(|| serde_json::from_slice(&r.body).ok()).flatten()
    }

    /// `GET /v1/experiments` on node `i` (`None` while it does not answer 200).
    pub async fn experiments(&self, i: usize) -> Option<nanogrid::api::ExperimentList> {
        self.typed(i, "/v1/experiments").await
    }

    /// `GET /v1/events?limit=LIMIT` on node `i`.
    pub async fn events(&self, i: usize, limit: usize) -> Option<nanogrid::api::EventList> {
        self.typed(i, &format!("/v1/events?limit={limit}")).await
    }

    /// `GET /v1/grid` on node `i` (Err while it is down or does not answer 200).
    pub async fn grid(&self, i: usize) -> anyhow::Result<GridView> {
        let r = self.nodes[i].node.admin().get("/v1/grid").await?;
        anyhow::ensure!(r.status == 200, "GET /v1/grid on {}: {}: {}", self.nodes[i].name, r.status, r.text());
        serde_json::from_slice(&r.body).map_err(|e| anyhow::anyhow!("not a grid: {e}: {}", r.text()))
    }

    /// A typed admin body from node `i`.
    async fn typed<T: serde::de::DeserializeOwned>(&self, i: usize, path: &str) -> Option<T> {
        let r = self.nodes[i].node.admin().get(path).await.ok()?;
        (r.status == 200).then(|| serde_json::from_slice(&r.body).ok()).flatten()
    }

    /// Node `id`'s role as node `i` shows it.
    pub async fn role(&self, i: usize, id: &str) -> Option<Role> {
        Some(self.status(i).await?.node(id)?.role)
    }

    pub async fn mode(&self, i: usize) -> Option<String> {
        Some(self.status(i).await?.mode)
    }

    /// The leader every node in `among` agrees on, when exactly one of them is leader.
    pub async fn agreed_leader(&self, among: &[usize]) -> Option<String> {
        let mut leader = None;
        let mut leaders = 0;
        for &i in among {
            let s = self.status(i).await?;
            let l = s.leader?;
            if leader.get_or_insert_with(|| l.clone()) != &l {
                return None;
            }
            if s.mode == "leader" {
                leaders += 1;
            }
            if !matches!(s.mode.as_str(), "leader" | "follower") {
                return None;
            }
        }
        (leaders == 1).then_some(leader).flatten()
    }

    pub fn index_of(&self, name: &str) -> usize {
        self.nodes.iter().position(|m| m.name == name).unwrap_or_else(|| panic!("no node {name}"))
    }

    /// A request through node `i`'s ingress (Err when the node is down).
    pub async fn call(&self, i: usize, method: Method, path: &str, body: &str) -> anyhow::Result<Reply> {
        let url = format!("{}{path}", self.nodes[i].node.ingress);
        self.http.send(method, &url, &[], Bytes::from(body.to_string())).await
    }

    pub async fn get(&self, i: usize, path: &str) -> anyhow::Result<Reply> {
        self.call(i, Method::GET, path, "").await
    }

    /// Instances per node of `service`, as node `i` sees the assignment (empty while the
    /// node has not applied the deploy yet).
    pub async fn placement(&self, i: usize, service: &str) -> Vec<(String, u64)> {
        let r = self.nodes[i].node.admin().get(&format!("/v1/services/{service}")).await.unwrap();
        if r.status == 404 {
            return Vec::new();
        }
        let v: nanogrid::api::ServiceDetail = crate::support::parse(&r);
        v.status.nodes.into_iter().map(|n| (n.node, u64::from(n.instances))).collect()
    }
}
