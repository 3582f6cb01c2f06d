//! The faults of the campaign and the seeded schedule: one fault at a time (so at most a
//! minority of any partition's three replicas is hurt, the failure model the grid
//! promises to survive), held for a few seconds, then healed, then a pause.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::net::Net;
use crate::nodes::Nodes;
use crate::rng::Rng;

#[derive(Debug, Clone)]
pub enum Fault {
    /// kill -9, restarted when healed.
    Kill(usize),
    /// SIGSTOP for longer than an election timeout, then SIGCONT.
    Pause(usize),
    /// The nodes listed are cut from the rest, both ways (a minority of two).
    Partition(Vec<usize>),
    /// One node cut from the leader only.
    LeaderCut { node: usize, leader: usize },
    /// `from` can no longer reach `to`; the other way works.
    OneWay { from: usize, to: usize },
    /// Two pairs cut from each other; `bridge` sees both.
    Bridge { bridge: usize, left: [usize; 2], right: [usize; 2] },
    /// A share of what the node receives from its peers is dropped.
    Loss { node: usize, percent: u64 },
    /// The node's outgoing link is slow (a rate limit whose queue delays packets).
    Slow(usize),
    /// The node is stopped, a file of its store damaged, and it restarts: refused, then
    /// rebuilt from its peers with `--rebuild-store`.
    Corrupt { node: usize, flip: bool },
    /// The node's disk fills up: to below the room it keeps free, or to the last byte
    /// (then RocksDB itself runs out of space). It must refuse writes and say so, stay
    /// up, and take writes again once the room is back.
    DiskFull { node: usize, last_byte: bool },
}

/// Bytes left free by a disk-full fault that stops short of the last byte: below the
/// node's default minimum free (64 MiB).
const NEARLY_FULL: u64 = 16 << 20;

impl Fault {
    /// The fault's kind, for the campaign's count of faults by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Kill(_) => "kill",
            Fault::Pause(_) => "pause",
            Fault::Partition(_) => "minority partition",
            Fault::LeaderCut { .. } => "cut from the leader",
            Fault::OneWay { .. } => "one-way cut",
            Fault::Bridge { .. } => "bridge",
            Fault::Loss { .. } => "packet loss",
            Fault::Slow(_) => "slow link",
            Fault::Corrupt { .. } => "damaged store",
            Fault::DiskFull { .. } => "full disk",
        }
    }

    pub fn describe(&self) -> String {
        let n = |i: &usize| format!("n{}", i + 1);
        match self {
            Fault::Kill(i) => format!("kill -9 {}", n(i)),
            Fault::Pause(i) => format!("pause {}", n(i)),
            Fault::Partition(m) => {
                format!("partition {{{}}} from the rest", m.iter().map(n).collect::<Vec<_>>().join(","))
            }
            Fault::LeaderCut { node, leader } => format!("cut {} from the leader {}", n(node), n(leader)),
            Fault::OneWay { from, to } => format!("{} cannot reach {}", n(from), n(to)),
            Fault::Bridge { bridge, left, right } => format!(
                "bridge {}: {{{},{}}} cut from {{{},{}}}",
                n(bridge),
                n(&left[0]),
                n(&left[1]),
                n(&right[0]),
                n(&right[1])
            ),
            Fault::Loss { node, percent } => format!("{percent}% loss into {}", n(node)),
            Fault::Slow(i) => format!("slow link out of {}", n(i)),
            Fault::Corrupt { node, flip } => {
                format!("{} store damaged ({})", n(node), if *flip { "log byte flipped" } else { "MANIFEST cut" })
            }
            Fault::DiskFull { node, last_byte } => {
                format!("{} disk full ({})", n(node), if *last_byte { "to the last byte" } else { "16 MiB left" })
            }
        }
    }
}

/// Choose the next fault. `leader`: the current leader's index, if known.
pub fn choose(rng: &mut Rng, n: usize, leader: Option<usize>) -> Fault {
    let node = rng.range(0, n as u64) as usize;
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    match rng.range(0, 10) {
        0 => Fault::Kill(node),
        1 => Fault::Pause(node),
        2 => Fault::Partition(order[..2].to_vec()),
        3 => match leader {
            Some(leader) if leader != node => Fault::LeaderCut { node, leader },
            _ => Fault::Kill(node),
        },
        4 => Fault::OneWay { from: order[0], to: order[1] },
        5 => Fault::Bridge { bridge: order[0], left: [order[1], order[2]], right: [order[3], order[4]] },
        6 => Fault::Loss { node, percent: rng.range(10, 40) },
        7 => Fault::Slow(node),
        8 => Fault::Corrupt { node, flip: rng.range(0, 2) == 0 },
        _ => Fault::DiskFull { node, last_byte: rng.range(0, 2) == 0 },
    }
}

