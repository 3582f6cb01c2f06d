//! The instance autoscaler: from what every node measured over the last window, the
//! instance count each autoscaled service should have. In a cluster the leader runs it
//! (`control/scaling.rs`); a single node runs it on its own usage ([`run_single`]).
//!
//! Every node keeps, per service, running totals of instance-seconds busy, request-seconds
//! queued, requests admitted and refused ([`Usage`]). Once per window the leader samples
//! every serving node (`/usage` on the peer RPC) and takes the difference with its
//! previous sample, summed over the nodes that answered both times:
//!
//! - `busy`: instances running on average over the window; `queued`: requests waiting on
//!   average; `refused`: requests per second turned away (queue full, or waited too
//!   long), counted as demand through Little's law (refused per second × seconds a request
//!   runs on average).
//! - demand `D = busy + queued + refused_load`; the wanted count is `ceil(D / target_busy)`
//!   (0 when nothing ran, waited or was refused).
//!
//! The rule ([`decide`]), like Kubernetes' horizontal autoscaler:
//! - **tolerance**: no change while `D / (instances × target_busy)` is within 10 % of 1;
//! - **up at once**, by at most doubling (or +4, whichever is more) per window;
//! - **down slowly**: to the highest count wanted over the last `cooldown_s` seconds, only
//!   once that much history exists since the last change made by anyone else (a deploy, a
//!   wake-up), and by at most half per window. Zero is reached only after a whole
//!   cool-down without a single request.
//! - always within `[min, max]`;
//! - never down in a window where a node holding instances of the service did not report
//!   (its load is unknown, not zero).
//!
//! Under steady load the wanted count is steady, so the count settles and does not flap:
//! going up needs more than 10 % over the target, going down needs a whole cool-down
//! below it.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::services::gate::Usage;
use crate::services::spec::Autoscale;

/// Per service: what one node reported.
pub type Report = BTreeMap<String, Usage>;

/// A service's load over one window, all nodes together.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Load {
    /// Instances running, on average.
    pub busy: f64,
    /// Requests waiting for an instance, on average.
    pub queued: f64,
    /// Mean wait of the requests admitted in the window, in milliseconds.
    pub wait_ms: f64,
    /// Requests per second admitted and refused.
    pub admitted_per_s: f64,
    pub refused_per_s: f64,
}

impl Load {
    /// Instances' worth of demand: busy + queued + what the refused requests would have
    /// kept busy.
    pub fn demand(&self) -> f64 {
        let run_s = if self.admitted_per_s > 0.0 { self.busy / self.admitted_per_s } else { 0.0 };
        // A refused request of a service that ran nothing in the window still wants an
        // instance: count it as one busy instance at least.
        let refused = if self.refused_per_s > 0.0 { (self.refused_per_s * run_s).max(0.01) } else { 0.0 };
        self.busy + self.queued + refused
    }
}

/// The load of every service over the window between two samples (`secs` apart). Only
/// nodes in both samples count; a total that went down (the node restarted, or the
/// service was made again) counts from zero.
pub fn window_load(
    before: &BTreeMap<String, Report>,
    now: &BTreeMap<String, Report>,
    secs: f64,
) -> BTreeMap<String, Load> {
    let mut out: BTreeMap<String, Load> = BTreeMap::new();
    if secs <= 0.0 {
        return out;
    }
    for (node, report) in now {
        let Some(old) = before.get(node) else { continue };
        for (service, u) in report {
            let b = old.get(service).copied().unwrap_or_default();
            let d = |a: f64, b: f64| if a >= b { a - b } else { a };
            let n = |a: u64, b: u64| if a >= b { a - b } else { a };
            let admitted = n(u.admitted, b.admitted);
            let l = out.entry(service.clone()).or_default();
            l.busy += d(u.busy_s, b.busy_s) / secs;
            l.queued += d(u.queued_s, b.queued_s) / secs;
            l.admitted_per_s += admitted as f64 / secs;
            l.refused_per_s += n(u.refused, b.refused) as f64 / secs;
            // Summed here, divided by the admitted count below.
            l.wait_ms += d(u.waited_s, b.waited_s) * 1000.0;
        }
    }
    for l in out.values_mut() {
        let admitted = l.admitted_per_s * secs;
        l.wait_ms = if admitted > 0.0 { l.wait_ms / admitted } else { 0.0 };
    }
    out
}

