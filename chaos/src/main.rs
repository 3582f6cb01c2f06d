//! `nanogrid-chaos` (run by `./dev chaos`): the seeded fault campaign of issue 15.
//!
//! Each run starts five `nanogrid serve` processes, each in its own network namespace
//! (`net.rs`), deploys the samples, runs the workloads of `workload.rs` through every
//! node's ingress while `faults.rs` injects one fault after another, then heals
//! everything, waits for the cluster to converge, reads everything back and checks it
//! (`check.rs`). One line per run; `--record FILE` adds each run to the ledger
//! (`ledger.rs`, docs/chaos-runs.jsonl) and rebuilds the campaign section of that file
//! (docs/RELIABILITY.md) from every recorded run. A run with a violation keeps its histories, node logs and
//! data dirs, and prints the command that repeats its seed.

mod check;
mod disk;
mod faults;
mod ledger;
mod linearizable;
mod net;
mod nodes;
mod outcome;
mod rng;
mod workload;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use http::Method;

use nodes::Nodes;
use rng::Rng;
use workload::{Histories, Target};

#[derive(Parser)]
#[command(about = "Seeded fault campaign against five nanogrid nodes in network namespaces")]
struct Args {
    /// Runs to make; run k uses seed + k
    #[arg(long, default_value_t = 1)]
    runs: u64,
    /// First seed [default: from the clock]
    #[arg(long)]
    seed: Option<u64>,
    /// Seconds of faults and load per run
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Minutes of faults and load per run (instead of --seconds)
    #[arg(long, conflicts_with = "seconds")]
    minutes: Option<u64>,
    /// The nanogrid binary the nodes run
    #[arg(long, default_value = "target/release/nanogrid")]
    bin: PathBuf,
    /// Where the built samples are (kvstore, hello, wordcount, jobs)
    #[arg(long, default_value = "samples/target/wasm32-wasip2/release")]
    samples: PathBuf,
    /// Where runs keep their files (a passing run's are removed)
    #[arg(long, default_value = "target/chaos")]
    work: PathBuf,
    /// Add each run to the ledger and rebuild the campaign section of this markdown
    /// file from it
    #[arg(long)]
    record: Option<PathBuf>,
    /// The ledger of recorded runs (JSON lines), used with --record
    #[arg(long, default_value = "docs/chaos-runs.jsonl")]
    ledger: PathBuf,
}

/// States the linearizability search may visit per key before calling it undecided.
const REGISTER_BUDGET: usize = 500_000;

/// What one run found.
struct Report {
    seed: u64,
    seconds: u64,
    ops: u64,
    unknown: u64,
    faults: Vec<String>,
    fault_kinds: std::collections::BTreeMap<String, u64>,
    violations: Vec<String>,
    lost: u64,
    undecided: usize,
    availability: (f64, f64),
    jobs: usize,
    /// Requests that reached no node (refused, unreachable): left out of the histories.
    not_sent: u64,
}

impl Report {
    /// The run as the ledger keeps it; `commit` and `build` name what the nodes ran.
    fn entry(&self, commit: &str, build: &str) -> ledger::Entry {
        ledger::Entry {
            seed: self.seed,
            seconds: self.seconds,
            ops: self.ops,
            unknown: self.unknown,
            faults: self.faults.len() as u64,
            fault_kinds: self.fault_kinds.clone(),
            jobs: self.jobs as u64,
            violations: self.violations.clone(),
            lost: self.lost,
            undecided: self.undecided as u64,
            availability_mean: self.availability.0,
            availability_worst: self.availability.1,
            commit: commit.to_string(),
            date: nanogrid_date(),
            build: build.to_string(),
        }
    }
}

async fn setup(nodes: &mut Nodes, samples: &Path) -> anyhow::Result<()> {
    for i in 0..nodes.n() {
        nodes.start(i, false).await?;
    }
    nodes.wait_converged(Duration::from_secs(120)).await?;
    // `wordcount` only counts: a barrier call to it whose answer a fault lost is tried again.
    for (name, file, idempotent) in
        [("kv", "kvstore", false), ("hello", "hello", false), ("wordcount", "wordcount", true), ("jobs", "jobs", false)]
    {
        nodes.deploy(name, &samples.join(format!("{file}.wasm")), 10, idempotent).await?;
    }
    nodes.wait_serving("/hello/", Duration::from_secs(120)).await?;
    nodes.wait_serving("/kv/", Duration::from_secs(60)).await?;
    let http = nanogrid::client::Client::new();
    let url = format!("{}/kv/counter?consistency=all", nodes.ingress(0));
    let r = http.send(Method::PUT, &url, &[], "0".into()).await?;
    anyhow::ensure!(r.status == 200, "could not set the counter up: {} {}", r.status, r.text());
    Ok(())
}

