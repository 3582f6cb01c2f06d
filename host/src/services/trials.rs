//! This node's side of re-provisioning experiments (see `control::experiment`): while an
//! experiment tries an instance of a service here, calls from this node's services to it
//! are split between the old arrangement and the new ([`Split`]), and each call's duration
//! is kept per arm until the leader asks.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// How a trial on this node assigns calls to arms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Alternately: the old arrangement (sent to the other nodes' instances) and the new
    /// one (run here).
    Alternate,
    /// By this node's instance count of the service, which the leader switches between
    /// the old count (arm `old`) and one more (arm `new`).
    Slots { old: u32 },
}

impl Split {
    /// The arm a count trial's call is in when this node has `limit` instances (`None`:
    /// neither count, the switch is being applied).
    pub fn arm_of(self, limit: u32) -> Option<bool> {
        match self {
            Split::Alternate => None,
            Split::Slots { old } if limit == old => Some(false),
            Split::Slots { old } if limit == old + 1 => Some(true),
            Split::Slots { .. } => None,
        }
    }
}

/// Samples kept per arm (the leader's verdict uses the newest; older ones add little).
const MAX_PER_ARM: usize = 20_000;
/// Experiments whose samples are kept at once (older ids are dropped).
const MAX_TRIALS: usize = 8;

/// One arm's calls: how many answered and how many failed, and the durations (µs) of
/// the newest that answered (as many as were asked for).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmSamples {
    pub answered: u64,
    pub micros: Vec<u32>,
    pub errors: u64,
}

/// Both arms of one experiment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrialSamples {
    pub old: ArmSamples,
    pub new: ArmSamples,
}

/// One experiment's samples and its own arm counter (so two experiments whose calls
/// interleave do not each get one arm only).
#[derive(Default)]
struct Trial {
    samples: TrialSamples,
    calls: u64,
}

#[derive(Default)]
pub struct Trials {
    samples: Mutex<BTreeMap<u64, Trial>>,
}

impl Trials {
    /// The arm of experiment `id`'s next call: alternately the new arrangement (`true`)
    /// and the old.
    pub fn next_is_new(&self, id: u64) -> bool {
        let mut all = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let t = all.entry(id).or_default();
        t.calls += 1;
        let new = t.calls % 2 == 1;
        while all.len() > MAX_TRIALS {
            all.pop_first();
        }
        new
    }

    /// One call of experiment `id` in arm `new`: it answered (`ok`) after `micros`.
    pub fn record(&self, id: u64, new: bool, ok: bool, micros: u64) {
        let mut all = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let t = &mut all.entry(id).or_default().samples;
        let arm = if new { &mut t.new } else { &mut t.old };
        if !ok {
            arm.errors += 1;
            return;
        }
        arm.answered += 1;
        if arm.micros.len() < MAX_PER_ARM {
            arm.micros.push(u32::try_from(micros).unwrap_or(u32::MAX));
        }
        while all.len() > MAX_TRIALS {
            all.pop_first();
        }
    }

    /// Experiment `id`'s counts so far and at most the `newest` durations per arm (none if
    /// this node has not seen its calls).
    pub fn samples(&self, id: u64, newest: usize) -> TrialSamples {
        let all = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let Some(t) = all.get(&id) else { return TrialSamples::default() };
        let arm = |a: &ArmSamples| ArmSamples {
            answered: a.answered,
            micros: a.micros[a.micros.len().saturating_sub(newest)..].to_vec(),
            errors: a.errors,
        };
        TrialSamples { old: arm(&t.samples.old), new: arm(&t.samples.new) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_trial_s_arm_is_the_node_s_instance_count() {
        let s = Split::Slots { old: 2 };
        assert_eq!((s.arm_of(2), s.arm_of(3)), (Some(false), Some(true)));
        assert_eq!((s.arm_of(1), s.arm_of(4)), (None, None), "a count neither arm has");
        assert_eq!(Split::Alternate.arm_of(2), None);
    }

    #[test]
    fn arms_alternate_and_samples_are_kept_per_arm() {
        let t = Trials::default();
        let arms: Vec<bool> = (0..4).map(|_| t.next_is_new(3)).collect();
        assert_eq!(arms, [true, false, true, false]);
        // Another experiment's calls in between do not take its turns.
        let mixed: Vec<(bool, bool)> = (0..2).map(|_| (t.next_is_new(5), t.next_is_new(6))).collect();
        assert_eq!(mixed, [(true, true), (false, false)]);
        t.record(3, true, true, 1500);
        t.record(3, false, true, 4000);
        t.record(3, false, false, 9000);
        t.record(3, true, true, 1700);
        let s = t.samples(3, 10);
        assert_eq!((s.new.micros.clone(), s.old.micros.clone(), s.old.errors), (vec![1500, 1700], vec![4000], 1));
        assert_eq!((s.new.answered, s.old.answered), (2, 1));
        let newest = t.samples(3, 1);
        assert_eq!((newest.new.micros, newest.new.answered), (vec![1700], 2), "counts stay whole");
        assert_eq!(t.samples(4, 10), TrialSamples::default());
        for id in 10..20 {
            t.record(id, true, true, 1);
        }
        assert_eq!(t.samples(3, 10), TrialSamples::default(), "only the newest experiments are kept");
        assert_eq!(t.samples(19, 10).new.micros, vec![1]);
    }
}
