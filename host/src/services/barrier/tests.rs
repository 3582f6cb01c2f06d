use super::report::{BarrierState, report};
use super::*;

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
