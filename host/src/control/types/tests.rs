//! Unit tests of the control state's commands.

use super::*;

/// A service `name` with a fixed count.
fn fixed_spec(name: &str, instances: u32) -> ServiceSpec {
    serde_json::from_value(serde_json::json!({
        "name": name, "component": format!("sha256:{}", "0".repeat(64)), "instances": instances,
        "queue_timeout_ms": 1000, "limits": crate::services::Limits::default(), "generation": 1, "updated_at_ms": 0
    }))
    .unwrap()
}

#[test]
fn raft_ids_are_stable_and_distinct() {
    assert_eq!(raft_id("n1"), raft_id("n1"));
    assert_ne!(raft_id("n1"), raft_id("n2"));
}

#[test]
fn delete_and_remove_clean_the_assignment() {
    let mut s = ControlState::default();
    let spec = fixed_spec("a", 2);
    assert!(s.apply(&Command::PutService { spec: Box::new(spec.clone()) }).changed);
    assert!(!s.apply(&Command::PutService { spec: Box::new(spec) }).changed);
    let table = Assignment::from([
        ("a".into(), BTreeMap::from([("n1".into(), 1), ("n2".into(), 1)])),
        ("gone".into(), BTreeMap::from([("n1".into(), 1)])),
    ]);
    assert!(!s.apply(&Command::Assign { assignment: table.clone(), events: vec![], base: Some(9) }).changed);
    assert!(s.apply(&Command::Assign { assignment: table, events: vec![], base: Some(0) }).changed);
    assert_eq!(s.assignment.len(), 1, "rows of unknown services are dropped");
    assert!(s.apply(&Command::RemoveNode { name: "n2".into(), stop: false, at_ms: 0 }).changed);
    assert_eq!(s.slots("a", "n2"), 0);
    assert_eq!(s.slots("a", "n1"), 1);
    assert!(s.apply(&Command::DeleteService { name: "a".into() }).changed);
    assert!(s.assignment.is_empty());
}

#[test]
fn autoscale_counts_and_wakes_apply_only_to_autoscaled_services() {
    let mut s = ControlState::default();
    let spec: ServiceSpec = serde_json::from_value(serde_json::json!({
        "name": "a", "component": format!("sha256:{}", "0".repeat(64)), "instances": 1,
        "queue_timeout_ms": 1000, "limits": crate::services::Limits::default(), "generation": 1,
        "updated_at_ms": 0, "autoscale": {"min": 0, "max": 4},
    }))
    .unwrap();
    let fixed = ServiceSpec { name: "f".into(), autoscale: None, ..spec.clone() };
    s.apply(&Command::PutService { spec: Box::new(spec) });
    s.apply(&Command::PutService { spec: Box::new(fixed) });
    let scale_from = |svc: &str, n, from| Command::Scale {
        service: svc.into(),
        instances: n,
        from,
        event: Event::new(EventKind::Scale, "test").service(svc),
    };
    let scale = |svc: &str, n| scale_from(svc, n, None);
    assert!(!s.apply(&scale("f", 3)).changed, "a fixed service is not autoscaled");
    assert!(!s.apply(&scale("a", 5)).changed, "above max");
    assert!(s.apply(&scale("a", 0)).changed);
    assert_eq!(s.services["a"].instances, 0);
    let wake = Command::Wake { service: "a".into(), node: "n2".into(), at_ms: 1 };
    assert!(s.apply(&wake).changed);
    assert_eq!((s.services["a"].instances, s.slots("a", "n2")), (1, 1));
    assert!(!s.apply(&wake).changed, "a second wake finds an instance");
    let stale = scale_from("a", 0, Some(0));
    assert!(!s.apply(&stale).changed, "a decision made before the wake changes nothing");
    // A redeploy keeps the autoscaler's count.
    let mut again = s.services["a"].clone();
    again.instances = 1;
    s.apply(&scale_from("a", 3, Some(1)));
    s.apply(&Command::PutService { spec: Box::new(again) });
    assert_eq!(s.services["a"].instances, 3);
    let kinds: Vec<EventKind> = s.events.list.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec![EventKind::Scale, EventKind::Wake, EventKind::Scale]);
}

