//! The rule that decides an experiment: both arms' p50 and p99, and a bootstrap interval
//! on how much the new arrangement gains over the old.
//!
//! Gain is relative: `(old − new) / old` of a percentile, so 0.3 means the new arm's
//! p50 is 30 % lower. Its 95 % interval comes from [`RESAMPLES`] bootstrap resamples of
//! both arms (each arm resampled with replacement, the percentile gain of each pair, the
//! 2.5th and 97.5th percentiles of those gains). A call that failed (a queue timeout, a
//! 5xx, a lost peer) counts as slower than every answer: an arm that fails a third of
//! its calls has those calls at the top of its distribution, not out of it, so a change
//! that stops failures is not judged on the survivors alone. A percentile that falls on
//! failed calls is shown as failed (`null`), and its gain against an answer is 100 %
//! (−100 % the other way). The change is kept when
//! - the p50 gain's interval lies wholly above `min_gain` (clearly better, by enough to
//!   be worth an instance move: a callee dominated by its own work gains a few percent
//!   and is rolled back),
//! - the p99 gain's interval does not lie wholly below zero (the tail is not clearly
//!   worse), and
//! - the new arm's error rate is at most one point above the old one's.

use serde::{Deserialize, Serialize};

pub use crate::services::trials::ArmSamples;

/// Bootstrap resamples per interval.
pub const RESAMPLES: usize = 1000;
/// Samples per arm the bootstrap uses (the newest; more add time, not information).
pub const MAX_SAMPLES: usize = 2000;

/// One arm as an experiment reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmFigures {
    /// What the arm ran on, in words.
    pub arrangement: String,
    pub samples: u64,
    pub errors: u64,
    /// `None` when the percentile falls on failed calls.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// A gain and its 95 % bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub estimate: f64,
    pub lo: f64,
    pub hi: f64,
}

/// What the leader measured and concluded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub old: ArmFigures,
    pub new: ArmFigures,
    /// Relative gain of the new arm's p50 over the old one's (0.3 = 30 % lower).
    pub p50_gain: Interval,
    pub p99_gain: Interval,
    /// The rule, with its threshold, as applied.
    pub rule: String,
    pub won: bool,
}

/// Judge two arms (each with at least one call, answered or failed; `micros` may be the
/// newest of more `answered` calls). `seed` makes the resampling repeatable (the
/// experiment's id).
pub fn judge(old: &ArmSamples, new: &ArmSamples, labels: (String, String), min_gain: f64, seed: u64) -> Figures {
    let (a, b) = (with_failures(old), with_failures(new));
    let mut rng = SplitMix(seed ^ 0x9e37_79b9_7f4a_7c15);
    let (mut g50, mut g99) = (Vec::with_capacity(RESAMPLES), Vec::with_capacity(RESAMPLES));
    let (mut ra, mut rb) = (vec![0u32; a.len()], vec![0u32; b.len()]);
    for _ in 0..RESAMPLES {
        resample(&a, &mut ra, &mut rng);
        resample(&b, &mut rb, &mut rng);
        let (a50, a99) = (percentile(&mut ra, 0.50), percentile(&mut ra, 0.99));
        let (b50, b99) = (percentile(&mut rb, 0.50), percentile(&mut rb, 0.99));
        g50.push(gain(a50, b50));
        g99.push(gain(a99, b99));
    }
    let (mut sa, mut sb) = (a, b);
    let (a50, a99, b50, b99) =
        (percentile(&mut sa, 0.50), percentile(&mut sa, 0.99), percentile(&mut sb, 0.50), percentile(&mut sb, 0.99));
    let p50_gain = interval(gain(a50, b50), &mut g50);
    let p99_gain = interval(gain(a99, b99), &mut g99);
    let rate = |s: &ArmSamples| s.errors as f64 / (s.errors + s.answered).max(1) as f64;
    let won = p50_gain.lo > min_gain && p99_gain.hi >= 0.0 && rate(new) <= rate(old) + 0.01;
    let ms = |us: u32| (us != FAILED).then(|| round3(f64::from(us) / 1000.0));
    let arm = |label: String, s: &ArmSamples, p50: u32, p99: u32| ArmFigures {
        arrangement: label,
        samples: s.answered,
        errors: s.errors,
        p50_ms: ms(p50),
        p99_ms: ms(p99),
    };
    Figures {
        old: arm(labels.0, old, a50, a99),
        new: arm(labels.1, new, b50, b99),
        p50_gain,
        p99_gain,
        rule: rule(min_gain),
        won,
    }
}

