//! `nanogrid experiments` (the leader's re-provisioning experiments: hypothesis, arms,
//! samples, figures, verdict) and `nanogrid approve ID` / `nanogrid reject ID`.

use std::process::ExitCode;

use super::ClientArgs;
use super::commands::{admin_client, check};
use crate::api::{ExperimentList, ExperimentView};
use bytes::Bytes;
use http::Method;

pub async fn list(client: &ClientArgs) -> anyhow::Result<ExitCode> {
    let c = admin_client(client);
    let v: ExperimentList = serde_json::from_value(check(c.get("/v1/experiments").await?)?)?;
    println!(
        "mode {}; a trial runs {} ms and needs {} calls per arm; rule: {}",
        v.mode.as_str(),
        v.window_ms,
        v.min_samples,
        v.rule
    );
    if v.experiments.is_empty() {
        println!("no experiments yet (the leader starts one when call traffic makes a node hot for a service)");
    }
    for e in &v.experiments {
        print!("\n{}", describe(e));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn decide(client: &ClientArgs, id: u64, approve: bool) -> anyhow::Result<ExitCode> {
    let c = admin_client(client);
    let action = if approve { "approve" } else { "reject" };
    let path = format!("/v1/experiments/{id}/{action}");
    let e: ExperimentView = serde_json::from_value(check(c.call(Method::POST, &path, None, Bytes::new()).await?)?)?;
    print!("{}", describe(&e));
    Ok(ExitCode::SUCCESS)
}

/// One experiment in a few lines.
fn describe(v: &ExperimentView) -> String {
    let e = &v.record;
    // A percentile that falls on failed calls is `None`.
    let ms = |v: Option<f64>| v.map_or_else(|| "failed".to_string(), |ms| format!("{ms} ms"));
    let mut out = format!("#{} {:<11} {} on {}\n", e.id, e.stage.as_str(), e.service, e.node);
    out.push_str(&format!("  hypothesis: {}\n", e.hypothesis));
    if let Some(so_far) = v.so_far {
        out.push_str(&format!("  calls so far: old {}, new {}\n", so_far.old, so_far.new));
    }
    if let Some(f) = &e.figures {
        for (arm, a) in [("old", &f.old), ("new", &f.new)] {
            out.push_str(&format!(
                "  {arm}: {:<40} {:>6} calls {:>4} errors  p50 {:>12}  p99 {:>12}\n",
                a.arrangement,
                a.samples,
                a.errors,
                ms(a.p50_ms),
                ms(a.p99_ms)
            ));
        }
    }
    if !e.verdict.is_empty() {
        out.push_str(&format!("  verdict: {}\n", e.verdict));
    }
    out
}
