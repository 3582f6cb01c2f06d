//! `nanogrid up`: build the samples, start a single node, deploy them, print what to try.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::json;

use super::UpArgs;
use super::commands::{init_logging, start_node, wait_for_signal};
use super::node_config::node_config;
use crate::config::FileConfig;
use crate::services::spec::ServiceRequest;

/// The samples `up` deploys, with their instance counts. The text pipeline goes entry
/// point first, to show that order does not matter; the chain is bound stage by stage.
pub const SAMPLES: [(&str, u32); 17] = [
    ("hello", 8),
    ("counter", 4),
    ("kvstore", 4),
    ("wordcount", 4),
    ("jobs", 4),
    ("gateway", 4),
    ("http-hello", 8),
    ("http-stream", 2),
    ("http3-stream", 2),
    ("text-stats", 4),
    ("text-tokenize", 1),
    ("text-normalize", 1),
    ("chain-5", 4),
    ("chain-4", 1),
    ("chain-3", 1),
    ("chain-2", 1),
    ("chain-1", 4),
];

fn samples_dir(arg: Option<PathBuf>) -> PathBuf {
    if let Some(p) = arg {
        return p;
    }
    let local = PathBuf::from("samples");
    if local.join("Cargo.toml").exists() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples")
}

/// Build every sample for wasm32-wasip2 and return the directory holding the .wasm files.
pub fn build_samples(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.exists() {
        bail!("no samples workspace at {}; pass --samples DIR", dir.display());
    }
    println!("building samples in {} (cargo build --release --target wasm32-wasip2)...", dir.display());
    let status = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(&manifest)
        .status()
        .context("running cargo to build the samples (is Rust installed?)")?;
    if !status.success() {
        bail!("building the samples failed; if the target is missing run `rustup target add wasm32-wasip2`");
    }
    Ok(dir.join("target/wasm32-wasip2/release"))
}

pub async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let dir = samples_dir(args.samples.clone());
    let wasm_dir = if args.no_build {
        dir.join("target/wasm32-wasip2/release")
    } else {
        let d = dir.clone();
        tokio::task::spawn_blocking(move || build_samples(&d)).await??
    };
    // After the build: the samples' target dir stays the user's as usual.
    crate::boot::private_files();
    let (cfg, listen, admin) = node_config(&args.node, FileConfig::default())?;
    let handle = start_node(cfg, listen, admin).await?;
    let registry = handle.node.registry.clone();
    for (name, instances) in SAMPLES {
        // Cargo names the artifact after the crate, with '-' turned into '_'.
        let path = wasm_dir.join(format!("{}.wasm", name.replace('-', "_")));
        let bytes = std::fs::read(&path).with_context(|| format!("reading sample {}", path.display()))?;
        let up = registry.put_component(bytes.into()).await.with_context(|| format!("uploading sample {name}"))?;
        let mut spec = json!({ "component": up.digest, "instances": instances });
        if name == "http-stream" || name == "http3-stream" {
            // The streaming sample exists to move large bodies: give it room.
            spec["limits"] =
                json!({ "max_request_bytes": 1u64 << 30, "max_response_bytes": 1u64 << 30, "timeout_ms": 60000 });
        }
        if name == "wordcount" {
            // It only counts: the jobs sample's barrier calls to it may be tried again.
            spec["idempotent"] = json!(true);
        }
        if let Some(n) = name.strip_prefix("chain-").and_then(|n| n.parse::<u32>().ok()).filter(|n| *n < 5) {
            // Every stage exports bench:chain/stage, so each binds to the next explicitly.
            spec["bindings"] = json!({ "bench:chain/stage": format!("chain-{}", n + 1) });
        }
        let req: ServiceRequest = serde_json::from_value(spec)?;
        registry.put_service(name, req).await.with_context(|| format!("deploying sample {name}"))?;
    }
    let ing = format!("http://{}", handle.node.ingress_addr());
    let adm = format!("http://{}", handle.node.admin_addr());
    println!();
    println!("nanogrid is up: one node, samples deployed ({})", SAMPLES.map(|s| s.0).join(", "));
    println!();
    println!("Try:");
    println!("  curl '{ing}/hello/world?name=Ada'");
    println!("  curl -X POST {ing}/counter/visits");
    println!("  curl -X PUT -d 'v1' '{ing}/kvstore/k?consistency=all'; curl {ing}/kvstore/k");
    println!("  curl -d '{{\"text\":\"the cat and the hat\"}}' {ing}/wordcount/");
    println!("  curl -d 'the cat and the hat' {ing}/gateway/");
    println!(
        "  curl --data-binary $'one line\\ntwo lines' {ing}/jobs/   (fan-out + durable barrier; then GET /jobs/ID)"
    );
    println!("  curl {ing}/http-hello/anything             (a standard wasi:http component)");
    println!("  curl {ing}/http-stream/16 | wc -c          (16 MiB, streamed)");
    println!("  curl {ing}/http3-stream/16 | wc -c         (the same from a WASI 0.3 async component)");
    println!("  curl -d 'The cat and the hat' {ing}/text-stats/   (3 services fused into one component)");
    println!("  curl -d 'in' {ing}/chain-1/                 (5 typed stages, fused)");
    println!("  curl {adm}/metrics");
    println!(
        "  nanogrid ls --admin {adm}        (token: {})",
        crate::boot::token_path(&handle.node.config.data_dir).display()
    );
    println!();
    println!("Press Ctrl-C to stop.");
    wait_for_signal().await;
    handle.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
