//! This node's side of re-provisioning experiments (see `control::experiment`): while an
//! experiment tries an instance of a service here, calls from this node's services to it
//! alternate between the old arrangement (sent to the other nodes' instances) and the new
//! one (run here), and each call's duration is kept per arm until the leader asks.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Samples kept per arm (the leader's verdict uses the newest; older ones add little).
const MAX_PER_ARM: usize = 20_000;
/// Experiments whose samples are kept at once (older ids are dropped).
const MAX_TRIALS: usize = 8;

/// One arm's calls: durations of the calls that answered (µs) and how many failed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmSamples {
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
        } else if arm.micros.len() < MAX_PER_ARM {
            arm.micros.push(u32::try_from(micros).unwrap_or(u32::MAX));
        }
        while all.len() > MAX_TRIALS {
            all.pop_first();
        }
    }

    /// Experiment `id`'s samples so far (none if this node has not seen its calls).
    pub fn samples(&self, id: u64) -> TrialSamples {
        self.samples.lock().unwrap_or_else(|e| e.into_inner()).get(&id).map(|t| t.samples.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let s = t.samples(3);
        assert_eq!((s.new.micros.clone(), s.old.micros.clone(), s.old.errors), (vec![1500], vec![4000], 1));
        assert_eq!(t.samples(4), TrialSamples::default());
        for id in 10..20 {
            t.record(id, true, true, 1);
        }
        assert_eq!(t.samples(3), TrialSamples::default(), "only the newest experiments are kept");
        assert_eq!(t.samples(19).new.micros, vec![1]);
    }
}