/// Put a fault in place. `Err` is the campaign's own failure (a command that did not
/// run), not a finding.
pub async fn apply(f: &Fault, nodes: &mut Nodes, net: &Net) -> anyhow::Result<Vec<String>> {
    let mut findings = Vec::new();
    match f {
        Fault::Kill(i) => nodes.kill(*i),
        Fault::Pause(i) => nodes.pause(*i),
        Fault::Partition(minority) => {
            for &a in minority {
                for b in (0..net.n).filter(|b| !minority.contains(b)) {
                    net.block(a, b)?;
                    net.block(b, a)?;
                }
            }
        }
        Fault::LeaderCut { node, leader } => {
            net.block(*node, *leader)?;
            net.block(*leader, *node)?;
        }
        Fault::OneWay { from, to } => net.block(*from, *to)?,
        Fault::Bridge { left, right, .. } => {
            for a in left {
                for b in right {
                    net.block(*a, *b)?;
                    net.block(*b, *a)?;
                }
            }
        }
        Fault::Loss { node, percent } => net.lossy(*node, *percent)?,
        Fault::Slow(i) => net.slow(*i, 512)?,
        Fault::Corrupt { node, flip } => {
            nodes.stop(*node).await;
            let what = nodes.corrupt(*node, *flip)?;
            // A damaged store must be refused, never served from.
            match nodes.start(*node, false).await {
                Err(e) if e.to_string().contains("is damaged") => {}
                Err(e) => findings.push(format!("n{} did not start after {what}, but not as damaged: {e}", node + 1)),
                Ok(()) => {
                    findings.push(format!("n{} started on a damaged store ({what})", node + 1));
                    nodes.stop(*node).await;
                }
            }
        }
        Fault::DiskFull { node, last_byte } => {
            let free = nodes.disks.fill(*node, if *last_byte { 0 } else { NEARLY_FULL })?;
            if !disk_full_is(nodes, *node, 1.0, Duration::from_secs(10)).await {
                findings.push(format!("n{} did not report its full disk ({free} bytes free)", node + 1));
            }
        }
    }
    Ok(findings)
}

/// Wait until node `i`'s `nanogrid_disk_full` reads `want`; false after `within`.
async fn disk_full_is(nodes: &Nodes, i: usize, want: f64, within: Duration) -> bool {
    metric_is(nodes, i, "nanogrid_disk_full", want, within).await
}

/// Wait until node `i`'s metric `name` reads `want`; false after `within`.
async fn metric_is(nodes: &Nodes, i: usize, name: &str, want: f64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if nodes.metric(i, name).await == Some(want) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Undo a fault: restart what was stopped, resume what was paused, drop every rule, give
/// the disk its room back. Returns findings (a node that did not come back from a full
/// disk).
pub async fn heal(f: &Fault, nodes: &mut Nodes, net: &Net) -> anyhow::Result<Vec<String>> {
    net.heal()?;
    let mut findings = Vec::new();
    match f {
        Fault::Kill(i) => nodes.start(*i, false).await?,
        Fault::Pause(i) => nodes.resume(*i),
        Fault::Corrupt { node, .. } => nodes.start(*node, true).await?,
        Fault::DiskFull { node, .. } => {
            nodes.disks.unfill(*node)?;
            if !nodes.alive(*node) {
                findings.push(format!("n{} exited while its disk was full: {}", node + 1, nodes.log_tail(*node, 5)));
                nodes.start(*node, false).await?;
            } else if !disk_full_is(nodes, *node, 0.0, Duration::from_secs(30)).await {
                findings.push(format!("n{} still reports a full disk 30 s after its room came back", node + 1));
            } else if !metric_is(nodes, *node, "nanogrid_store_stuck", 0.0, Duration::from_secs(30)).await {
                findings
                    .push(format!("n{}'s store was not opened again within 30 s of its room coming back", node + 1));
            }
        }
        _ => {}
    }
    Ok(findings)
}

/// What a schedule did and found.
#[derive(Default)]
pub struct Done {
    /// Each fault described, with when it came.
    pub faults: Vec<String>,
    /// How many of each kind.
    pub kinds: BTreeMap<String, u64>,
    /// Violations seen while faults were in place (a damaged store served from).
    pub findings: Vec<String>,
}

/// Faults until `stop`: each held 3-8 s, then healed, then 2-4 s of calm.
pub async fn schedule(rng: &mut Rng, nodes: &mut Nodes, net: &Net, stop: Instant) -> anyhow::Result<Done> {
    let mut done = Done::default();
    while Instant::now() + Duration::from_secs(6) < stop {
        let mut leader = None;
        for i in (0..nodes.n()).filter(|&i| nodes.running(i) && !nodes.paused[i]) {
            if let Some(name) = nodes.leader(i).await {
                leader = name.trim_start_matches('n').parse::<usize>().ok().map(|k| k - 1);
                break;
            }
        }
        let fault = choose(rng, nodes.n(), leader);
        let at = stop.saturating_duration_since(Instant::now());
        done.faults.push(format!("{} ({} s before the end)", fault.describe(), at.as_secs()));
        *done.kinds.entry(fault.kind().to_string()).or_default() += 1;
        eprintln!("  [{:>3} s left] {}", at.as_secs(), fault.describe());
        done.findings.extend(apply(&fault, nodes, net).await?);
        tokio::time::sleep(Duration::from_millis(rng.range(3000, 8000))).await;
        done.findings.extend(heal(&fault, nodes, net).await?);
        eprintln!("  [{:>3} s left] healed", stop.saturating_duration_since(Instant::now()).as_secs());
        tokio::time::sleep(Duration::from_millis(rng.range(2000, 4000))).await;
    }
    Ok(done)
}
