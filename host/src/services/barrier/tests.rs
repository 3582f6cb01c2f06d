use super::sweep::report;
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
    assert_eq!(v["state"], "done");
    assert_eq!(v["waited_on"]["service"], "b");
    assert_eq!(v["waited_on"]["after_ms"], 40);
    assert_eq!(v["calls"][0]["status"], 200);
    assert_eq!(v["calls"][1]["error"], "Timeout");
    assert_eq!(v["answered"], 2);
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
