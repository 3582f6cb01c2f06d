//! The campaign's record: every finished run is appended to a ledger (JSON lines, one
//! per run, with the commit whose binary ran it), and the campaign section of
//! docs/RELIABILITY.md is rebuilt from the whole ledger. Campaigns made by separate
//! invocations (a session ends, a machine reboots) therefore add up instead of each
//! replacing the last one's table, and the table says which code each run tested.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One finished run as the ledger keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub seed: u64,
    pub seconds: u64,
    pub ops: u64,
    pub unknown: u64,
    pub faults: u64,
    /// Faults by kind ("kill", "partition", ...), for the table of what was injected.
    #[serde(default)]
    pub fault_kinds: BTreeMap<String, u64>,
    pub jobs: u64,
    pub violations: Vec<String>,
    pub lost: u64,
    pub undecided: u64,
    pub availability_mean: f64,
    pub availability_worst: f64,
    /// The commit the nodes' binary was built from (`git describe --dirty`).
    pub commit: String,
    pub date: String,
    /// "release" or "debug".
    pub build: String,
}

impl Entry {
    pub fn line(&self) -> String {
        format!(
            "seed {} · {} s · {} ops ({} unknown) · {} faults · {} jobs · violations {} · lost acknowledged writes {} · \
             undecided registers {} · availability {:.1} % (worst second {:.0} %)",
            self.seed,
            self.seconds,
            self.ops,
            self.unknown,
            self.faults,
            self.jobs,
            self.violations.len(),
            self.lost,
            self.undecided,
            self.availability_mean * 100.0,
            self.availability_worst * 100.0
        )
    }
}

/// Appends one run to the ledger.
pub fn append(ledger: &Path, entry: &Entry) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(ledger)?;
    writeln!(f, "{}", serde_json::to_string(entry)?)?;
    f.sync_all()?;
    Ok(())
}

/// Every run in the ledger; a line that does not parse is an error naming it (the
/// ledger is a record: a damaged one is mended by hand, not skipped silently).
pub fn read(ledger: &Path) -> anyhow::Result<Vec<Entry>> {
    let text = match std::fs::read_to_string(ledger) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            serde_json::from_str(l)
                .map_err(|e| anyhow::anyhow!("{}: line {} is not a campaign run ({e})", ledger.display(), n + 1))
        })
        .collect()
}

/// Totals over some runs.
#[derive(Default)]
struct Totals {
    runs: u64,
    ops: u64,
    unknown: u64,
    faults: u64,
    jobs: u64,
    violations: u64,
    lost: u64,
    undecided: u64,
    avail_sum: f64,
    avail_worst: f64,
}

impl Totals {
    fn of<'a>(entries: impl Iterator<Item = &'a Entry>) -> Totals {
        let mut t = Totals { avail_worst: 1.0, ..Totals::default() };
        for e in entries {
            t.runs += 1;
            t.ops += e.ops;
            t.unknown += e.unknown;
            t.faults += e.faults;
            t.jobs += e.jobs;
            t.violations += e.violations.len() as u64;
            t.lost += e.lost;
            t.undecided += e.undecided;
            t.avail_sum += e.availability_mean;
            t.avail_worst = t.avail_worst.min(e.availability_worst);
        }
        t
    }

    fn row(&self, label: &str) -> String {
        format!(
            "| {label} | {} | {} | {} | {} | {} | **{}** | **{}** | {} | {:.1} %, {:.0} % |\n",
            self.runs,
            self.ops,
            self.unknown,
            self.faults,
            self.jobs,
            self.violations,
            self.lost,
            self.undecided,
            self.avail_sum / self.runs.max(1) as f64 * 100.0,
            self.avail_worst * 100.0
        )
    }
}

