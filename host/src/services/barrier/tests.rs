use super::report::{BarrierState, report};
use super::*;
use crate::services::tests::registry;

#[test]
fn records_round_trip_and_report_what_was_waited_for() {
    let mut r = Record {
        id: "abc".into(),
        service: "jobs".into(),
        request_id: "r1".into(),
        depth: 0,
        created_ms: 1000,
        calls: vec![
            Call {
                service: "a".into(),
                request: WireRequest { method: "GET".into(), path: "/".into(), headers: vec![], body: vec![] },
                answer: Some(Answer {
                    after_ms: 5,
                    result: Ok(WireResponse { status: 200, headers: vec![], body: b"x".to_vec() }),
                }),
            },
            Call {
                service: "b".into(),
                request: WireRequest { method: "POST".into(), path: "/p".into(), headers: vec![], body: vec![1] },
                answer: Some(Answer { after_ms: 40, result: Err(WireError::Timeout) }),
            },
        ],
        then: WireRequest { method: "POST".into(), path: "/done".into(), headers: vec![], body: b"ctx".to_vec() },
        owner: "n1/0".into(),
        lease_until_ms: 7000,
        takeovers: 1,
        state: State::Done { status: 200, at_ms: 1100 },
        last: Some(1),
        max_answer: 4,
    };
    assert_eq!(decode(&encode(&r)).as_ref(), Some(&r));
    let v = report(&r);
    assert_eq!(v.state, BarrierState::Done);
    let waited = v.waited_on.as_ref().unwrap();
    assert_eq!((waited.service.as_str(), waited.after_ms), ("b", 40));
    assert_eq!(v.calls[0].status, Some(200));
    assert_eq!(v.calls[1].error.as_deref(), Some("Timeout"));
    assert_eq!(v.answered, 2);
    // The wire format: `end` and each call show only the fields they have.
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["state"], "done");
    assert_eq!(json["end"], serde_json::json!({ "status": 200, "ended_ms": 1100 }));
    assert_eq!(json["calls"][0]["status"], 200);
    assert!(json["calls"][0].get("error").is_none() && json["calls"][1].get("status").is_none(), "{json}");
    r.state = State::Waiting;
    assert_eq!(r.ended(), None);
    // Answers over the per-answer limit are kept as an error naming it.
    let big = WireResponse { status: 200, headers: vec![], body: vec![0; 5] };
    let kept = r.keepable(Ok(big));
    assert!(matches!(&kept, Err(WireError::Denied(m)) if m.contains("over the 4 bytes")), "{kept:?}");
    let small = WireResponse { status: 201, headers: vec![], body: vec![0; 4] };
    assert_eq!(r.keepable(Ok(small.clone())), Ok(small));
    assert!(decode(b"\xff\xff not a record").is_none());
}

/// Run `registry`'s sweep until it has taken a barrier over; returns the stop signal and
/// the sweep's task.
async fn sweep_until_taken_over(registry: &Arc<Registry>) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, rx) = watch::channel(false);
    let sweep = tokio::spawn(registry.clone().sweep_barriers(rx));
    let deadline = Instant::now() + Duration::from_secs(10);
    while registry.barriers.taken_over.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the sweep did not take the barrier over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (stop, sweep)
}

#[tokio::test]
async fn a_stopped_sweep_stops_its_drives_and_the_next_run_takes_them_over() {
    let dir = tempfile::tempdir().unwrap();
    let grid = Arc::new(crate::grid::Grid::new(Arc::new(crate::grid::MemoryStorage::default())));
    let call = |service: &str| Call {
        service: service.into(),
        request: WireRequest { method: "GET".into(), path: "/".into(), headers: vec![], body: vec![] },
        answer: None,
    };
    // A barrier an earlier run drove: its calls and continuation go to services that do
    // not exist, so a drive keeps retrying the continuation for seconds.
    let record = Record {
        id: "b1".into(),
        service: "jobs".into(),
        request_id: "r1".into(),
        depth: 0,
        created_ms: now_ms(),
        calls: vec![call("missing")],
        then: WireRequest { method: "POST".into(), path: "/done".into(), headers: vec![], body: vec![] },
        owner: "elsewhere/0".into(),
        lease_until_ms: 0,
        takeovers: 0,
        state: State::Waiting,
        last: None,
        max_answer: 1024,
    };
    assert!(grid.kv_compare_and_swap(NAMESPACE, &record_key("b1"), None, encode(&record)).await.unwrap());
    grid.kv_set(NAMESPACE, "pending/b1", Vec::new(), Consistency::Quorum).await.unwrap();

    let first = registry(&grid, dir.path());
    let (stop, sweep) = sweep_until_taken_over(&first).await;
    assert_eq!(first.barrier_engine.drives.running(), 1, "the taken-over barrier is driven");
    stop.send(true).unwrap();
    sweep.await.unwrap();
    assert_eq!(first.barrier_engine.drives.running(), 0, "the drive outlived the sweep's stop");
    assert_eq!(first.barriers.active(), 0);
    let pending = first.pending_barriers(10).await.unwrap();
    assert_eq!(pending, vec!["b1".to_string()], "the stopped barrier stays pending");

    // The next run of this node takes it over at once (its owner is an earlier run).
    let second = registry(&grid, dir.path());
    let (stop, sweep) = sweep_until_taken_over(&second).await;
    let taken = decode(&grid.kv_get(NAMESPACE, &record_key("b1"), Consistency::Quorum).await.unwrap().unwrap());
    assert_eq!(taken.map(|r| r.takeovers), Some(2));
    stop.send(true).unwrap();
    sweep.await.unwrap();
}

