//! The checkers: each takes what the clients recorded (and what a final read after
//! healing found) and says what is wrong with it. Each has a self-test with a history it
//! must flag.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::linearizable::{self, Op, Verdict};
use crate::workload::Job;

/// Registers: every key's history must be linearizable. Returns violations and how many
/// keys the search could not decide within its budget.
pub fn registers(histories: &BTreeMap<String, Vec<Op>>, budget: usize) -> (Vec<String>, usize) {
    let mut violations = Vec::new();
    let mut undecided = 0;
    for (key, ops) in histories {
        match linearizable::check_within(ops, budget) {
            Verdict::Linearizable => {}
            Verdict::Violation(e) => violations.push(format!("register {key}: {}", first_line(&e))),
            Verdict::Unknown { .. } => undecided += 1,
        }
    }
    (violations, undecided)
}

fn first_line(s: &str) -> &str {
    s.split(';').next().unwrap_or(s)
}

/// The counter: no acknowledged increment lost, none doubled: `acked ≤ final ≤ acked +
/// unknown`. Returns the violation and how many acknowledged increments are missing.
pub fn counter(acked: u64, unknown: u64, last: Option<u64>) -> Option<(String, u64)> {
    let Some(last) = last else {
        return Some(("counter: the final read found no value".into(), acked));
    };
    if last < acked {
        return Some((
            format!("counter: {last} after {acked} acknowledged increments: {} lost", acked - last),
            acked - last,
        ));
    }
    if last > acked + unknown {
        let msg =
            format!("counter: {last} after {acked} acknowledged and {unknown} unknown increments: some counted twice");
        return Some((msg, 0));
    }
    None
}

/// The set: every acknowledged add is read back. Returns the missing elements.
pub fn set(acked: &[String], found: &BTreeSet<String>) -> Vec<String> {
    acked.iter().filter(|k| !found.contains(*k)).cloned().collect()
}

/// A barrier job: its continuation ran (a result is stored) and every call was answered
/// (the words of every line are counted).
pub fn job(job: &Job, result: Option<&Value>) -> Option<String> {
    let Some(r) = result else {
        return Some(format!("job {}: its continuation never stored a result", job.id));
    };
    let (words, lines, failed) = (r["words"].as_u64(), r["lines"].as_u64(), r["failed"].as_u64());
    if words != Some(job.words) || lines != Some(job.lines) || failed != Some(0) {
        return Some(format!("job {}: expected {} words over {} lines, got {r}", job.id, job.words, job.lines));
    }
    None
}

/// Availability: the share of answered plain requests, and of the worst second.
pub fn availability(per_second: &BTreeMap<u64, (u64, u64)>) -> (f64, f64) {
    let (ok, all) = per_second.values().fold((0, 0), |(a, b), (o, n)| (a + o, b + n));
    let worst = per_second.values().filter(|(_, n)| *n > 0).map(|(o, n)| *o as f64 / *n as f64).fold(1.0, f64::min);
    (if all == 0 { 0.0 } else { ok as f64 / all as f64 }, worst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linearizable::{Call, Ret};

    #[test]
    fn the_counter_check_flags_lost_and_doubled_increments() {
        assert_eq!(counter(10, 2, Some(11)), None);
        assert_eq!(counter(10, 0, Some(10)), None);
        assert_eq!(counter(10, 2, Some(9)).map(|v| v.1), Some(1), "one acknowledged increment lost");
        assert!(counter(10, 2, Some(13)).is_some_and(|v| v.0.contains("twice")));
        assert!(counter(3, 0, None).is_some());
    }

    #[test]
    fn the_set_check_flags_a_missing_element() {
        let acked = vec!["a".to_string(), "b".to_string()];
        assert!(set(&acked, &["a", "b", "c"].iter().map(|s| s.to_string()).collect()).is_empty());
        assert_eq!(set(&acked, &["a".to_string()].into_iter().collect()), vec!["b".to_string()]);
    }

    #[test]
    fn the_job_check_flags_a_missing_or_wrong_result() {
        let j = Job { id: "j".into(), words: 6, lines: 3 };
        assert_eq!(job(&j, Some(&serde_json::json!({"words": 6, "lines": 3, "failed": 0}))), None);
        assert!(job(&j, None).is_some());
        assert!(job(&j, Some(&serde_json::json!({"words": 4, "lines": 3, "failed": 1}))).is_some());
    }

    #[test]
    fn the_register_check_flags_a_stale_read() {
        let op = |call, ret, start, end| Op { client: 0, call, ret, start, end };
        let stale = vec![
            op(Call::Write("a".into()), Ret::Written, 0, 10),
            op(Call::Write("b".into()), Ret::Written, 20, 30),
            op(Call::Read, Ret::Read(Some("a".into())), 40, 50),
        ];
        let (v, undecided) = registers(&BTreeMap::from([("r0".to_string(), stale)]), 10_000);
        assert_eq!((v.len(), undecided), (1, 0), "{v:?}");
    }

    #[test]
    fn availability_is_the_share_answered() {
        let a = BTreeMap::from([(0, (10, 10)), (1, (5, 10))]);
        assert_eq!(availability(&a), (0.75, 0.5));
    }
}
