//! nanogrid: one node of a WebAssembly nanoservice platform.
//!
//! A request flows `ingress` → `services` (admission gate) → `runtime` (fresh instance from
//! a pre-linked component) → guest; guest imports reach `grid` (kv) and back into
//! `services` (invoke). `admin` changes the service table; `boot` wires it all together;
//! `cli` is the `nanogrid` binary's front end.
//!
//! | module | owns |
//! | --- | --- |
//! | [`runtime`] | wasmtime engine, compile cache, host imports, limits |
//! | [`services`] | deployed services, admission gates, dispatch, deploy/scale/delete |
//! | [`grid`] | storage traits, RocksDB and in-memory stores, kv namespaces |
//! | [`autoscale`] | the instance autoscaler's rule (leader or single node) |
//! | [`control`] | gossip membership, Raft control plane, node modes, Service/Cluster Manager |
//! | [`transport`] | cluster secrets, mutual TLS, typed peer calls over HTTP/2 |
//! | [`ingress`] | `/{service}/...` HTTP front door |
//! | [`admin`] | `/v1` JSON API, bearer-token auth, `/metrics` |
//! | [`node`] | a node's configuration and shared state (what admin and metrics read) |
//! | [`boot`] | start-up and shutdown of one node: the composition root |
//! | [`cli`] | `nanogrid` subcommands |
//!
//! Start a node in-process (as the tests and `nanogrid up` do):
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let ingress = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let config = nanogrid::node::NodeConfig { data_dir: "/tmp/ng".into(), ..Default::default() };
//! let handle = nanogrid::boot::start(config, ingress, admin).await?;
//! println!("ingress on {}", handle.node.ingress_addr());
//! handle.shutdown().await;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod api;
pub mod auth;
pub mod autoscale;
pub mod boot;
pub mod cli;
pub mod client;
pub mod config;
pub mod console;
pub mod control;
pub mod cores;
pub mod forward;
pub mod grid;
pub mod http;
pub mod ingress;
pub mod listener_tls;
pub mod metrics;
pub mod node;
pub mod pace;
pub mod ratelog;
pub mod runtime;
pub mod server;
pub mod services;
pub mod tasks;
pub mod trace;
pub mod transport;