/// A barrier record as an earlier run left it: no calls, not ended.
fn waiting_record(id: &str, created_ms: u64) -> Record {
    Record {
        id: id.into(),
        service: "jobs".into(),
        request_id: "r1".into(),
        depth: 0,
        created_ms,
        calls: vec![],
        then: WireRequest { method: "POST".into(), path: "/done".into(), headers: vec![], body: vec![] },
        owner: "elsewhere/0".into(),
        lease_until_ms: now_ms() + 60_000,
        takeovers: 0,
        state: State::Waiting,
        last: None,
        max_answer: 1024,
    }
}

#[tokio::test]
async fn the_sweep_gives_an_index_entry_without_a_record_time_to_appear() {
    let dir = tempfile::tempdir().unwrap();
    let grid = Arc::new(crate::grid::Grid::new(Arc::new(crate::grid::MemoryStorage::default())));
    let q = Consistency::Quorum;
    // A fan-out writes its record and its index entry together: the entry may come first.
    grid.kv_set(NAMESPACE, "pending/young", now_ms().to_string().into_bytes(), q).await.unwrap();
    // Older than a lease: a record write retrying through a failover can take that long.
    let slow = now_ms() - 2 * LEASE.as_millis() as u64;
    grid.kv_set(NAMESPACE, "pending/slow", slow.to_string().into_bytes(), q).await.unwrap();
    let old = now_ms() - UNRECORDED_GRACE.as_millis() as u64 - 1;
    grid.kv_set(NAMESPACE, "pending/old", old.to_string().into_bytes(), q).await.unwrap();
    // An entry written before entries held a time counts as old, as does one past any clock.
    grid.kv_set(NAMESPACE, "pending/untimed", Vec::new(), q).await.unwrap();
    grid.kv_set(NAMESPACE, "pending/far", u64::MAX.to_string().into_bytes(), q).await.unwrap();
    let registry = registry(&grid, dir.path());
    registry.barrier_engine.take_over_stalled(registry.clone()).await.unwrap();
    let mut left = registry.pending_barriers(10).await.unwrap();
    left.sort();
    assert_eq!(left, ["far", "slow", "young"]);
}

#[tokio::test]
async fn forgetting_ended_barriers_goes_by_the_records_own_end() {
    let dir = tempfile::tempdir().unwrap();
    let grid = Arc::new(crate::grid::Grid::new(Arc::new(crate::grid::MemoryStorage::default())));
    let q = Consistency::Quorum;
    let long_ago = now_ms() - KEEP_ENDED.as_millis() as u64 - 1;
    // `running`: a driver wrote its `done` entry beside an end it lost to another node,
    // which still drives it; `late`: that node ended it since.
    let running = waiting_record("running", long_ago);
    let mut ended = waiting_record("ended", long_ago);
    ended.state = State::Done { status: 200, at_ms: long_ago };
    let mut late = waiting_record("late", long_ago);
    let late_end = now_ms();
    late.state = State::Done { status: 200, at_ms: late_end };
    for r in [&running, &ended, &late] {
        assert!(grid.kv_compare_and_swap(NAMESPACE, &record_key(&r.id), None, encode(r)).await.unwrap());
        grid.kv_set(NAMESPACE, &format!("done/{}", r.id), long_ago.to_string().into_bytes(), q).await.unwrap();
    }
    let registry = registry(&grid, dir.path());
    registry.barrier_engine.forget_ended().await.unwrap();
    assert!(grid.kv_get(NAMESPACE, &record_key("ended"), q).await.unwrap().is_none(), "an ended record is forgotten");
    for r in [&running, &late] {
        let kept = grid.kv_get(NAMESPACE, &record_key(&r.id), q).await.unwrap();
        assert_eq!(kept.as_deref().and_then(decode).as_ref(), Some(r), "{}'s record was dropped", r.id);
    }
    let done = grid.kv_list_keys(NAMESPACE, "done/", None, 10).await.unwrap();
    assert_eq!(done, ["done/late", "done/running"], "only the forgotten barrier's entry goes");
    let at = grid.kv_get(NAMESPACE, "done/late", q).await.unwrap();
    assert_eq!(at, Some(late_end.to_string().into_bytes()), "the entry now says when the barrier ended");
}