#[test]
fn a_kept_count_experiment_adds_one_instance_to_the_count_it_was_tried_on() {
    let mut s = ControlState::default();
    let spec = fixed_spec("a", 2);
    s.apply(&Command::PutService { spec: Box::new(spec) });
    let trial = |from| Experiment {
        change: Change::AddInstance { from },
        ..Experiment::trial_for_test("a", "n1", &[("n1", 2)])
    };
    let end = |id, stage| Command::ExperimentEnd {
        end: Box::new(Ending { id, stage, figures: None, verdict: "v".into(), at_ms: 5 }),
        decision: false,
    };
    assert!(s.apply(&Command::ExperimentStart { experiment: Box::new(trial(2)) }).changed);
    assert!(s.apply(&Command::ExperimentSwitch { id: 1, new: true, at_ms: 3 }).changed);
    assert!(s.apply(&end(1, Stage::RolledBack)).changed);
    assert_eq!(s.services["a"].instances, 2, "rolled back: the count stays");
    s.apply(&Command::ExperimentStart { experiment: Box::new(trial(2)) });
    assert!(s.apply(&end(2, Stage::Kept)).changed);
    assert_eq!(s.services["a"].instances, 3, "kept: one more");
    let last = s.events.list.back().unwrap();
    assert_eq!((last.kind, last.from, last.to), (EventKind::Scale, Some(2), Some(3)));
    // Tried on a count that has changed since: kept changes nothing.
    s.apply(&Command::ExperimentStart { experiment: Box::new(trial(2)) });
    s.apply(&end(3, Stage::Kept));
    assert_eq!(s.services["a"].instances, 3);
}

#[test]
fn grid_changes_apply_only_to_the_table_they_were_made_for() {
    let mut s = ControlState::default();
    let names = vec!["n1".to_string(), "n2".to_string()];
    let mut t = crate::grid::part::initial(&names, 2, crate::grid::part::DEFAULT_PARTITIONS);
    t.parts[0].isr = vec![t.parts[0].primary.clone()];
    assert!(s.apply(&Command::GridTable { expect: 0, table: Box::new(t.clone()) }).changed);
    assert_eq!(s.grid.version, 1);
    assert!(!s.apply(&Command::GridTable { expect: 0, table: Box::new(t) }).changed, "stale");
    let other = s.grid.parts[0].replicas.iter().find(|n| **n != s.grid.parts[0].primary).unwrap().clone();
    let stale = Command::GridInSync { partition: 0, epoch: 9, node: other.clone() };
    assert!(!s.apply(&stale).changed);
    assert!(s.apply(&Command::GridInSync { partition: 0, epoch: 1, node: other }).changed);
    assert_eq!(s.grid.parts[0].isr.len(), 2);
    assert_eq!(s.grid.version, 2);
    let lagging = s.grid.parts[0].replicas.iter().find(|n| **n != s.grid.parts[0].primary).unwrap().clone();
    assert!(s.apply(&Command::GridOutOfSync { partition: 0, epoch: 1, node: lagging.clone() }).changed);
    assert!(!s.grid.parts[0].isr.contains(&lagging));
    assert!(s.apply(&Command::GridInSync { partition: 0, epoch: 1, node: lagging }).changed);
    // Only the named primary, at its epoch, can give a partition up.
    let primary = s.grid.parts[0].primary.clone();
    let wrong = Command::GridRelinquish { partition: 0, epoch: 1, node: "n9".into() };
    assert!(!s.apply(&wrong).changed);
    assert!(s.apply(&Command::GridRelinquish { partition: 0, epoch: 1, node: primary }).changed);
    assert_eq!(s.grid.parts[0].primary, "");

    // A step's changes as rows: applied at the version they were computed from only,
    // and only to partitions the table has.
    let mut next = s.grid.clone();
    next.parts[0] = PartInfo { primary: "n2".into(), replicas: vec!["n2".into()], isr: vec!["n2".into()], epoch: 2 };
    next.parts[7].isr.clear();
    let changes = s.grid.changes_to(&next);
    assert_eq!(changes.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [0, 7]);
    let v = s.grid.version;
    let delta = Command::GridChanges { expect: v, replication: 2, changes: changes.clone() };
    let outside = Command::GridChanges { expect: v, replication: 2, changes: vec![(256, PartInfo::default())] };
    assert!(!s.apply(&outside).changed, "a partition the table does not have");
    assert!(!s.apply(&Command::GridChanges { expect: v - 1, replication: 2, changes }).changed, "stale");
    let full = serde_json::to_vec(&Command::GridTable { expect: v, table: Box::new(next.clone()) }).unwrap();
    let small = serde_json::to_vec(&delta).unwrap();
    assert!(small.len() * 50 < full.len(), "two rows: {} bytes, the table: {}", small.len(), full.len());
    assert!(s.apply(&delta).changed);
    next.version = v + 1;
    assert_eq!(s.grid, next, "the same table as replacing it whole");
}