/// The count the load asks for, before steps and bounds.
pub fn wanted(load: &Load, target_busy: f64) -> u32 {
    let d = load.demand();
    if d <= 0.0 { 0 } else { (d / target_busy).ceil().min(f64::from(u32::MAX)) as u32 }
}

/// A change the rule makes, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub to: u32,
    pub reason: String,
}

/// The rule (see the module docs). `history` holds the counts wanted in recent windows
/// (oldest first) with their times; `quiet` is how long the history reaches back since
/// the last change made by anyone else.
pub fn decide(
    a: &Autoscale,
    current: u32,
    load: &Load,
    history: &[(Instant, u32)],
    quiet: Duration,
) -> Option<Decision> {
    let want = wanted(load, a.target_busy);
    let capacity = f64::from(current) * a.target_busy;
    let within = current > 0 && (load.demand() / capacity - 1.0).abs() <= 0.1;
    let ratio = if current > 0 { load.busy / f64::from(current) } else { 0.0 };
    if current < a.min || current > a.max {
        let to = a.clamp(current);
        return Some(Decision { to, reason: format!("bounds are {}..={}", a.min, a.max) });
    }
    if want > current && !within {
        let step = current.saturating_mul(2).max(current + 4);
        let to = a.clamp(want.min(step));
        return (to > current).then(|| Decision {
            to,
            reason: format!(
                "busy {:.0}% of {current} instances with {:.1} queued, above the {:.0}% target",
                ratio * 100.0,
                load.queued,
                a.target_busy * 100.0
            ),
        });
    }
    let cooldown = Duration::from_secs(u64::from(a.cooldown_s));
    if quiet < cooldown || current == 0 {
        return None;
    }
    let recent = history.iter().map(|(_, w)| *w).chain([want]).max().unwrap_or(want);
    if recent >= current || within && recent > 0 {
        return None;
    }
    let to = a.clamp(recent.max(current / 2));
    (to < current).then(|| Decision {
        to,
        reason: match recent {
            0 => format!("no requests for {}s", a.cooldown_s),
            _ => format!(
                "at most {recent} instances wanted over the last {}s (busy {:.0}%, target {:.0}%)",
                a.cooldown_s,
                ratio * 100.0,
                a.target_busy * 100.0
            ),
        },
    })
}

/// What the leader remembers between windows: the last sample and, per service, the
/// counts wanted recently and the count it last saw (a different count means someone
/// else changed it, and the history starts again).
#[derive(Default)]
pub struct Autoscaler {
    last: Option<(Instant, BTreeMap<String, Report>)>,
    /// The nodes in both of the last two samples (whose load the window holds).
    pub measured: std::collections::BTreeSet<String>,
    services: BTreeMap<String, Memory>,
    /// The load of the last window, for `GET /v1/autoscale` and the gauges.
    pub loads: BTreeMap<String, Load>,
}

struct Memory {
    history: VecDeque<(Instant, u32)>,
    /// The count the history belongs to, and since when it is kept.
    count: u32,
    since: Instant,
}

impl Autoscaler {
    /// Whether a sample was taken (the next one gives a window).
    pub fn sampled(&self) -> bool {
        self.last.is_some()
    }

    /// Take a sample; return the load of each service over the window since the last
    /// one (empty on the first sample).
    pub fn observe(&mut self, at: Instant, reports: BTreeMap<String, Report>) -> BTreeMap<String, Load> {
        let loads = match &self.last {
            Some((t, before)) => window_load(before, &reports, at.duration_since(*t).as_secs_f64()),
            None => BTreeMap::new(),
        };
        self.measured = match &self.last {
            Some((_, before)) => reports.keys().filter(|n| before.contains_key(*n)).cloned().collect(),
            None => Default::default(),
        };
        self.last = Some((at, reports));
        self.loads = loads.clone();
        loads
    }

