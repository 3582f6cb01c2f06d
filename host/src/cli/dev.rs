//! `nanogrid dev`: the inner loop. Build the project, deploy it to a node (one started in
//! this process unless `--to` names another), print the URL, then rebuild and redeploy on
//! every save. The service keeps its name, so its kv data carries over between versions.
//! Each request's status line and the guest's log lines print as they happen.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use http::Method;
use serde_json::json;

use super::commands::{admin_client, check, start_node, wait_for_signal};
use super::new::{self, Project};
use super::node_config::node_config;
use super::{ClientArgs, DevArgs};
use crate::config::FileConfig;
use crate::services::spec::ServiceSpec;

/// How often the project's files are checked for changes.
const POLL: Duration = Duration::from_millis(200);

pub async fn dev(args: DevArgs) -> anyhow::Result<ExitCode> {
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let project = new::load(&dir)?;
    // What a developer wants to see: each request (its span names method, path and id; the
    // ingress's "served" line its status and time), the guest's logs, and trouble.
    let filter = std::env::var("RUST_LOG")
        .unwrap_or_else(|_| "warn,guest=debug,nanogrid::ingress=debug,nanogrid::http=debug".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
    let mut node_args = args.node.clone();
    node_args.data_dir = node_args.data_dir.or_else(|| Some(dir.join(".nanogrid/dev")));
    let (client, ingress, handle) = match &args.to {
        Some(to) => {
            let c = ClientArgs { admin: to.clone(), token: args.token.clone(), data_dir: None };
            (c, args.ingress.clone().unwrap_or_else(|| "(the node's ingress)".into()), None)
        }
        None => {
            crate::boot::private_files();
            let (cfg, listen, admin) = node_config(&node_args, FileConfig::default())?;
            let handle = start_node(cfg, listen, admin).await?;
            let token = crate::boot::token_path(node_args.data_dir.as_deref().unwrap_or(&dir));
            println!("admin API at http://{} (token in {})", handle.node.admin_addr(), token.display());
            let c = ClientArgs {
                admin: format!("http://{}", handle.node.admin_addr()),
                token: node_args.admin_token.clone(),
                data_dir: node_args.data_dir.clone(),
            };
            (c, format!("http://{}", handle.node.ingress_addr()), Some(handle))
        }
    };
    let url = format!("{ingress}/{}/", project.name);
    let looped = tokio::select! {
        r = watch_loop(&dir, &project, &client, &url) => r,
        _ = wait_for_signal() => Ok(()),
    };
    if let Some(h) = handle {
        h.shutdown().await;
    }
    looped.map(|()| ExitCode::SUCCESS)
}

/// Build and deploy now, then again after every change, until an error of the loop itself.
async fn watch_loop(dir: &Path, project: &Project, client: &ClientArgs, url: &str) -> anyhow::Result<()> {
    let mut seen = snapshot(dir);
    loop {
        let started = Instant::now();
        match build_and_deploy(dir, project, client).await {
            Ok(generation) => println!(
                "serving {} (generation {generation}) at {url} — built and deployed in {:.1} s; watching for changes",
                project.name,
                started.elapsed().as_secs_f64()
            ),
            Err(e) => println!("not deployed: {e:#}\nwatching for changes"),
        }
        loop {
            tokio::time::sleep(POLL).await;
            let now = snapshot(dir);
            if now != seen {
                seen = now;
                println!("change seen: rebuilding");
                break;
            }
        }
    }
}

/// Build (off the async runtime), upload and deploy; the new generation.
async fn build_and_deploy(dir: &Path, project: &Project, client: &ClientArgs) -> anyhow::Result<u64> {
    let (d, p) = (dir.to_path_buf(), project.clone());
    let wasm = tokio::task::spawn_blocking(move || new::build(&d, &p, new::Build::Dev))
        .await
        .context("the build task failed")??;
    let bytes = std::fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
    let admin = admin_client(client);
    let up = check(admin.upload(bytes).await?).context("uploading the component")?;
    let digest = &serde_json::from_value::<crate::api::Uploaded>(up).context("reading the upload's answer")?.digest;
    let path = format!("/v1/services/{}", project.name);
    // A save changes the code, not how the service is run: a redeploy keeps the count,
    // limits, grants and config the service has (scaled or set through the admin API).
    let existing = admin.get(&path).await?;
    let spec = match existing.status.as_u16() {
        404 => json!({ "component": digest }),
        _ => {
            let svc = check(existing).with_context(|| format!("reading {}'s spec", project.name))?;
            let svc: crate::api::ServiceDetail = serde_json::from_value(svc)
                .with_context(|| format!("the node's detail of {} is not one this nanogrid reads", project.name))?;
            redeploy(&svc.spec, digest)
        }
    };
    let svc: crate::api::ServiceAnswer = serde_json::from_value(
        check(admin.call_json(Method::PUT, &path, &spec).await?)
            .with_context(|| format!("deploying {}", project.name))?,
    )
    .with_context(|| format!("the deploy of {} answered something else than a service", project.name))?;
    for d in svc.denied_imports() {
        println!("denied at use: {} (no {})", d.import, d.grant);
    }
    Ok(svc.spec().generation)
}

/// The deploy request that runs `component` the way `spec` runs its service now.
fn redeploy(spec: &ServiceSpec, component: &str) -> serde_json::Value {
    let mut req = json!({
        "component": component,
        "queue_timeout_ms": spec.queue_timeout_ms,
        "limits": spec.limits,
        "grants": spec.grants,
        "strict_imports": spec.strict_imports,
        "config": spec.config,
        "bindings": spec.bindings,
        "fuse": spec.fuse,
        "placement": spec.placement,
    });
    // An autoscaled service's count is the autoscaler's: the request gives its bounds.
    match &spec.autoscale {
        Some(a) => req["autoscale"] = json!(a),
        None => req["instances"] = json!(spec.instances),
    }
    if let Some(q) = spec.max_queue {
        req["max_queue"] = json!(q);
    }
    if let Some(r) = spec.reuse {
        req["reuse"] = json!(r);
    }
    if spec.idempotent {
        req["idempotent"] = json!(true);
    }
    req
}

/// Modification times of the project's sources: everything but build output, the dev
/// node's data and dependencies.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, SystemTime> {
    const SKIP: [&str; 5] = ["target", ".nanogrid", "node_modules", ".git", "__pycache__"];
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                if !SKIP.iter().any(|s| e.file_name() == *s) {
                    stack.push(path);
                }
            } else if let Ok(m) = meta.modified() {
                out.insert(path, m);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::spec::{self, ServiceRequest};

    /// What a save redeploys passes the node's checks and runs the service as before.
    #[test]
    fn a_redeploy_keeps_the_services_settings() {
        let first: ServiceRequest = serde_json::from_value(json!({
            "component": format!("sha256:{}", "a".repeat(64)),
            "instances": 3,
            "max_queue": 7,
            "queue_timeout_ms": 1234,
            "limits": { "timeout_ms": 900, "memory_mib": 64 },
            "grants": { "outbound_http": ["api.example.com:443"] },
            "config": { "greeting": "hi" },
            "fuse": false,
            "placement": ["n2"],
        }))
        .unwrap();
        let before = spec::check_request("svc", &first).unwrap();
        let spec = ServiceSpec {
            name: "svc".into(),
            component: first.component.clone(),
            instances: before.instances,
            max_queue: before.max_queue,
            queue_timeout_ms: 1234,
            limits: before.limits,
            grants: before.grants.clone(),
            strict_imports: false,
            config: first.config.clone(),
            bindings: Default::default(),
            fuse: false,
            placement: vec!["n2".into()],
            autoscale: None,
            reuse: Some(spec::Reuse { requests: 5 }),
            idempotent: true,
            generation: 4,
            updated_at_ms: 0,
        };
        let next = format!("sha256:{}", "b".repeat(64));
        let req: ServiceRequest = serde_json::from_value(redeploy(&spec, &next)).expect("a request the node accepts");
        let after = spec::check_request("svc", &req).unwrap();
        assert_eq!(req.component, next);
        assert_eq!((req.reuse, req.idempotent), (spec.reuse, true));
        assert_eq!((after.instances, after.max_queue), (3, Some(7)));
        assert_eq!((after.limits, after.grants), (before.limits, before.grants));
        assert_eq!(
            (req.queue_timeout_ms, req.fuse, &req.placement, &req.config),
            (Some(1234), Some(false), &spec.placement, &spec.config)
        );
    }

    #[test]
    fn a_saved_file_changes_the_snapshot_and_build_output_does_not() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("src")).unwrap();
        std::fs::create_dir_all(tmp.path().join("target")).unwrap();
        std::fs::write(tmp.path().join("src/lib.rs"), "a").unwrap();
        let before = super::snapshot(tmp.path());
        std::fs::write(tmp.path().join("target/out.wasm"), "x").unwrap();
        assert_eq!(super::snapshot(tmp.path()), before, "build output is not a change");
        std::fs::write(tmp.path().join("src/new.rs"), "b").unwrap();
        assert_ne!(super::snapshot(tmp.path()), before);
    }
}