/// A failed call's place in an arm's durations: above every answer.
const FAILED: u32 = u32::MAX;

/// An arm's newest durations, with its failed calls among them as [`FAILED`] in the
/// proportion the arm failed (the durations may be the newest of more answers).
fn with_failures(s: &ArmSamples) -> Vec<u32> {
    let answers = &s.micros[s.micros.len().saturating_sub(MAX_SAMPLES)..];
    let failed = if answers.is_empty() {
        s.errors.min(MAX_SAMPLES as u64) as usize
    } else {
        let share = s.errors as f64 / s.answered.max(answers.len() as u64) as f64;
        (share * answers.len() as f64).round() as usize
    };
    let mut v = Vec::with_capacity(answers.len() + failed);
    v.extend(answers.iter().map(|&us| us.min(FAILED - 1)));
    v.resize(answers.len() + failed, FAILED);
    if v.is_empty() {
        // No call at all: callers judge only arms with calls; an empty arm reads as failed.
        v.push(FAILED);
    }
    v
}

/// The rule in words, as `GET /v1/experiments` shows it.
pub fn rule(min_gain: f64) -> String {
    format!(
        "keep when the 95 % bootstrap interval ({RESAMPLES} resamples) of the p50 gain lies above {:.0} %, the p99 \
         gain's interval is not wholly below 0 and the error rate rises by at most one point; otherwise roll back",
        min_gain * 100.0
    )
}

