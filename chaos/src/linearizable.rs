//! A small linearizability checker for one register with compare-and-swap (the
//! Wing–Gong search with memoisation, as Knossos and Porcupine do it).
//!
//! Each operation has its call and return time. An operation whose outcome the client
//! does not know (an error, a timeout) may have taken effect at any time after its call,
//! or never: it returns "at infinity" and need not be placed. A history is linearizable
//! when the operations can be put in one order that respects real time (an operation
//! that returned before another was called comes first) and in which every read sees the
//! latest write and every compare-and-swap decides by it.
//!
//! The search can explode on long histories with many operations of unknown outcome, so
//! it has a budget of states: past it the verdict is `Unknown`, never a hang.
//!
//! Shared by the chaos campaign and the e2e cluster tests (`#[path]`-included there;
//! each uses part of it).
#![allow(dead_code)]

use std::collections::HashSet;

#[derive(Debug, Clone)]
pub enum Call {
    Write(String),
    Read,
    Cas { expected: Option<String>, new: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Ret {
    Written,
    Read(Option<String>),
    Swapped(bool),
    /// Failed or timed out: may or may not have happened.
    Unknown,
}

#[derive(Debug, Clone)]
pub struct Op {
    pub client: usize,
    pub call: Call,
    pub ret: Ret,
    pub start: u64,
    pub end: u64,
}

/// What the search concluded.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Linearizable,
    /// No order explains the history; the message shows it.
    Violation(String),
    /// The budget of states ran out first.
    Unknown {
        states: usize,
    },
}

/// States the search may visit by default (a few hundred MB at worst).
pub const DEFAULT_BUDGET: usize = 2_000_000;

/// `Err` names a stretch of the history no order can explain (or says the search ran out
/// of its budget, which a test must not pass either).
pub fn check(history: &[Op]) -> Result<(), String> {
    match check_within(history, DEFAULT_BUDGET) {
        Verdict::Linearizable => Ok(()),
        Verdict::Violation(e) => Err(e),
        Verdict::Unknown { states } => Err(format!("undecided after {states} states")),
    }
}

/// Search at most `budget` states.
pub fn check_within(history: &[Op], budget: usize) -> Verdict {
    // A read that failed tells nothing.
    let ops: Vec<&Op> = history.iter().filter(|o| !(matches!(o.call, Call::Read) && o.ret == Ret::Unknown)).collect();
    let n = ops.len();
    let end = |o: &Op| if o.ret == Ret::Unknown { u64::MAX } else { o.end };
    let required = ops.iter().filter(|o| o.ret != Ret::Unknown).count();
    let mut seen: HashSet<(Vec<u64>, Option<String>)> = HashSet::new();
    // Depth-first: (placed set, value, how many required ops are placed).
    let mut stack: Vec<(Vec<u64>, Option<String>, usize)> = vec![(vec![0; n.div_ceil(64)], None, 0)];
    let mut deepest = 0;
    while let Some((done, value, placed)) = stack.pop() {
        if placed == required {
            return Verdict::Linearizable;
        }
        if seen.len() > budget {
            return Verdict::Unknown { states: seen.len() };
        }
        deepest = deepest.max(placed);
        let is_done = |i: usize| done[i / 64] & (1 << (i % 64)) != 0;
        let horizon = (0..n).filter(|&i| !is_done(i)).map(|i| end(ops[i])).min().unwrap_or(u64::MAX);
        for i in (0..n).filter(|&i| !is_done(i) && ops[i].start < horizon) {
            let o = ops[i];
            let next = match (&o.call, &o.ret) {
                (Call::Write(v), Ret::Written | Ret::Unknown) => Some(Some(v.clone())),
                (Call::Read, Ret::Read(v)) => (*v == value).then(|| value.clone()),
                (Call::Cas { expected, new }, Ret::Swapped(true) | Ret::Unknown) => {
                    (*expected == value).then(|| Some(new.clone()))
                }
                (Call::Cas { expected, .. }, Ret::Swapped(false)) => (*expected != value).then(|| value.clone()),
                _ => None,
            };
            let Some(next) = next else { continue };
            let mut d = done.clone();
            d[i / 64] |= 1 << (i % 64);
            if seen.insert((d.clone(), next.clone())) {
                let placed = placed + usize::from(o.ret != Ret::Unknown);
                stack.push((d, next, placed));
            }
        }
    }
    Verdict::Violation(format!(
        "not linearizable: at most {deepest} of {required} completed operations can be ordered; history: {:#?}",
        ops.iter()
            .map(|o| format!("c{} {:?} -> {:?} [{}, {}]", o.client, o.call, o.ret, o.start, end(o)))
            .collect::<Vec<_>>()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(call: Call, ret: Ret, start: u64, end: u64) -> Op {
        Op { client: 0, call, ret, start, end }
    }
    fn w(v: &str) -> Call {
        Call::Write(v.into())
    }
    fn r(v: Option<&str>) -> Ret {
        Ret::Read(v.map(str::to_string))
    }

    #[test]
    fn the_checker_accepts_good_histories_and_rejects_bad_ones() {
        // Sequential and consistent.
        let good = [op(w("a"), Ret::Written, 0, 10), op(Call::Read, r(Some("a")), 20, 30)];
        assert!(check(&good).is_ok());
        // A read that sees an overwritten value after the overwrite returned.
        let stale =
            [op(w("a"), Ret::Written, 0, 10), op(w("b"), Ret::Written, 20, 30), op(Call::Read, r(Some("a")), 40, 50)];
        assert!(check(&stale).is_err());
        // Concurrent with a write, reads may see either value, but never go back.
        let back = [
            op(w("a"), Ret::Written, 0, 100),
            op(Call::Read, r(None), 10, 20),
            op(Call::Read, r(Some("a")), 30, 40),
            op(Call::Read, r(None), 50, 60),
        ];
        assert!(check(&back).is_err());
        assert!(check(&back[..3]).is_ok());
        // A write of unknown outcome may have happened…
        let unknown = [op(w("a"), Ret::Unknown, 0, 5), op(Call::Read, r(Some("a")), 50, 60)];
        assert!(check(&unknown).is_ok());
        // …or not, but not both.
        let both =
            [op(w("a"), Ret::Unknown, 0, 5), op(Call::Read, r(Some("a")), 50, 60), op(Call::Read, r(None), 70, 80)];
        assert!(check(&both).is_err());
        // Two compare-and-swaps from the same value cannot both win.
        let cas = |e: Option<&str>, n: &str| Call::Cas { expected: e.map(str::to_string), new: n.into() };
        let twice = [
            op(w("a"), Ret::Written, 0, 10),
            op(cas(Some("a"), "b"), Ret::Swapped(true), 20, 40),
            op(cas(Some("a"), "c"), Ret::Swapped(true), 20, 40),
        ];
        assert!(check(&twice).is_err());
        let once = [
            op(w("a"), Ret::Written, 0, 10),
            op(cas(Some("a"), "b"), Ret::Swapped(true), 20, 40),
            op(cas(Some("a"), "c"), Ret::Swapped(false), 20, 40),
            op(Call::Read, r(Some("b")), 50, 60),
        ];
        assert!(check(&once).is_ok());
    }

    #[test]
    fn a_search_past_its_budget_says_unknown_instead_of_hanging() {
        // Many concurrent writes of unknown outcome and reads of values none of them wrote
        // until the end: the search must try many orders before it can tell.
        let mut h: Vec<Op> = (0..40).map(|i| op(w(&format!("v{i}")), Ret::Unknown, 0, 1)).collect();
        h.push(op(Call::Read, r(Some("nobody")), 10, 20));
        assert!(matches!(check_within(&h, 1000), Verdict::Unknown { .. }));
    }
}
