//! A forwarded request whose node dies with it in flight: an idempotent service's request
//! goes to the next holder and is answered; any other's answers 502 (it may have run, and
//! runs at most once).

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::json;

use nanogrid::api::ServiceDetail;
use nanogrid::client::{Client, Reply};

use super::driver::{Cluster, eventually};
use super::{formed, placement_is, serves};

/// The holder among `holders` that is running a request of `service` now.
async fn running_on(c: &Cluster, holders: &[usize], service: &str) -> usize {
    let what = format!("a request of {service} runs on one of its holders");
    eventually(&what, Duration::from_secs(10), || async {
        for &i in holders {
            let r = c.nodes[i].node.admin().get(&format!("/v1/services/{service}")).await.ok()?;
            let d: ServiceDetail = crate::support::parse(&r);
            if d.status.local.running > 0 {
                return Some(i);
            }
        }
        None
    })
    .await
}

/// Send `GET {path}` to node 0 in a task, kill the holder that runs it, and return the
/// answer with the killed node's index.
async fn kill_the_runner(c: &mut Cluster, holders: &[usize], service: &str) -> (Reply, usize) {
    let url = format!("{}/{service}/sleep/3000", c.nodes[0].node.ingress);
    let sent = tokio::spawn(async move { Client::new().send(Method::GET, &url, &[], Bytes::new()).await });
    let runner = running_on(c, holders, service).await;
    c.kill(runner);
    let reply = tokio::time::timeout(Duration::from_secs(30), sent).await.expect("an answer within 30 s");
    (reply.unwrap().expect("node 0 answers"), runner)
}

#[tokio::test]
async fn a_request_whose_node_dies_is_sent_on_only_for_an_idempotent_service() {
    let mut c = Cluster::start(3).await;
    formed(&c).await;
    // Requests enter at n1, which has no instance of either: it forwards them.
    let holders = [1, 2];
    let pair = [c.nodes[1].name.clone(), c.nodes[2].name.clone()];
    for (name, idempotent) in [("again", true), ("once", false)] {
        let spec = json!({ "instances": 2, "placement": pair, "idempotent": idempotent });
        c.nodes[0].node.deploy(name, "misbehave", spec).await;
        placement_is(&c, 0, name, &[(pair[0].as_str(), 1), (pair[1].as_str(), 1)]).await;
        serves(&c, 0, &format!("/{name}/sleep/1"), Duration::from_secs(20)).await;
    }

    let (reply, killed) = kill_the_runner(&mut c, &holders, "again").await;
    assert_eq!(reply.status.as_u16(), 200, "the other holder answered: {}", reply.text());
    let retried = c.nodes[0].node.metric("nanogrid_forwarded_total", "outcome=\"retried\"").await;
    assert_eq!(retried, 1.0, "n1 counts the forward it sent on");

    c.restart(killed);
    for name in ["again", "once"] {
        serves(&c, killed, &format!("/{name}/sleep/1"), Duration::from_secs(30)).await;
    }
    let (reply, _) = kill_the_runner(&mut c, &holders, "once").await;
    crate::support::assert_error(&reply, 502, "forward-failed");
}