/// The campaign section built from every run in the ledger.
pub fn section(entries: &[Entry], ledger_name: &str) -> String {
    let mut out = String::from("## Fault campaign\n\n");
    let total = Totals::of(entries.iter());
    let long = entries.iter().filter(|e| e.seconds >= 60 && e.build == "release").count();
    out.push_str(&format!(
        "{} runs recorded in `{ledger_name}` ({long} of them release builds of at least 60 s), five nodes \
         each in its own network namespace. Run more with `./dev chaos --runs N --seed S`; they are added to \
         the ledger and this table. Repeat one run with `./dev chaos --seed SEED --seconds T`.\n\n",
        entries.len()
    ));
    out.push_str(
        "| commit | runs | operations | unknown outcomes | faults | barrier jobs | violations | lost acknowledged \
         writes | undecided registers | availability (mean, worst second) |\n| --- | ---: | ---: | ---: | ---: | ---: \
         | ---: | ---: | ---: | --- |\n",
    );
    let mut commits: Vec<&str> = Vec::new();
    for e in entries {
        if !commits.contains(&e.commit.as_str()) {
            commits.push(&e.commit);
        }
    }
    for c in &commits {
        let group = entries.iter().filter(|e| e.commit == *c);
        let first = entries.iter().find(|e| e.commit == *c).map_or("", |e| e.date.as_str());
        out.push_str(&Totals::of(group).row(&format!("`{c}` ({first})")));
    }
    out.push_str(&total.row("**all**"));
    let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
    for e in entries {
        for (k, n) in &e.fault_kinds {
            *kinds.entry(k).or_default() += n;
        }
    }
    if !kinds.is_empty() {
        let list: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        out.push_str(&format!("\nFaults injected, by kind (runs that recorded kinds): {}.\n", list.join(", ")));
    }
    out.push_str("\n<details><summary>Every run</summary>\n\n");
    for e in entries {
        out.push_str(&format!("- `{}` {} {} · {}\n", e.commit, e.build, e.date, e.line()));
        for v in &e.violations {
            out.push_str(&format!("  - violation: {v}\n"));
        }
    }
    out.push_str("\n</details>\n");
    out
}

/// Replaces the campaign section of a markdown file (between its markers) with `section`.
pub fn write_section(path: &Path, section: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (begin, end) = ("<!-- chaos:begin -->", "<!-- chaos:end -->");
    let block = format!("{begin}\n{section}{end}");
    let next = match (text.find(begin), text.find(end)) {
        (Some(b), Some(e)) if e > b => format!("{}{block}{}", &text[..b], &text[e + end.len()..]),
        _ => format!("{}\n\n{block}\n", text.trim_end()),
    };
    std::fs::write(path, next)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seed: u64, commit: &str, violations: usize) -> Entry {
        Entry {
            seed,
            seconds: 60,
            ops: 100,
            unknown: 5,
            faults: 7,
            fault_kinds: BTreeMap::from([("kill".to_string(), 2)]),
            jobs: 3,
            violations: vec!["v".to_string(); violations],
            lost: 0,
            undecided: 1,
            availability_mean: 0.9,
            availability_worst: 0.5,
            commit: commit.to_string(),
            date: "2026-12-02".to_string(),
            build: "release".to_string(),
        }
    }

    #[test]
    fn runs_of_separate_campaigns_add_up_in_the_table() {
        let dir = std::env::temp_dir().join(format!("ledger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ledger = dir.join("runs.jsonl");
        append(&ledger, &entry(1, "aaa", 0)).unwrap();
        append(&ledger, &entry(2, "bbb", 1)).unwrap();
        let runs = read(&ledger).unwrap();
        assert_eq!(runs, vec![entry(1, "aaa", 0), entry(2, "bbb", 1)]);
        let s = section(&runs, "runs.jsonl");
        assert!(s.contains("| `aaa` (2026-12-02) | 1 | 100 |"), "{s}");
        assert!(s.contains("| **all** | 2 | 200 | 10 | 14 | 6 | **1** | **0** |"), "{s}");
        assert!(s.contains("kill 4"), "{s}");
        std::fs::write(&ledger, "{\"seed\": 1}\n").unwrap();
        let err = read(&ledger).unwrap_err().to_string();
        assert!(err.contains("line 1 is not a campaign run"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