fn spawn_workloads(t: &Target, h: &Arc<Histories>, rng: &mut Rng, stop: Instant) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for c in 0..6 {
        tasks.push(tokio::spawn(workload::register_client(t.clone(), h.clone(), c, rng.fork(), stop)));
    }
    for _ in 0..2 {
        tasks.push(tokio::spawn(workload::counter_client(t.clone(), h.clone(), rng.fork(), stop)));
    }
    for c in 0..2 {
        tasks.push(tokio::spawn(workload::set_client(t.clone(), h.clone(), c, rng.fork(), stop)));
    }
    tasks.push(tokio::spawn(workload::barrier_client(t.clone(), h.clone(), rng.fork(), stop)));
    tasks.push(tokio::spawn(workload::availability_client(t.clone(), h.clone(), rng.fork(), stop)));
    tasks
}

/// A quorum read after healing, retried while the answer is neither a value nor "absent".
async fn read_back(t: &Target, rng: &mut Rng, path: &str) -> Option<Option<String>> {
    for _ in 0..20 {
        if let Some(r) = t.send(rng, Method::GET, path, "").await.reply() {
            match r.status.as_u16() {
                200 => return Some(Some(r.text())),
                404 if outcome::absent(&r) => return Some(None),
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

async fn final_checks(t: &Target, h: &Histories, rng: &mut Rng, r: &mut Report) {
    let registers = h.registers.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // The search is CPU-bound: off the async workers, so signals still stop the run.
    let checked = tokio::task::spawn_blocking(move || check::registers(&registers, REGISTER_BUDGET));
    let (v, undecided) = checked.await.unwrap_or_else(|e| (vec![format!("the register check failed: {e}")], 0));
    r.violations.extend(v);
    r.undecided = undecided;

    let (acked, unknown) = {
        let c = h.counter.lock().unwrap_or_else(|e| e.into_inner());
        (c.acked, c.unknown)
    };
    let last = read_back(t, rng, "/kv/counter?consistency=quorum").await.flatten().and_then(|v| v.parse().ok());
    if let Some((msg, lost)) = check::counter(acked, unknown, last) {
        r.violations.push(msg);
        r.lost += lost;
    }

    let acked: Vec<String> = h.set.lock().unwrap_or_else(|e| e.into_inner()).acked.clone();
    let reads = futures::stream::iter(acked.iter().map(|k| {
        let (t, mut rng) = (t.clone(), rng.fork());
        async move { (k.clone(), read_back(&t, &mut rng, &format!("/kv/{k}?consistency=quorum")).await) }
    }))
    .buffer_unordered(16)
    .collect::<Vec<_>>()
    .await;
    // Unreadable is not proven lost: reported apart, and not counted as lost.
    let mut found = BTreeSet::new();
    let mut unreadable = Vec::new();
    for (k, read) in reads {
        match read {
            Some(Some(_)) => {
                found.insert(k);
            }
            Some(None) => {}
            None => unreadable.push(k),
        }
    }
    if !unreadable.is_empty() {
        r.violations.push(format!(
            "set: {} acknowledged adds could not be read after healing: {:?}",
            unreadable.len(),
            &unreadable[..unreadable.len().min(5)]
        ));
        found.extend(unreadable);
    }
    let missing = check::set(&acked, &found);
    if !missing.is_empty() {
        r.lost += missing.len() as u64;
        r.violations.push(format!(
            "set: {} of {} acknowledged adds lost: {:?}",
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(5)]
        ));
    }

    let jobs = std::mem::take(&mut *h.jobs.lock().unwrap_or_else(|e| e.into_inner()));
    r.jobs = jobs.len();
    let deadline = Instant::now() + Duration::from_secs(90);
    for job in &jobs {
        let mut result = None;
        while Instant::now() < deadline {
            match t.send(rng, Method::GET, &format!("/jobs/{}", job.id), "").await.reply() {
                Some(reply) if reply.status == 200 => {
                    result = reply.json().ok();
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
        r.violations.extend(check::job(job, result.as_ref()));
    }
    r.availability = check::availability(&h.availability.lock().unwrap_or_else(|e| e.into_inner()));
    r.ops = h.ops.load(std::sync::atomic::Ordering::Relaxed);
    r.unknown = h.unknown.load(std::sync::atomic::Ordering::Relaxed);
    r.violations.extend(h.outcomes.findings(r.ops, r.unknown));
    r.not_sent = h.outcomes.not_sent.load(std::sync::atomic::Ordering::Relaxed);
}

/// One run, start to end. `Err` is a failure of the campaign itself (it could not set up).
async fn run(args: &Args, seed: u64, dir: &Path) -> anyhow::Result<Report> {
    let mut rng = Rng::new(seed);
    let pid = std::process::id();
    let net = net::Net::create(&format!("ngc{}", pid % 1000), 100 + (pid % 100) as u8, 5)?;
    let mut nodes = Nodes::new(&args.bin, dir, &net)?;
    setup(&mut nodes, &args.samples).await.context("setting the cluster up")?;
    let target = Target {
        ingress: Arc::new((0..nodes.n()).map(|i| nodes.ingress(i)).collect()),
        http: nanogrid::client::Client::new(),
    };
    let h = Arc::new(Histories::new());
    let stop = Instant::now() + Duration::from_secs(args.seconds);
    let tasks = spawn_workloads(&target, &h, &mut rng, stop);
    let done = faults::schedule(&mut rng, &mut nodes, &net, stop).await?;
    let mut violations = done.findings;
    for t in tasks {
        t.await?;
    }
    // Heal everything and let the cluster settle.
    net.heal()?;
    for i in 0..nodes.n() {
        nodes.resume(i);
        if !nodes.running(i) {
            nodes.start(i, true).await?;
        }
    }
    if let Err(e) = nodes.wait_converged(Duration::from_secs(120)).await {
        violations.push(format!("after healing: {e}"));
    }
    let mut report = Report {
        seed,
        seconds: args.seconds,
        ops: 0,
        unknown: 0,
        faults: done.faults,
        fault_kinds: done.kinds,
        violations,
        lost: 0,
        undecided: 0,
        availability: (0.0, 0.0),
        jobs: 0,
        not_sent: 0,
    };
    final_checks(&target, &h, &mut rng, &mut report).await;
    nodes.disks.keep = !report.violations.is_empty();
    drop(nodes); // the processes, then the data dirs (copied out first if kept)
    if !report.violations.is_empty() {
        let registers = h.registers.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let text: Vec<String> =
            registers.iter().flat_map(|(k, ops)| ops.iter().map(move |o| format!("{k} {o:?}"))).collect();
        std::fs::write(dir.join("history.txt"), text.join("\n"))?;
        let set = h.set.lock().unwrap_or_else(|e| e.into_inner());
        let text: Vec<String> = set.log.iter().map(|(k, n, a, b, s)| format!("{k} {n} [{a}, {b}] {s}")).collect();
        std::fs::write(dir.join("set.txt"), text.join("\n"))?;
        std::fs::write(dir.join("t0.txt"), format!("{:?}\n", std::time::SystemTime::now() - h.t0.elapsed()))?;
        std::fs::write(dir.join("faults.txt"), report.faults.join("\n"))?;
        std::fs::write(dir.join("violations.txt"), report.violations.join("\n"))?;
    }
    Ok(report)
}

/// Adds a run to the ledger and rebuilds the campaign section of `path` from it.
fn record(path: &Path, ledger_path: &Path, entry: &ledger::Entry) -> anyhow::Result<()> {
    ledger::append(ledger_path, entry)?;
    let runs = ledger::read(ledger_path)?;
    ledger::write_section(path, &ledger::section(&runs, &ledger_path.display().to_string()))
}

/// The commit the nodes' binary comes from, as `git describe` names it (`-dirty` when
/// the work tree had changes).
fn commit() -> String {
    let out = std::process::Command::new("git").args(["describe", "--always", "--dirty"]).output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => "unknown".to_string(),
    }
}

fn nanogrid_date() -> String {
    let out = std::process::Command::new("date").arg("+%Y-%m-%d").output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
}

async fn campaign(args: Args) -> anyhow::Result<bool> {
    let first = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs())
    });
    anyhow::ensure!(args.bin.exists(), "no nanogrid binary at {} (build it, or pass --bin)", args.bin.display());
    let (commit, build) = (commit(), if args.bin.to_string_lossy().contains("/debug/") { "debug" } else { "release" });
    // Read once before the first run, so a damaged ledger stops the campaign at once.
    if args.record.is_some() {
        ledger::read(&args.ledger)?;
    }
    let mut failed = false;
    for k in 0..args.runs {
        let seed = first + k;
        let dir = std::fs::canonicalize(&args.work).unwrap_or(args.work.clone()).join(format!("seed-{seed}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let dir = std::fs::canonicalize(&dir)?;
        // Bounded: a run that does not finish is a failure of the campaign, its files kept.
        let bound = Duration::from_secs(args.seconds + 600);
        let report = match tokio::time::timeout(bound, run(&args, seed, &dir)).await {
            Ok(r) => r.with_context(|| format!("run with seed {seed} (files in {})", dir.display()))?,
            Err(_) => {
                anyhow::bail!("run with seed {seed} did not finish within {bound:?} (files in {})", dir.display())
            }
        };
        let entry = report.entry(&commit, build);
        println!("{}", entry.line());
        println!("  requests that reached no node (refused, unreachable; not in the histories): {}", report.not_sent);
        for f in &report.faults {
            println!("  fault: {f}");
        }
        if report.violations.is_empty() {
            let _ = std::fs::remove_dir_all(&dir);
        } else {
            failed = true;
            for v in &report.violations {
                println!("  violation: {v}");
            }
            println!(
                "  kept {} (histories, node logs, data); repeat: ./dev chaos --seed {seed} --seconds {}",
                dir.display(),
                args.seconds
            );
        }
        // After every run, so a campaign stopped early still leaves its record.
        if let Some(path) = &args.record {
            record(path, &args.ledger, &entry)?;
        }
    }
    Ok(!failed)
}

/// The campaign, stopped early by SIGINT or SIGTERM: dropping it kills the nodes and
/// deletes the namespaces (their `Drop`s).
async fn interruptible(args: Args) -> anyhow::Result<bool> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = campaign(args) => r,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        _ = term.recv() => anyhow::bail!("terminated"),
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if let Some(m) = args.minutes {
        args.seconds = m * 60;
    }
    let ok = tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(interruptible(args))?;
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