    /// Decide for one service whose committed count is `current`; remembers what was
    /// wanted. A returned decision is what the caller commits. `partial`: a node holding
    /// instances of it did not report, so the load may be understated: no step down.
    pub fn step(
        &mut self,
        at: Instant,
        service: &str,
        a: &Autoscale,
        current: u32,
        load: &Load,
        partial: bool,
    ) -> Option<Decision> {
        let m = self.services.entry(service.to_string()).or_insert(Memory {
            history: VecDeque::new(),
            count: current,
            since: at,
        });
        if m.count != current {
            // Changed by someone else (a wake-up, a deploy): judge it afresh.
            m.history.clear();
            m.count = current;
            m.since = at;
        }
        let keep = Duration::from_secs(u64::from(a.cooldown_s));
        while m.history.front().is_some_and(|(t, _)| at.duration_since(*t) > keep) {
            m.history.pop_front();
        }
        let d = decide(a, current, load, m.history.make_contiguous(), at.duration_since(m.since))
            .filter(|d| !(partial && d.to < current));
        if partial {
            return d;
        }
        m.history.push_back((at, wanted(load, a.target_busy)));
        if let Some(d) = &d {
            // Our own change: the history stays (it is what the next step down is
            // judged on).
            m.count = d.to;
        }
        d
    }

    /// Forget services that are gone and everything when this node stops leading.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.services.retain(|s, _| keep(s));
    }

    pub fn reset(&mut self) {
        *self = Autoscaler::default();
    }
}

