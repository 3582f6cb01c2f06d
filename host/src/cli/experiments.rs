//! `nanogrid experiments` (the leader's re-provisioning experiments: hypothesis, arms,
//! samples, figures, verdict) and `nanogrid approve ID` / `nanogrid reject ID`.

use std::process::ExitCode;

use bytes::Bytes;
use http::Method;
use serde_json::Value;

use super::ClientArgs;
use super::commands::{admin_client, check};

pub async fn list(client: &ClientArgs) -> anyhow::Result<ExitCode> {
    let c = admin_client(client);
    let v = check(c.get("/v1/experiments").await?)?;
    println!(
        "mode {}; a trial runs {} ms and needs {} calls per arm; rule: {}",
        v["mode"].as_str().unwrap_or("?"),
        v["window_ms"],
        v["min_samples"],
        v["rule"].as_str().unwrap_or("?")
    );
    let list = v["experiments"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no experiments yet (the leader starts one when call traffic makes a node hot for a service)");
    }
    for e in &list {
        print!("\n{}", describe(e));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn decide(client: &ClientArgs, id: u64, approve: bool) -> anyhow::Result<ExitCode> {
    let c = admin_client(client);
    let action = if approve { "approve" } else { "reject" };
    let e = check(c.call(Method::POST, &format!("/v1/experiments/{id}/{action}"), None, Bytes::new()).await?)?;
    print!("{}", describe(&e));
    Ok(ExitCode::SUCCESS)
}

/// One experiment in a few lines.
fn describe(e: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("?").to_string();
    // A percentile that falls on failed calls is null.
    let ms = |v: &Value| v.as_f64().map_or_else(|| "failed".to_string(), |ms| format!("{ms} ms"));
    let mut out = format!("#{} {:<11} {} on {}\n", e["id"], s(&e["stage"]), s(&e["service"]), s(&e["node"]));
    out.push_str(&format!("  hypothesis: {}\n", s(&e["hypothesis"])));
    if let Some(so_far) = e.get("so_far") {
        out.push_str(&format!("  calls so far: old {}, new {}\n", so_far["old"], so_far["new"]));
    }
    if let Some(f) = e.get("figures").filter(|f| !f.is_null()) {
        for arm in ["old", "new"] {
            let a = &f[arm];
            out.push_str(&format!(
                "  {arm}: {:<40} {:>6} calls {:>4} errors  p50 {:>12}  p99 {:>12}\n",
                s(&a["arrangement"]),
                a["samples"],
                a["errors"],
                ms(&a["p50_ms"]),
                ms(&a["p99_ms"])
            ));
        }
    }
    if !e["verdict"].as_str().unwrap_or("").is_empty() {
        out.push_str(&format!("  verdict: {}\n", s(&e["verdict"])));
    }
    out
}
