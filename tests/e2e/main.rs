//! End-to-end tests: real `nanogrid` processes on 127.0.0.1, real RocksDB in temp dirs,
//! real guest components built from `samples/` and `tests/guests/` (once per test run).

mod support;

mod admin_errors;
mod autoscale;
mod barrier;
mod cluster;
mod compose;
mod concurrency;
mod crash;
mod deploy;
mod deploy_files;
mod devloop;
mod disk;
mod fuzz;
mod guests;
mod http;
mod http3;
mod limits;
mod outbound;
mod restart;
mod reuse;
mod scopes;
mod sdks;
mod security;
mod signals;
mod tiering;
mod tls;
mod toolchains;
mod tracing;
mod up;
mod webdriver;
