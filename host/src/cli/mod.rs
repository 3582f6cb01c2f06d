//! The `nanogrid` command line: wiring only. `serve` and `up` run a node; the other
//! subcommands are clients of a node's admin API or ingress.

mod cluster_cmd;
mod commands;
mod dev;
mod experiments;
pub mod new;
mod node_config;
mod trace;
mod up;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "nanogrid",
    version,
    about = "Run WebAssembly nanoservices: a node that hosts them, and the commands to manage them.",
    long_about = "nanogrid runs sandboxed WebAssembly components (nanoservices) behind HTTP.\n\n\
        First look:   nanogrid up                    (a single node with the samples deployed)\n\
        Run a node:   nanogrid serve\n\
        A cluster:    nanogrid cluster init DIR; nanogrid cluster add-node n1 DIR; nanogrid serve --cluster-dir DIR ...\n\
        Deploy:       nanogrid deploy app.wasm --name app --instances 4\n\
        Call it:      nanogrid invoke app /some/path -d 'body'\n\n\
        Client commands find the node through --admin / NANOGRID_ADMIN (default http://127.0.0.1:8081)\n\
        and authenticate with --token / NANOGRID_TOKEN, or the token file in ./.nanogrid."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a node: ingress on --listen, admin API on --admin-listen.
    Serve(Box<ServeArgs>),
    /// Build the samples, start a single node with them deployed, and print URLs to try.
    Up(UpArgs),
    /// Create a service project from a template: sources, WIT, README and a test.
    New {
        /// The project's folder and service name (lowercase letters, digits, '-')
        name: String,
        /// The language
        #[arg(long, value_enum, default_value_t = new::Lang::Rust)]
        lang: new::Lang,
        /// What the project starts as
        #[arg(long, value_enum, default_value_t = new::Template::Nanoservice)]
        template: new::Template,
    },
    /// Build the project in the current folder (or --dir) into a component.
    Build {
        /// The project folder [default: .]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Build, deploy to a local node (started here unless --to names one), and rebuild
    /// and redeploy on every save; prints the URL, requests and the guest's logs.
    Dev(DevArgs),
    /// Upload a .wasm component and deploy it as a service (create or replace).
    Deploy(DeployArgs),
    /// Change how many instances of a service may run at once (0 stops it).
    Scale {
        /// Service name.
        name: String,
        /// Concurrent instances on the node; 0 means stopped.
        #[arg(allow_negative_numbers = true)]
        instances: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List deployed services.
    Ls {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a service (its kv data is kept).
    Rm {
        /// Service name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Create a cluster's secrets, or issue a node's certificate.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Decommission a cluster node: it leaves the membership and gets no instances again.
    RemoveNode {
        /// The node's --node-id.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Send a request to a service through ingress and print the response body.
    Invoke(InvokeArgs),
    /// Show the node (or cluster) and its services.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Probe a node's admin listener: exit 0 when it serves (`--live`: when it answers at
    /// all). For container health checks, where no curl is at hand.
    Health {
        /// Only check that the process answers (a dormant node is alive but not ready).
        #[arg(long)]
        live: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show the cluster's scaling and placement decisions, with their reasons and inputs.
    Events {
        /// Keep printing new events as they come
        #[arg(short = 'f', long)]
        follow: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Draw one trace as a waterfall: its spans from every node, nested by parent.
    Trace {
        /// The trace id (the `x-trace-id` response header, or `nanogrid traces`).
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a node's trace sampling, ring and export counters; with a share, record that
    /// share of new traces from now on (until the node restarts).
    TraceSample {
        /// The share of new traces to record, 0 to 1 (none: just show).
        share: Option<f64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List recent traces (newest first).
    Traces {
        /// Only traces that reached this service.
        #[arg(long)]
        service: Option<String>,
        /// Only traces that took at least this long.
        #[arg(long, default_value_t = 0)]
        min_ms: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the leader's re-provisioning experiments: hypothesis, both arms' calls and
    /// latency, and the verdict.
    Experiments {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Apply a pending experiment's change to all traffic (`--reprovision propose`).
    Approve {
        /// The experiment's id (`nanogrid experiments`).
        id: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Roll a pending experiment's change back.
    Reject {
        id: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List running durable barriers, or show one: its calls, their answers, and which
    /// call it waited for.
    Barriers {
        /// A barrier id (as `barrier.fan-out` returned it).
        id: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Create a cluster's secrets in DIR: a CA, a gossip key, a cluster id and an admin
    /// token (once per cluster).
    Init {
        /// The cluster directory (created; must not hold a cluster yet).
        dir: PathBuf,
        /// Also issue these nodes' certificates (comma-separated ids).
        #[arg(long, value_name = "IDS", value_delimiter = ',')]
        nodes: Vec<String>,
        /// A directory that already holds a cluster is kept (only missing node
        /// certificates are issued): for a container that runs this at every start.
        #[arg(long)]
        exists_ok: bool,
    },
    /// Print one of the cluster's tokens (for `export NANOGRID_TOKEN=...`).
    Token {
        /// The cluster directory.
        dir: PathBuf,
        /// Which token: admin, deploy or read.
        #[arg(long, default_value = "admin")]
        scope: String,
    },
    /// Print a Kubernetes Secret holding what every node needs from DIR (never ca.key):
    /// the cluster files and each node's certificate and key as `ID.node.pem`/`ID.node.key`.
    K8sSecret {
        /// The cluster directory.
        dir: PathBuf,
        /// The Secret's name.
        #[arg(long, default_value = "nanogrid-cluster")]
        name: String,
    },
    /// Issue node ID's certificate into DIR/nodes/ID (needs DIR/ca.key).
    AddNode {
        /// The node's --node-id (lowercase letters, digits and '-').
        id: String,
        /// The cluster directory.
        dir: PathBuf,
        /// Replace an existing certificate (renewal, or a key that leaked).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args, Clone, Default)]
pub struct NodeArgs {
    /// Ingress address (port 0 picks a free port) [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Admin API address [default: 127.0.0.1:8081]
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Where the node keeps its database, token and compile cache [default: ./.nanogrid]
    #[arg(long, value_name = "DIR", env = "NANOGRID_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Admin bearer token (prefer --admin-token-file: a flag shows in `ps`) [default: the
    /// cluster's admin-token, else the token file in the data dir, created on first start]
    #[arg(long, env = "NANOGRID_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// File holding the admin token (scope `admin`)
    #[arg(long, value_name = "FILE", conflicts_with = "admin_token")]
    pub admin_token_file: Option<PathBuf>,
    /// File holding a token of the `deploy` scope (components and services, not membership)
    #[arg(long, value_name = "FILE")]
    pub deploy_token_file: Option<PathBuf>,
    /// File holding a token of the `read` scope (GET only)
    #[arg(long, value_name = "FILE")]
    pub read_token_file: Option<PathBuf>,
    /// Compiled-component cache directory [default: DATA_DIR/compiled]
    #[arg(long, value_name = "DIR")]
    pub compile_cache: Option<PathBuf>,
    /// Instance slots the node reserves memory for [default: 1000]
    #[arg(long, value_name = "N")]
    pub pool_instances: Option<u32>,
    /// Partitions of the kv grid (1 to 4096). Fixed when a data dir (and a cluster) is
    /// made: every node of a cluster needs the same count [default: 256]
    #[arg(long, value_name = "N")]
    pub partitions: Option<u32>,
    /// This node's id [default: n1]
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// Meter fuel, so services may set a per-request fuel budget (limits.fuel); costs speed
    #[arg(long)]
    pub fuel: bool,
    /// PEM certificate (chain) for the ingress and admin listeners: HTTPS, HTTP/2 by ALPN;
    /// read again on SIGHUP or when the file changes
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// A CA (PEM) guests' outgoing HTTPS trusts besides the Mozilla roots (repeatable)
    #[arg(long, value_name = "FILE")]
    pub extra_ca: Vec<PathBuf>,
    /// Resolve NAME to IP for guests' outgoing HTTP, as curl --resolve does (repeatable);
    /// the address is checked like a resolved one
    #[arg(long, value_name = "NAME=IP")]
    pub resolve: Vec<String>,
    /// How a new component is compiled: `tiered` (Winch's baseline code serves at once,
    /// Cranelift's optimized code is swapped in when ready) or `optimized` (the upload
    /// waits for Cranelift) [default: tiered]
    #[arg(long, value_name = "MODE")]
    pub compile: Option<crate::runtime::CompileMode>,
    /// Where ingress connections run: `per-core` (a single-threaded runtime per core on a
    /// thread pinned to it, each connection on one of them: the most requests per second,
    /// the lowest median and p99) or `shared` (the node's multi-threaded runtime, whose
    /// workers steal work from each other: better for a lone client on a VM that halts
    /// idle vCPUs at once, and for a few connections carrying guests of very uneven cost)
    /// [default: per-core]
    #[arg(long, value_name = "MODE")]
    pub ingress_threads: Option<crate::cores::IngressThreads>,
    /// When kv writes reach the disk: `always` (fsync each), `batch` (group commit: writers
    /// share fsyncs, nothing acknowledged before it is on disk) or `never` (acknowledged in
    /// the log, synced every second: survives a crash of the process, not of the machine)
    /// [default: batch]
    #[arg(long, value_name = "MODE")]
    pub sync: Option<crate::grid::SyncMode>,
    /// Keep this many MiB free on the data dir's disk: below it kv writes are refused with
    /// an error naming the directory (Raft and compactions use the room) [default: 64]
    #[arg(long, value_name = "MIB")]
    pub min_free_mib: Option<u64>,
    /// If the node's store is damaged, move it aside (DATA_DIR/db.damaged-TIME) and rebuild
    /// this node's state from its peers (cluster mode only)
    #[arg(long)]
    pub rebuild_store: bool,
    /// Share of new traces recorded, 0 to 1 (a request arriving with a `traceparent`
    /// follows its sampled flag) [default: 1]
    #[arg(long, value_name = "RATIO")]
    pub trace_sample: Option<f64>,
    /// Share of sampled requests to a fused chain that run its timed composition, whose
    /// parts each get a span, 0 to 1; above 0 every fused chain is also composed and
    /// compiled timed (a timed request loses about a quarter of its throughput: README,
    /// "Tracing") [default: 0]
    #[arg(long, value_name = "RATIO")]
    pub trace_fused_parts: Option<f64>,
    /// Spans this node keeps for `GET /v1/traces` (the oldest go first) [default: 20000]
    #[arg(long, value_name = "N")]
    pub trace_ring: Option<usize>,
    /// Export spans over OTLP/HTTP (protobuf) to this collector, e.g. http://127.0.0.1:4318
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// TOML file with the same settings (flags win)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Cluster settings; giving --peer-listen (or peer_listen in the file) joins a cluster.
#[derive(Args, Clone, Default)]
pub struct ClusterArgs {
    /// Node-to-node RPC address (Raft, forwarded writes, component fetch); turns clustering on
    #[arg(long, value_name = "ADDR")]
    pub peer_listen: Option<SocketAddr>,
    /// The cluster's secrets (`nanogrid cluster init DIR`, then `cluster add-node ID DIR`)
    #[arg(long, value_name = "DIR")]
    pub cluster_dir: Option<PathBuf>,
    /// How far a gossip packet's clock may be from this node's, in ms, before it is
    /// dropped as stale [default: 10000]
    #[arg(long, value_name = "MS")]
    pub gossip_window_ms: Option<u64>,
    /// Peer RPC in cleartext (benchmarks only; refused unless the peer and gossip
    /// listeners are on loopback)
    #[arg(long, hide = true)]
    pub insecure_plaintext_peers: bool,
    /// Gossip (UDP) address [default: the peer address's host, port + 1]
    #[arg(long, value_name = "ADDR")]
    pub gossip_listen: Option<SocketAddr>,
    /// Gossip addresses of other nodes, comma-separated (HOST:PORT,...)
    #[arg(long, value_name = "ADDRS", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// How many members vote in the control plane (3 or 5; the rest are learners) [default: 3]
    #[arg(long, value_name = "N")]
    pub voters: Option<usize>,
    /// A new cluster forms only once this many nodes see each other: the number of nodes
    /// started together (1: a lone node forms one alone) [default: 1]
    #[arg(long, value_name = "N")]
    pub bootstrap_expect: Option<usize>,
    /// Gossip interval in milliseconds [default: 200]
    #[arg(long, value_name = "MS")]
    pub gossip_interval_ms: Option<u64>,
    /// Failure detector's phi threshold: higher detects a dead node later but more surely [default: 8]
    #[arg(long, value_name = "PHI")]
    pub phi_threshold: Option<f64>,
    /// This node's address for other nodes, when listeners bind `0.0.0.0` or `[::]`
    #[arg(long, value_name = "IP")]
    pub advertise_host: Option<std::net::IpAddr>,
    /// Replicas of each kv partition, capped at the node count [default: 3]
    #[arg(long, value_name = "N")]
    pub replication: Option<usize>,
    /// Calls per second from one node to a service that make placement put the service's
    /// odd instances on that node (0 turns co-location off) [default: 5]
    #[arg(long, value_name = "RATE")]
    pub colocate_min_rate: Option<f64>,
    /// What the leader does with the moves call traffic suggests: `auto` tries each as an
    /// A/B experiment and keeps the ones that make calls faster, `propose` also waits for
    /// `nanogrid approve ID`, `off` makes none [default: auto]
    #[arg(long, value_name = "MODE")]
    pub reprovision: Option<String>,
    /// How long an experiment's trial runs before the leader judges it, in milliseconds [default: 30000]
    #[arg(long, value_name = "MS")]
    pub experiment_window_ms: Option<u64>,
    /// Calls per arm an experiment needs for a verdict [default: 100]
    #[arg(long, value_name = "N")]
    pub experiment_min_samples: Option<usize>,
    /// The least p50 gain worth a move, as a fraction (0.05 = 5 %) [default: 0.05]
    #[arg(long, value_name = "FRACTION")]
    pub experiment_min_gain: Option<f64>,
    /// How often the leader measures load and decides instance and node counts, in milliseconds [default: 1000]
    #[arg(long, value_name = "MS")]
    pub autoscale_window_ms: Option<u64>,
    /// Instances one node is meant to run, all services together; the leader wants
    /// ceil(wanted instances / this) nodes [default: 8 per core]
    #[arg(long, value_name = "N")]
    pub node_instances: Option<u32>,
    /// What adds or removes nodes when the leader wants another count: an executable (run
    /// as `SCALER want-nodes N`, JSON on stdin) or an https:// webhook (JSON POST); see deploy/scalers/
    #[arg(long, value_name = "PATH|URL")]
    pub node_scaler: Option<String>,
    /// Fewest nodes the leader asks for (never fewer than the voters) [default: the voter count]
    #[arg(long, value_name = "N")]
    pub min_nodes: Option<usize>,
    /// Most nodes the leader asks for [default: 16]
    #[arg(long, value_name = "N")]
    pub max_nodes: Option<usize>,
    /// Seconds the nodes must have been more than needed before the leader drains and removes one [default: 300]
    #[arg(long, value_name = "S")]
    pub node_idle_s: Option<u64>,
    /// Window over which the leader measures call traffic, in milliseconds (tests use a short one)
    #[arg(long, hide = true, value_name = "MS")]
    pub traffic_window_ms: Option<u64>,
    /// Control-plane snapshot interval in log entries (tests use a small one)
    #[arg(long, hide = true, value_name = "N")]
    pub raft_snapshot_every: Option<u64>,
    /// Partition-log entries kept per partition (tests use a small one)
    #[arg(long, hide = true, value_name = "N")]
    pub grid_log_keep: Option<u64>,
    /// Allow POST /v1/debug/gossip to make the gossip task fail or hang (a scenario test)
    #[arg(long, hide = true)]
    pub fault_injection: bool,
}

#[derive(Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// The samples workspace to build and deploy [default: ./samples]
    #[arg(long, value_name = "DIR")]
    pub samples: Option<PathBuf>,
    /// Use already-built samples instead of running cargo
    #[arg(long)]
    pub no_build: bool,
}

#[derive(Args)]
pub struct DevArgs {
    /// The project folder [default: .]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Deploy to this node's admin API instead of starting one
    #[arg(long, value_name = "URL")]
    pub to: Option<String>,
    /// With --to: the admin token
    #[arg(long, requires = "to")]
    pub token: Option<String>,
    /// With --to: the node's ingress URL, to print
    #[arg(long, requires = "to", value_name = "URL")]
    pub ingress: Option<String>,
    /// The local node (its data dir defaults to DIR/.nanogrid/dev, so kv data survives)
    #[command(flatten)]
    pub node: NodeArgs,
}

#[derive(Args, Clone)]
pub struct ClientArgs {
    /// Admin API of the node
    #[arg(long = "admin", env = "NANOGRID_ADMIN", default_value = "http://127.0.0.1:8081", value_name = "URL")]
    pub admin: String,
    /// Admin bearer token (default: DATA_DIR/admin-token if readable)
    #[arg(long, env = "NANOGRID_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Data dir whose token file to read when no token is given [default: ./.nanogrid]
    #[arg(long, env = "NANOGRID_DATA_DIR", value_name = "DIR", hide = true)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct DeployArgs {
    /// The component: a .wasm file built for wasm32-wasip2
    pub file: PathBuf,
    /// Service name (lowercase letters, digits, '-'); the ingress path is /NAME/...
    #[arg(long)]
    pub name: String,
    /// Concurrent instances on the node
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub instances: i64,
    /// Let the cluster's leader choose the instance count from load, between MIN and MAX
    /// (e.g. 0..16; 0 lets an idle service scale to zero); replaces --instances
    #[arg(long, value_name = "MIN..MAX")]
    pub autoscale: Option<String>,
    /// With --autoscale: the share of instances meant to be busy [default: 0.6]
    #[arg(long, value_name = "RATIO", requires = "autoscale")]
    pub target_busy: Option<f64>,
    /// Configuration the service reads with config::get, as KEY=VALUE (repeatable)
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// Largest memory of one instance, in MiB [default: 64]
    #[arg(long)]
    pub memory_mib: Option<u32>,
    /// Deadline of one request, in milliseconds [default: 5000]
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Bind a typed import to the service providing it, as INTERFACE=SERVICE
    /// (e.g. acme:text/tokenize=tokenizer; repeatable). Unbound imports bind to the only
    /// service exporting the interface.
    #[arg(long = "bind", value_name = "INTERFACE=SERVICE")]
    pub bind: Vec<String>,
    /// Link the chain of typed imports as separate instances instead of fusing it
    #[arg(long)]
    pub no_fuse: bool,
    /// Refuse the deploy if the component imports filesystem, sockets or outbound HTTP
    /// without a grant (default: deploy with those denied at use)
    #[arg(long)]
    pub strict_imports: bool,
    /// Let one instance serve up to N requests in sequence before it is recycled
    /// (nanoservices and wasi:http components; the guest's memory carries over: see
    /// docs/SECURITY.md). Default: a fresh instance per request
    #[arg(long, value_name = "N")]
    pub reuse: Option<u32>,
    /// Calls to this service may run more than once: a barrier call whose answer was lost
    /// after it was sent, or that answered 502 or 503, is tried again
    #[arg(long)]
    pub idempotent: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct InvokeArgs {
    /// Service name
    pub name: String,
    /// Path inside the service, e.g. /items?limit=3 [default: /]
    pub path: Option<String>,
    /// Request body; @FILE reads a file (makes the default method POST)
    #[arg(short = 'd', long = "data")]
    pub data: Option<String>,
    /// HTTP method [default: GET, or POST with --data]
    #[arg(short = 'X', long = "method")]
    pub method: Option<String>,
    /// Extra header, "Name: value" (repeatable)
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Print the status line and headers too
    #[arg(short = 'i', long)]
    pub include: bool,
    /// Ingress of the node
    #[arg(long = "ingress", env = "NANOGRID_INGRESS", default_value = "http://127.0.0.1:8080", value_name = "URL")]
    pub ingress: String,
}

pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => commands::serve(*args).await,
            Command::Up(args) => up::up(args).await,
            Command::New { name, lang, template } => new::run_new(&name, lang, template),
            Command::Build { dir } => new::run_build(dir.as_deref()),
            Command::Dev(args) => dev::dev(args).await,
            Command::Deploy(args) => commands::deploy(args).await,
            Command::Scale { name, instances, client } => commands::scale(&client, &name, instances).await,
            Command::Ls { client } => commands::ls(&client).await,
            Command::Rm { name, client } => commands::rm(&client, &name).await,
            Command::RemoveNode { id, client } => commands::remove_node(&client, &id).await,
            Command::Cluster(ClusterCommand::Init { dir, nodes, exists_ok }) => {
                cluster_cmd::cluster_init(&dir, &nodes, exists_ok)
            }
            Command::Cluster(ClusterCommand::Token { dir, scope }) => cluster_cmd::cluster_token(&dir, &scope),
            Command::Cluster(ClusterCommand::K8sSecret { dir, name }) => cluster_cmd::cluster_k8s_secret(&dir, &name),
            Command::Cluster(ClusterCommand::AddNode { id, dir, force }) => {
                cluster_cmd::cluster_add_node(&id, &dir, force)
            }
            Command::Invoke(args) => commands::invoke(args).await,
            Command::Status { client } => commands::status(&client).await,
            Command::Health { live, client } => commands::health(&client, live).await,
            Command::Events { follow, client } => commands::events(&client, follow).await,
            Command::Trace { id, client } => trace::trace(&client, &id).await,
            Command::TraceSample { share, client } => trace::sample(&client, share).await,
            Command::Traces { service, min_ms, client } => trace::traces(&client, service.as_deref(), min_ms).await,
            Command::Barriers { id, client } => commands::barriers(&client, id.as_deref()).await,
            Command::Experiments { client } => experiments::list(&client).await,
            Command::Approve { id, client } => experiments::decide(&client, id, true).await,
            Command::Reject { id, client } => experiments::decide(&client, id, false).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
