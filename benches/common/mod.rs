//! Helpers the in-process benchmarks share (`#[path]`-included by each bench target).

#![allow(dead_code)]

use std::time::Instant;

#[derive(Clone, Copy)]
pub struct Stats {
    pub p50: f64,
    pub p99: f64,
}

/// Percentiles of latencies in microseconds.
pub fn stats(mut us: Vec<f64>) -> Stats {
    us.sort_by(f64::total_cmp);
    let at = |q: f64| us[((us.len() as f64 * q) as usize).min(us.len() - 1)];
    Stats { p50: at(0.50), p99: at(0.99) }
}

/// Run `f(0..n)` one after another and time each call.
pub async fn timed<F, Fut>(n: usize, mut f: F) -> Stats
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut us = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        f(i).await;
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    stats(us)
}

/// Today's date (UTC), for the "measured on" line.
pub fn today() -> String {
    let out = std::process::Command::new("date").arg("-u").arg("+%Y-%m-%d").output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
}

/// Replace the `<!-- {name}:begin -->` … `<!-- {name}:end -->` block of `doc` with `body`
/// (appended when the markers are missing).
pub fn write_section(doc: &str, name: &str, body: &str) -> anyhow::Result<()> {
    let (begin, end) = (format!("<!-- {name}:begin -->"), format!("<!-- {name}:end -->"));
    let text = std::fs::read_to_string(doc).unwrap_or_default();
    let block = format!("{begin}\n{body}{end}");
    let next = match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if e > b => format!("{}{block}{}", &text[..b], &text[e + end.len()..]),
        _ => format!("{}\n{block}\n", text.trim_end()),
    };
    std::fs::write(doc, next)?;
    Ok(())
}

/// A bench binary's arguments `<component.wasm> [BENCHMARKS.md]` (cargo's own `--bench`
/// flag is skipped), and a runtime to run the bench on.
pub fn main_with<F, Fut>(name: &str, component: &str, run: F) -> anyhow::Result<()>
where
    F: FnOnce(String, String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let Some(wasm) = args.first().cloned() else {
        anyhow::bail!("usage: {name} <{component}.wasm> <BENCHMARKS.md>");
    };
    let doc = args.get(1).cloned().unwrap_or_else(|| "docs/BENCHMARKS.md".into());
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(wasm, doc))
}