#[test]
fn assignment_changes_apply_as_rows_at_their_base_only() {
    let mut s = ControlState::default();
    for name in ["a", "b"] {
        s.apply(&Command::PutService { spec: Box::new(fixed_spec(name, 1)) });
    }
    let row = |n: &str| Some(BTreeMap::from([(n.to_string(), 1)]));
    let first = vec![("a".to_string(), row("n1")), ("b".to_string(), row("n2"))];
    assert!(s.apply(&Command::AssignChanges { changes: first.clone(), events: vec![], base: 0 }).changed);
    assert_eq!(s.assign_version, 1);
    assert!(!s.apply(&Command::AssignChanges { changes: first, events: vec![], base: 0 }).changed, "stale");
    // a moves, b loses its row, c (not a service) gets none.
    let step = vec![("a".to_string(), row("n2")), ("b".to_string(), None), ("c".to_string(), row("n1"))];
    assert!(s.apply(&Command::AssignChanges { changes: step.clone(), events: vec![], base: 1 }).changed);
    assert_eq!(s.assignment, BTreeMap::from([("a".to_string(), BTreeMap::from([("n2".to_string(), 1)]))]));
    assert_eq!(s.assign_version, 2);
    assert!(!s.apply(&Command::AssignChanges { changes: step, events: vec![], base: 2 }).changed, "nothing new");
    assert_eq!(s.assign_version, 2);
}

#[test]
fn a_new_service_and_its_first_placement_apply_as_one_entry_placed_only_at_its_base() {
    let row = |n: u32| Some(BTreeMap::from([("n1".to_string(), n)]));
    let several = |name: &str, base: u64| Command::Several {
        cmds: vec![
            Command::PutService { spec: Box::new(fixed_spec(name, 2)) },
            Command::AssignChanges { changes: vec![(name.to_string(), row(2))], events: vec![], base },
        ],
    };
    let mut s = ControlState::default();
    // It goes through the log as any command does.
    let logged: Command = serde_json::from_str(&serde_json::to_string(&several("a", 0)).unwrap()).unwrap();
    assert!(s.apply(&logged).changed);
    assert_eq!((s.services.contains_key("a"), s.slots("a", "n1"), s.assign_version), (true, 2, 1));
    // Placed from a table that changed meanwhile: the spec applies, the placement waits
    // for the Cluster Manager.
    assert!(s.apply(&several("b", 0)).changed);
    assert!(s.services.contains_key("b"));
    assert_eq!((s.assignment.get("b"), s.assign_version), (None, 1));
}
