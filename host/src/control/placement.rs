//! The Cluster Manager's placement rule: spread each service's instances evenly over the
//! live nodes it may run on, moving as few instances as possible, and put the instances
//! that do not divide evenly where the calls to the service come from.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::events::{Event, EventKind};
use super::traffic::Affinity;
use super::types::Assignment;
use crate::services::ServiceSpec;

/// Where every service's instances should run, given the live nodes (sorted, deduplicated).
///
/// Each eligible node gets `instances / k` and the remainder goes one each to the nodes
/// that call the service most (`affinity`, see [`super::traffic`]), then to nodes that
/// already had more than `instances / k` (so a rebalance moves little), then to nodes
/// picked by a per-service rotation (so remainders of different services land on
/// different nodes). A node that holds an extra instance and is hot for the service counts
/// one level hotter, so an instance moves only to clearly busier callers. Services that
/// keep kv state spread like any other: the grid serves their keys from every node.
pub fn place(
    services: &BTreeMap<String, ServiceSpec>,
    live: &[String],
    current: &Assignment,
    affinity: &Affinity,
) -> Assignment {
    let mut out = Assignment::new();
    for (name, spec) in services {
        let eligible: Vec<&String> =
            live.iter().filter(|n| spec.placement.is_empty() || spec.placement.contains(n)).collect();
        if eligible.is_empty() || spec.instances == 0 {
            continue;
        }
        let k = eligible.len() as u32;
        let (base, mut rem) = (spec.instances / k, spec.instances % k);
        let mut row: BTreeMap<String, u32> = eligible.iter().map(|n| ((*n).clone(), base)).collect();
        let had = current.get(name);
        let offset = rotation(name, eligible.len());
        let mut order: Vec<&String> = eligible.iter().cycle().skip(offset).take(eligible.len()).copied().collect();
        let hot = affinity.get(name);
        let key = |n: &String| {
            let extra = had.and_then(|h| h.get(n)).is_some_and(|&c| c > base);
            let level = hot.and_then(|h| h.get(n)).copied().unwrap_or(0);
            let level = if extra && level > 0 { level + 1 } else { level };
            std::cmp::Reverse((level, extra))
        };
        // Hot callers first, then nodes that already carried an extra instance keep it.
        order.sort_by_key(|n| key(n));
        for n in order {
            if rem == 0 {
                break;
            }
            *row.get_mut(n).expect("eligible") += 1;
            rem -= 1;
        }
        row.retain(|_, c| *c > 0);
        out.insert(name.clone(), row);
    }
    out
}

/// The rows of `next` that differ from `old`'s, and `None` for each service `next` has no
/// row for (what `AssignChanges` carries).
pub fn changed_rows(old: &Assignment, next: &Assignment) -> Vec<(String, Option<BTreeMap<String, u32>>)> {
    let mut changes: Vec<_> =
        next.iter().filter(|(s, row)| old.get(*s) != Some(*row)).map(|(s, r)| (s.clone(), Some(r.clone()))).collect();
    changes.extend(old.keys().filter(|s| !next.contains_key(*s)).map(|s| (s.clone(), None)));
    changes
}

/// Make before break: while `next` would leave fewer serving instances of a service than
/// both `next` asks for and `current` has serving, every serving node that `next` gives
/// fewer keeps its `current` count. A move briefly runs an extra instance instead of
/// leaving callers with none while the new node fetches, compiles and starts the service;
/// once it serves, the move completes. `serving(node, service)` is what gossip shows (a
/// dead node serves nothing, so its share moves at once).
pub fn hold_until_ready(current: &Assignment, next: &mut Assignment, serving: impl Fn(&str, &str) -> bool) {
    for (name, row) in next.iter_mut() {
        let Some(had) = current.get(name) else { continue };
        let ready = |r: &BTreeMap<String, u32>| r.iter().filter(|(n, _)| serving(n, name)).map(|(_, c)| c).sum::<u32>();
        let wanted = row.values().sum::<u32>().min(ready(had));
        if ready(row) >= wanted {
            continue;
        }
        for (n, &old) in had {
            if serving(n, name) && row.get(n).copied().unwrap_or(0) < old {
                row.insert(n.clone(), old);
            }
        }
    }
}