/// Relative gain of `new` over `old` (µs); a failed percentile is slower than any answer.
fn gain(old: u32, new: u32) -> f64 {
    match (old == FAILED, new == FAILED) {
        (true, true) => 0.0,
        (true, false) => 1.0,
        (false, true) => -1.0,
        _ if old == 0 => 0.0,
        _ => (f64::from(old) - f64::from(new)) / f64::from(old),
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn interval(estimate: f64, gains: &mut [f64]) -> Interval {
    gains.sort_by(f64::total_cmp);
    let at = |q: f64| gains[((gains.len() - 1) as f64 * q).round() as usize];
    Interval { estimate: round3(estimate), lo: round3(at(0.025)), hi: round3(at(0.975)) }
}

/// Nearest-rank percentile (reorders `v`).
fn percentile(v: &mut [u32], q: f64) -> u32 {
    let k = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    *v.select_nth_unstable(k).1
}

fn resample(from: &[u32], into: &mut [u32], rng: &mut SplitMix) {
    for x in into.iter_mut() {
        *x = from[(rng.next() % from.len() as u64) as usize];
    }
}

/// splitmix64: enough randomness for resampling, and repeatable.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` durations around `center` µs, spread ±`spread` µs, with a few slow ones.
    fn arm(n: usize, center: u32, spread: u32, seed: u64) -> ArmSamples {
        let mut rng = SplitMix(seed);
        let micros = (0..n)
            .map(|i| {
                let jitter = (rng.next() % (2 * spread as u64 + 1)) as u32;
                let slow = if i % 50 == 0 { center / 2 } else { 0 };
                center - spread + jitter + slow
            })
            .collect();
        ArmSamples { answered: n as u64, micros, errors: 0 }
    }

    fn labels() -> (String, String) {
        ("old".into(), "new".into())
    }

    #[test]
    fn a_clearly_faster_arm_wins_with_its_interval() {
        // 4 ms remote against 1.5 ms local.
        let f = judge(&arm(300, 4000, 1000, 1), &arm(300, 1500, 500, 2), labels(), 0.05, 7);
        assert!(f.won, "{f:?}");
        assert!(f.p50_gain.lo > 0.5 && f.p50_gain.hi < 0.75, "{:?}", f.p50_gain);
        assert!(f.p50_gain.lo <= f.p50_gain.estimate && f.p50_gain.estimate <= f.p50_gain.hi);
        assert_eq!((f.old.samples, f.new.samples), (300, 300));
        assert!(f.old.p50_ms > Some(3.5) && f.new.p50_ms < Some(2.0) && f.new.p50_ms.is_some(), "{f:?}");
        // Repeatable: the same seed gives the same interval.
        assert_eq!(f, judge(&arm(300, 4000, 1000, 1), &arm(300, 1500, 500, 2), labels(), 0.05, 7));
    }

    #[test]
    fn a_small_gain_on_a_slow_callee_is_rolled_back() {
        // 150 ms of the callee's own sleep: the 2 ms hop is about 1 % of it.
        let f = judge(&arm(300, 152_000, 3000, 3), &arm(300, 150_000, 3000, 4), labels(), 0.05, 7);
        assert!(!f.won, "{f:?}");
        assert!(f.p50_gain.estimate > 0.0 && f.p50_gain.estimate < 0.05, "{:?}", f.p50_gain);
    }

    #[test]
    fn no_difference_or_a_worse_arm_is_rolled_back() {
        let same = judge(&arm(200, 3000, 1000, 5), &arm(200, 3000, 1000, 6), labels(), 0.05, 1);
        assert!(!same.won && same.p50_gain.lo < 0.0 && same.p50_gain.hi > 0.0, "{same:?}");
        let worse = judge(&arm(200, 2000, 500, 5), &arm(200, 5000, 500, 6), labels(), 0.05, 1);
        assert!(!worse.won && worse.p50_gain.hi < 0.0, "{worse:?}");
    }

    #[test]
    fn more_errors_in_the_new_arm_lose_even_when_it_is_faster() {
        let old = arm(200, 4000, 500, 1);
        let mut new = arm(200, 1000, 200, 2);
        new.errors = 20;
        assert!(!judge(&old, &new, labels(), 0.05, 1).won);
        new.errors = 1;
        assert!(judge(&old, &new, labels(), 0.05, 1).won);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&mut v, 0.5), 50);
        assert_eq!(percentile(&mut v, 0.99), 99);
        assert_eq!(percentile(&mut [7], 0.99), 7);
    }

    #[test]
    fn failed_calls_count_as_slower_than_every_answer() {
        // The old arm's answers are barely slower, but 40 % of its calls timed out (as a
        // single overloaded instance does): judged on its survivors alone the gain's
        // interval would straddle the threshold.
        let mut old = arm(60, 300_000, 200_000, 1);
        old.errors = 40;
        let new = arm(60, 250_000, 150_000, 2);
        let f = judge(&old, &new, labels(), 0.05, 3);
        assert!(f.won, "{f:?}");
        assert_eq!(f.old.p99_ms, None, "the old arm's tail is its failures: {f:?}");
        assert!(f.new.p99_ms.is_some() && f.old.p50_ms > f.new.p50_ms, "{f:?}");
        assert_eq!(f.p99_gain.estimate, 1.0, "{f:?}");
        // Without the failures the same answers are not clearly better.
        old.errors = 0;
        assert!(!judge(&old, &new, labels(), 0.05, 3).won);
    }

    #[test]
    fn an_arm_that_only_failed_is_judged_too() {
        let old = ArmSamples { answered: 0, micros: vec![], errors: 30 };
        let new = arm(30, 2000, 500, 1);
        let f = judge(&old, &new, labels(), 0.05, 1);
        assert!(f.won && f.old.p50_ms.is_none() && f.p50_gain.lo == 1.0, "{f:?}");
        let f = judge(&new, &old, labels(), 0.05, 1);
        assert!(!f.won && f.p50_gain.hi == -1.0, "{f:?}");
    }

    #[test]
    fn failures_keep_their_share_when_only_the_newest_answers_are_sent() {
        let s = ArmSamples { answered: 1000, micros: vec![5; 100], errors: 500 };
        let v = with_failures(&s);
        assert_eq!((v.len(), v.iter().filter(|&&x| x == FAILED).count()), (150, 50));
    }
}
