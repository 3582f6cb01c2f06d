//! Per-request cost inside the node, without HTTP: instantiation alone, and a whole
//! `hello` request (instantiate + call), each averaged over many sequential runs.
//!
//! `cargo run --release --example instantiate -- path/to/hello.wasm [N]` prints
//! `instantiate_us=… request_us=…`, then the request's cost with tracing on the node but
//! no trace sampled (`traced_off_us`: ids still travel) and with every run's span kept in
//! the ring (`traced_ring_us`), alternated over five rounds (medians).

use std::sync::Arc;
use std::time::Instant;

use nanogrid::grid::{Grid, RocksStorage};
use nanogrid::runtime::{Request, Runtime, RuntimeConfig};
use nanogrid::services::{Registry, spec::ServiceRequest};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let wasm = std::fs::read(args.next().ok_or_else(|| anyhow::anyhow!("usage: instantiate HELLO.wasm [N]"))?)?;
    let n: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(20_000);
    let dir = tempfile::tempdir()?;
    let storage = RocksStorage::open(&dir.path().join("db")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let runtime = Runtime::new(&RuntimeConfig {
        compile_cache: dir.path().join("cache"),
        pool_instances: 100,
        pool_max_memory: 1 << 30,
        fuel: false,
        outbound: None,
        // Measures the steady state: optimized code from the first request.
        tiered: false,
        fused_parts: 0.0,
    })?;
    let registry = Registry::new(Arc::new(runtime), Arc::new(Grid::new(Arc::new(storage))));
    let up = registry.put_component(wasm.into()).await?;
    let req: ServiceRequest = serde_json::from_value(serde_json::json!({ "component": up.digest, "instances": 4 }))?;
    registry.put_service("hello", req).await?;

    for _ in 0..1000 {
        registry.instantiate_only("hello").await?;
    }
    let t = Instant::now();
    for _ in 0..n {
        registry.instantiate_only("hello").await?;
    }
    let inst_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);

    let request = || Request { method: "GET".into(), path: "/world".into(), headers: vec![], body: vec![] };
    let t = Instant::now();
    for _ in 0..n {
        let resp = registry.dispatch("hello", request(), "bench".into(), 0).await?;
        assert_eq!(resp.status, 200);
    }
    let req_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    println!("instantiate_us={inst_us:.1} request_us={req_us:.1} runs={n}");

    let tracer = Arc::new(nanogrid::trace::Tracer::new("bench", 0.0, 20_000, None));
    registry.set_tracer(tracer.clone());
    let (mut off, mut ring) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        for (share, out) in [(0.0, &mut off), (1.0, &mut ring)] {
            tracer.set_sample(share);
            let t = Instant::now();
            for _ in 0..n {
                registry.dispatch("hello", request(), "bench".into(), 0).await?;
            }
            out.push(t.elapsed().as_secs_f64() * 1e6 / f64::from(n));
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (off, ring) = (median(&mut off), median(&mut ring));
    println!(
        "traced_off_us={off:.2} traced_ring_us={ring:.2} ring_cost_us={:.2} spans={}",
        ring - off,
        tracer.ring.len()
    );
    Ok(())
}