/// What a new assignment moves, one event per service whose row changed, with the rows
/// before and after and the likeliest cause.
pub fn moves(current: &Assignment, next: &Assignment, serving: &[String]) -> Vec<Event> {
    let empty = BTreeMap::new();
    let show = |r: &BTreeMap<String, u32>| match r.is_empty() {
        true => "none".to_string(),
        false => r.iter().map(|(n, c)| format!("{n}={c}")).collect::<Vec<_>>().join(","),
    };
    let names: std::collections::BTreeSet<&String> = current.keys().chain(next.keys()).collect();
    let mut out = Vec::new();
    for name in names {
        let (had, row) = (current.get(name).unwrap_or(&empty), next.get(name).unwrap_or(&empty));
        if had == row {
            continue;
        }
        let (from, to) = (had.values().sum::<u32>(), row.values().sum::<u32>());
        let why = if from != to {
            "its instance count changed"
        } else if had.keys().any(|n| !serving.contains(n)) {
            "a node it ran on stopped serving"
        } else if row.keys().any(|n| !had.contains_key(n)) && row.len() > had.len() {
            "spreading over more serving nodes"
        } else {
            "moving its odd instances toward the nodes that call it most (or whose barriers wait on it)"
        };
        let reason = format!("{why}: {} -> {}", show(had), show(row));
        out.push(Event::new(EventKind::Placement, reason).service(name).counts(from, to));
    }
    out
}