/// A single node's autoscaling loop: the same rule on this node's own usage, applied with
/// [`crate::services::Registry::autoscale_to`]. Ends when `stop` turns true.
pub async fn run_single(
    registry: std::sync::Arc<crate::services::Registry>,
    window: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut auto = Autoscaler::default();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(window) => {}
        }
        let now = Instant::now();
        let first = !auto.sampled();
        let loads = auto.observe(now, BTreeMap::from([(String::new(), registry.usage())]));
        if first {
            continue;
        }
        let services = registry.list();
        auto.retain(|s| services.iter().any(|x| &*x.name == s));
        for svc in services {
            let spec = svc.current().spec.clone();
            let Some(a) = &spec.autoscale else { continue };
            let load = loads.get(&spec.name).copied().unwrap_or_default();
            let Some(d) = auto.step(now, &spec.name, a, spec.instances, &load, false) else { continue };
            tracing::info!(service = %spec.name, from = spec.instances, to = d.to, reason = %d.reason, "autoscaling");
            if let Err(e) = registry.autoscale_to(&spec.name, d.to).await {
                tracing::warn!(service = %spec.name, error = %e, "could not apply an autoscaling decision");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(min: u32, max: u32) -> Autoscale {
        Autoscale { min, max, target_busy: 0.5, cooldown_s: 10 }
    }

    fn load(busy: f64, queued: f64) -> Load {
        Load { busy, queued, admitted_per_s: if busy > 0.0 { busy * 100.0 } else { 0.0 }, ..Load::default() }
    }

    #[test]
    fn window_load_sums_nodes_in_both_samples() {
        let u = |busy_s: f64, admitted: u64, waited_s: f64| Usage { busy_s, admitted, waited_s, ..Usage::default() };
        let before = BTreeMap::from([
            ("n1".to_string(), Report::from([("s".to_string(), u(1.0, 10, 0.0))])),
            ("n2".to_string(), Report::from([("s".to_string(), u(5.0, 50, 0.0))])),
        ]);
        let now = BTreeMap::from([
            ("n1".to_string(), Report::from([("s".to_string(), u(3.0, 30, 0.2))])),
            // n2 restarted: its totals start again from zero.
            ("n2".to_string(), Report::from([("s".to_string(), u(1.0, 10, 0.0))])),
            ("n3".to_string(), Report::from([("s".to_string(), u(9.0, 90, 0.0))])),
        ]);
        let l = window_load(&before, &now, 2.0)["s"];
        assert_eq!(l.busy, (2.0 + 1.0) / 2.0, "n3 was not in the first sample");
        assert_eq!(l.admitted_per_s, 15.0);
        assert!((l.wait_ms - 200.0 / 30.0).abs() < 1e-9, "{l:?}");
    }

    #[test]
    fn goes_up_at_once_in_bounded_steps() {
        let now = Instant::now();
        // 8 busy at target 0.5 wants 16; from 2 the step is at most +4.
        let d = decide(&a(1, 20), 2, &load(2.0, 6.0), &[], Duration::ZERO).unwrap();
        assert_eq!(d.to, 6);
        let d = decide(&a(1, 20), 6, &load(6.0, 2.0), &[(now, 6)], Duration::ZERO).unwrap();
        assert_eq!(d.to, 12, "doubling from 6");
        let d = decide(&a(1, 10), 6, &load(6.0, 30.0), &[], Duration::ZERO).unwrap();
        assert_eq!(d.to, 10, "never above max");
    }

    #[test]
    fn holds_within_tolerance_and_under_steady_load() {
        // 4 instances at target 0.5 hold 2 busy; 2.1 busy is within 10 %.
        assert_eq!(decide(&a(1, 20), 4, &load(2.1, 0.0), &[], Duration::from_secs(60)), None);
        assert_eq!(decide(&a(1, 20), 4, &load(1.9, 0.0), &[], Duration::from_secs(60)), None);
        // Steady load through many windows: one step up, then no further change.
        let mut s = Autoscaler::default();
        let t0 = Instant::now();
        let mut count = 1;
        let mut changes = 0;
        for i in 0..200u64 {
            let busy = (count as f64).min(3.0) + if i % 2 == 0 { 0.2 } else { -0.2 };
            if let Some(d) =
                s.step(t0 + Duration::from_secs(i), "s", &a(1, 20), count, &load(busy.max(0.0), 0.0), false)
            {
                count = d.to;
                changes += 1;
            }
        }
        assert!(changes <= 3, "the count settles: {changes} changes, ends at {count}");
        assert!((6..=8).contains(&count), "3 busy at target 0.5 wants about 6: {count}");
    }

    #[test]
    fn goes_down_after_a_cooldown_and_to_zero_only_when_idle() {
        let mut s = Autoscaler::default();
        let t0 = Instant::now();
        let at = |i: u64| t0 + Duration::from_secs(i);
        let spec = a(0, 20);
        assert_eq!(s.step(at(0), "s", &spec, 8, &load(4.0, 0.0), false), None, "steady at the target");
        // Load drops to 1 busy: nothing for the 10 s cool-down, then halving steps.
        for i in 1..10 {
            assert_eq!(s.step(at(i), "s", &spec, 8, &load(1.0, 0.0), false), None, "second {i}");
        }
        let mut count = 8;
        let mut seen = vec![];
        for i in 10..40 {
            if let Some(d) = s.step(at(i), "s", &spec, count, &load(1.0, 0.0), false) {
                count = d.to;
                seen.push(count);
            }
        }
        assert!(seen.first().is_some_and(|&c| c >= 4), "at most half per step: {seen:?}");
        assert_eq!(count, 2, "1 busy at target 0.5: {seen:?}");
        // Idle: zero only after a whole cool-down without requests.
        for i in 40..49 {
            assert_eq!(s.step(at(i), "s", &spec, 2, &Load::default(), false), None, "second {i}");
        }
        let mut got = None;
        for i in 49..60 {
            if let Some(d) = s.step(at(i), "s", &spec, count, &Load::default(), false) {
                count = d.to;
                got.get_or_insert(i);
            }
        }
        assert_eq!(count, 0);
        assert!(got.is_some_and(|i| i >= 50), "zero after ten idle seconds, not before: {got:?}");
    }

    #[test]
    fn a_change_by_someone_else_restarts_the_cooldown() {
        let mut s = Autoscaler::default();
        let t0 = Instant::now();
        let spec = a(0, 4);
        for i in 0..20 {
            s.step(t0 + Duration::from_secs(i), "s", &spec, 0, &Load::default(), false);
        }
        // A wake-up set it to 1; the window that saw it had no finished request yet.
        for i in 20..29 {
            assert_eq!(s.step(t0 + Duration::from_secs(i), "s", &spec, 1, &Load::default(), false), None, "second {i}");
        }
        // A window missing a node's report never steps down.
        assert_eq!(s.step(t0 + Duration::from_secs(31), "s", &spec, 1, &Load::default(), true), None);
        let d = s.step(t0 + Duration::from_secs(31), "s", &spec, 1, &Load::default(), false);
        assert_eq!(d.map(|d| d.to), Some(0), "a whole cool-down after the wake-up");
    }

    #[test]
    fn refused_requests_count_as_demand() {
        let l = Load { refused_per_s: 5.0, ..Load::default() };
        assert_eq!(wanted(&l, 0.6), 1, "refused with nothing running still wants one");
        let l = Load { busy: 2.0, admitted_per_s: 100.0, refused_per_s: 100.0, ..Load::default() };
        assert_eq!(wanted(&l, 0.5), 8, "as many refused as admitted: twice the busy");
    }
}
