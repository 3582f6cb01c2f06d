//! `instances` bounds concurrent executions; the queue is bounded; nothing is lost.

use http::Method;
use serde_json::json;

use crate::support::TestNode;

#[tokio::test]
async fn two_hundred_requests_against_two_instances() {
    let node = TestNode::start().await;
    node.deploy("slow", "misbehave", json!({ "instances": 2, "max_queue": 200, "queue_timeout_ms": 60000 })).await;
    let reqs: Vec<_> = (0..200).map(|_| node.get("/slow/sleep/20")).collect();
    let replies = futures::future::join_all(reqs).await;
    for r in &replies {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(node.metric("nanogrid_instances_peak_running", "service=\"slow\"").await, 2.0);
    assert_eq!(node.metric("nanogrid_requests_total", "service=\"slow\",outcome=\"ok\"").await, 200.0);
    assert_eq!(node.metric("nanogrid_requests_total", "service=\"slow\",outcome=\"rejected\"").await, 0.0);
    let v = node.service("slow").await;
    let n = &v.status.nodes[0];
    assert_eq!((n.peak_running, n.running, n.queued), (Some(2), Some(0), Some(0)), "{n:?}");
}

#[tokio::test]
async fn beyond_the_queue_requests_get_503_with_retry_after() {
    let node = TestNode::start().await;
    // Default queue: 4 x instances = 8.
    node.deploy("slow", "misbehave", json!({ "instances": 2 })).await;
    let reqs: Vec<_> = (0..200).map(|_| node.get("/slow/sleep/100")).collect();
    let replies = futures::future::join_all(reqs).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let busy: Vec<_> = replies.iter().filter(|r| r.status == 503).collect();
    assert_eq!(ok + busy.len(), 200, "every request got an answer");
    assert!(ok >= 2 && !busy.is_empty(), "ok {ok}, busy {}", busy.len());
    for r in &busy {
        assert_eq!(r.error_code().as_deref(), Some("overloaded"));
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    assert!(node.metric("nanogrid_instances_peak_running", "service=\"slow\"").await <= 2.0);
    let counted = node.metric("nanogrid_requests_total", "service=\"slow\",outcome=\"ok\"").await
        + node.metric("nanogrid_requests_total", "service=\"slow\",outcome=\"rejected\"").await;
    assert_eq!(counted, 200.0);
}

#[tokio::test]
async fn scaling_under_load_drops_nothing() {
    let node = TestNode::start().await;
    node.deploy("slow", "misbehave", json!({ "instances": 1, "max_queue": 1000, "queue_timeout_ms": 60000 })).await;
    let load = async {
        let reqs: Vec<_> = (0..150).map(|_| node.get("/slow/sleep/15")).collect();
        futures::future::join_all(reqs).await
    };
    let scaling = async {
        let admin = node.admin();
        for n in [8, 2, 4] {
            // Each scale lands under load: requests waiting in the queue.
            crate::support::eventually("requests are queued", std::time::Duration::from_secs(10), || async {
                (node.metric("nanogrid_queue_depth", "service=\"slow\"").await > 0.0).then_some(())
            })
            .await;
            let r = admin.call_json(Method::POST, "/v1/services/slow/scale", &json!({ "instances": n })).await.unwrap();
            assert_eq!(r.status, 200);
        }
    };
    let (replies, ()) = tokio::join!(load, scaling);
    for r in &replies {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(node.metric("nanogrid_requests_total", "service=\"slow\",outcome=\"ok\"").await, 150.0);
    assert!(node.metric("nanogrid_instances_peak_running", "service=\"slow\"").await <= 8.0);
}

/// Clients that hang up while their requests wait in the queue leave no slot taken: with
/// one instance, a slot handed to a request whose client had gone used to stay taken for
/// good, and the service then answered "no free instance" to everyone (seen after wrk
/// runs closed their connections).
#[tokio::test]
async fn clients_that_hang_up_while_queued_leave_no_slot_taken() {
    use tokio::io::AsyncWriteExt;
    let node = TestNode::start().await;
    node.deploy("slow", "misbehave", json!({ "instances": 1, "max_queue": 100 })).await;
    let addr = node.ingress.trim_start_matches("http://").to_string();
    for _ in 0..10 {
        let mut conns = Vec::new();
        for _ in 0..30 {
            let mut c = tokio::net::TcpStream::connect(&addr).await.expect("connect to ingress");
            c.write_all(b"GET /slow/sleep/50 HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
            conns.push(c);
        }
        crate::support::eventually("requests are queued", std::time::Duration::from_secs(10), || async {
            (node.metric("nanogrid_queue_depth", "service=\"slow\"").await > 0.0).then_some(())
        })
        .await;
        // Hang up while most of them wait; each later hand-over finds a client gone.
        drop(conns);
    }
    crate::support::eventually("every slot is free again", std::time::Duration::from_secs(20), || async {
        let v = node.service("slow").await;
        let n = &v.status.nodes[0];
        (n.running == Some(0) && n.queued == Some(0)).then_some(())
    })
    .await;
    let r = node.get("/slow/sleep/1").await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A connection's requests run on one ingress thread (a runtime per core, the default) with
/// no other worker to steal them, so a guest that never yields must still give way at each
/// epoch tick: with two spinning guests on every thread, a new connection's request is
/// answered while they spin. The same on the shared runtime.
#[tokio::test]
async fn spinning_guests_on_every_ingress_thread_leave_room_for_other_connections() {
    let _cpu = crate::support::cpu_heavy().await;
    for mode in ["per-core", "shared"] {
        let node = TestNode::start_with_args(true, &["--ingress-threads", mode]).await;
        // Each connection goes to the thread with the fewest open: two per core, opened
        // together, puts two on each.
        let n = 2 * std::thread::available_parallelism().map_or(1, |n| n.get());
        node.deploy("spin", "misbehave", json!({ "instances": n, "limits": { "timeout_ms": 60000 } })).await;
        node.deploy("hello", "hello", json!({})).await;
        let spinning = futures::future::join_all((0..n).map(|_| node.get("/spin/loop")));
        tokio::pin!(spinning);
        let all_running =
            crate::support::eventually("every guest spins", std::time::Duration::from_secs(20), || async {
                (node.service("spin").await.status.nodes[0].running == Some(n as u32)).then_some(())
            });
        tokio::select! {
            r = &mut spinning => panic!("{mode}: the spinning requests ended early: {:?}", r.iter().map(|r| r.status).collect::<Vec<_>>()),
            () = all_running => {}
        }
        let hello = tokio::select! {
            r = node.get("/hello/there") => r,
            _ = &mut spinning => panic!("{mode}: a request on a new connection waited for the spinning guests' deadline"),
        };
        assert_eq!(hello.status, 200, "{mode}: {}", hello.text());
        assert!(hello.text().ends_with("GET /there\n"), "{mode}: {}", hello.text());
        // Answered while every spinning guest still ran, not after some hit their deadline.
        assert_eq!(node.service("spin").await.status.nodes[0].running, Some(n as u32), "{mode}");
    }
}