fn rotation(service: &str, n: usize) -> usize {
    let d = Sha256::digest(service.as_bytes());
    (u64::from_be_bytes(d[..8].try_into().expect("8 bytes")) % n as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, instances: u32, placement: &[&str]) -> ServiceSpec {
        serde_json::from_value(serde_json::json!({
            "name": name, "component": format!("sha256:{}", "0".repeat(64)), "instances": instances,
            "queue_timeout_ms": 1000, "limits": crate::services::Limits::default(), "generation": 1,
            "updated_at_ms": 0, "placement": placement,
        }))
        .unwrap()
    }

    fn nodes(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn spreads_evenly_and_honours_constraints() {
        let services = BTreeMap::from([
            ("six".to_string(), spec("six", 6, &[])),
            ("one".to_string(), spec("one", 1, &[])),
            ("pinned".to_string(), spec("pinned", 4, &["n2", "n9"])),
            ("off".to_string(), spec("off", 0, &[])),
        ]);
        let live = nodes(&["n1", "n2", "n3"]);
        let a = place(&services, &live, &Assignment::new(), &Affinity::new());
        assert_eq!(a["six"], BTreeMap::from([("n1".into(), 2), ("n2".into(), 2), ("n3".into(), 2)]));
        assert_eq!(a["one"].values().sum::<u32>(), 1);
        assert_eq!(a["pinned"], BTreeMap::from([("n2".into(), 4)]), "only n2 is both allowed and live");
        assert!(!a.contains_key("off"));
    }

    #[test]
    fn dead_node_share_moves_and_joins_rebalance_with_little_movement() {
        let services = BTreeMap::from([("s".to_string(), spec("s", 7, &[]))]);
        let three = place(&services, &nodes(&["n1", "n2", "n3"]), &Assignment::new(), &Affinity::new());
        assert_eq!(three["s"].values().sum::<u32>(), 7);
        let two = place(&services, &nodes(&["n1", "n3"]), &three, &Affinity::new());
        assert_eq!(two["s"].values().sum::<u32>(), 7);
        assert!(!two["s"].contains_key("n2"));
        // Stable: the same input gives the same table.
        assert_eq!(place(&services, &nodes(&["n1", "n3"]), &two, &Affinity::new()), two);
        let four = place(&services, &nodes(&["n1", "n2", "n3", "n4"]), &two, &Affinity::new());
        assert_eq!(four["s"].values().copied().collect::<Vec<_>>().iter().sum::<u32>(), 7);
        assert!(four["s"].values().all(|&c| (1..=2).contains(&c)));
    }

    #[test]
    fn no_live_eligible_node_means_no_row() {
        let services = BTreeMap::from([("p".to_string(), spec("p", 2, &["n7"]))]);
        assert!(place(&services, &nodes(&["n1"]), &Assignment::new(), &Affinity::new()).is_empty());
    }

    fn hot(service: &str, levels: &[(&str, u32)]) -> Affinity {
        let row = levels.iter().map(|(n, l)| (n.to_string(), *l)).collect();
        Affinity::from([(service.to_string(), row)])
    }

    #[test]
    fn instances_that_do_not_divide_go_to_hot_callers_and_stay_against_similar_demand() {
        let services = BTreeMap::from([("b".to_string(), spec("b", 1, &[])), ("c".to_string(), spec("c", 4, &[]))]);
        let live = nodes(&["n1", "n2", "n3"]);
        let cold = place(&services, &live, &Assignment::new(), &Affinity::new());
        // Wherever the rotation put b's one instance, demand from another node moves it there.
        let elsewhere = ["n1", "n2", "n3"].into_iter().find(|n| !cold["b"].contains_key(*n)).unwrap();
        let moved = place(&services, &live, &cold, &hot("b", &[(elsewhere, 1)]));
        assert_eq!(moved["b"], BTreeMap::from([(elsewhere.to_string(), 1)]));
        assert_eq!(moved["c"], cold["c"], "other services do not move");
        // Similar demand elsewhere (one level) does not take it away; clearly more (two) does.
        let other = ["n1", "n2", "n3"].into_iter().find(|n| *n != elsewhere).unwrap();
        let similar = hot("b", &[(elsewhere, 1), (other, 2)]);
        assert_eq!(place(&services, &live, &moved, &similar), moved);
        let busier = hot("b", &[(elsewhere, 1), (other, 3)]);
        assert_eq!(place(&services, &live, &moved, &busier)["b"], BTreeMap::from([(other.to_string(), 1)]));
        // Once the demand stops, the instance stays where it is.
        assert_eq!(place(&services, &live, &moved, &Affinity::new()), moved);
        // Four on three nodes: the remainder goes to the hot node; constraints still hold.
        let c = place(&services, &live, &cold, &hot("c", &[("n3", 1)]));
        assert_eq!(c["c"]["n3"], 2);
        assert_eq!(c["c"].values().sum::<u32>(), 4);
        let pinned = BTreeMap::from([("p".to_string(), spec("p", 1, &["n1"]))]);
        assert_eq!(
            place(&pinned, &live, &Assignment::new(), &hot("p", &[("n2", 5)]))["p"],
            BTreeMap::from([("n1".to_string(), 1)])
        );
    }

    #[test]
    fn a_moving_instance_stays_until_its_new_node_serves() {
        let current = Assignment::from([("b".to_string(), BTreeMap::from([("n1".to_string(), 1)]))]);
        let moved = Assignment::from([("b".to_string(), BTreeMap::from([("n2".to_string(), 1)]))]);
        let mut next = moved.clone();
        hold_until_ready(&current, &mut next, |n, _| n == "n1");
        let both = BTreeMap::from([("n1".to_string(), 1), ("n2".to_string(), 1)]);
        assert_eq!(next["b"], both, "n1 keeps it meanwhile");
        // The next step starts from the held table and still holds until n2 serves.
        let held = next.clone();
        let mut again = moved.clone();
        hold_until_ready(&held, &mut again, |n, _| n == "n1");
        assert_eq!(again, held);
        let mut done = moved.clone();
        hold_until_ready(&held, &mut done, |_, _| true);
        assert_eq!(done, moved);
        let mut next = moved.clone();
        hold_until_ready(&current, &mut next, |_, _| true);
        assert_eq!(next, moved, "n2 serves: the move completes");
        let mut next = moved.clone();
        hold_until_ready(&current, &mut next, |_, _| false);
        assert_eq!(next, moved, "n1 is not serving (dead): nothing to keep");
        // Scaling down or a node leaving gains nothing: no hold.
        let down = Assignment::from([("b".to_string(), BTreeMap::new())]);
        let mut next = down.clone();
        hold_until_ready(&current, &mut next, |n, _| n == "n1");
        assert_eq!(next, down);
    }
}
