//! SIGKILL the node at arbitrary points during deploys and kv writes, twenty times: after
//! each restart every acknowledged deploy and write is there, nothing half-written shows,
//! and the node needs no repair.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use nanogrid::client::{AdminClient, Client};
use nanogrid::runtime::codec::put_uleb;
use serde_json::json;

use crate::support::{TOKEN, TestNode, eventually, wasm};

/// The same component with a custom section appended: new bytes, new digest, same code.
fn variant(base: &[u8], tag: &str) -> Vec<u8> {
    let name = b"nanogrid-test";
    let mut payload = Vec::new();
    put_uleb(name.len() as u64, &mut payload);
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = base.to_vec();
    out.push(0);
    put_uleb(payload.len() as u64, &mut out);
    out.extend_from_slice(&payload);
    out
}

// One scenario read top to bottom: its steps share the nodes, ids and figures of the ones before, so it stays one function though longer than 80 lines.
#[tokio::test]
async fn sigkill_during_deploys_and_writes_loses_nothing_acknowledged() {
    let mut node = TestNode::start().await;
    node.deploy("counter", "counter", json!({ "instances": 4 })).await;
    let hello = wasm("hello");
    let deployed: Arc<Mutex<BTreeSet<String>>> = Default::default();
    let mut acked_count = 0i64;

    for round in 0..20u64 {
        let admin = AdminClient::new(&node.admin_url, Some(TOKEN.into()));
        let ingress = node.ingress.clone();
        let acked = Arc::new(Mutex::new(acked_count));
        let writer = {
            let acked = acked.clone();
            tokio::spawn(async move {
                let c = Client::new();
                loop {
                    let Ok(r) = c.send(Method::POST, &format!("{ingress}/counter/n"), &[], Bytes::new()).await else {
                        break;
                    };
                    if r.status != 200 {
                        break;
                    }
                    *acked.lock().unwrap() = r.json().unwrap()["value"].as_i64().unwrap();
                }
            })
        };
        let deployer = {
            let deployed = deployed.clone();
            let hello = hello.clone();
            tokio::spawn(async move {
                // One new component per round (an upload that may be cut short), then as
                // many deploys of it under new names as fit before the kill.
                let Ok(up) = admin.upload(variant(&hello, &format!("round {round}"))).await else { return };
                if !up.status.is_success() {
                    return;
                }
                let digest = crate::support::parse::<nanogrid::api::Uploaded>(&up).digest;
                for i in 0.. {
                    let name = format!("s{round}x{i}");
                    let body = json!({ "component": digest, "config": { "greeting": name } });
                    let Ok(r) = admin.call_json(Method::PUT, &format!("/v1/services/{name}"), &body).await else {
                        break;
                    };
                    if r.status == 201 {
                        deployed.lock().unwrap().insert(name);
                    }
                }
            })
        };
        // Vary where in the work the kill lands. Even rounds first wait until this round
        // has deployed something and written something, so every round exercises both;
        // odd rounds kill blind, which can land inside an upload.
        if round % 2 == 0 {
            let before = deployed.lock().unwrap().len();
            let start = *acked.lock().unwrap();
            let what = format!("round {round} has deployed and written something");
            eventually(&what, Duration::from_secs(10), || async {
                (deployed.lock().unwrap().len() > before && *acked.lock().unwrap() > start).then_some(())
            })
            .await;
        }
        tokio::time::sleep(Duration::from_millis(50 + (round * 73) % 400)).await;
        node.kill();
        let _ = tokio::join!(writer, deployer);
        acked_count = *acked.lock().unwrap();

        node.restart();
        let value = node.get("/counter/n").await.json().unwrap()["value"].as_i64().unwrap();
        assert!(
            value == acked_count || value == acked_count + 1,
            "round {round}: counter is {value}, acknowledged {acked_count} (at most one more may have landed unacknowledged)"
        );
        acked_count = value;
        let listed: nanogrid::api::ServiceList =
            serde_json::from_value(node.admin().get("/v1/services").await.unwrap().json().unwrap()).unwrap();
        let names: BTreeSet<String> = listed.services.into_iter().map(|s| s.name).collect();
        for name in deployed.lock().unwrap().iter() {
            assert!(names.contains(name), "round {round}: acknowledged deploy {name} is missing");
        }
        // Every listed service, acknowledged or not, is whole: it answers.
        for name in names.iter().filter(|n| n.starts_with('s')) {
            let r = node.get(&format!("/{name}/")).await;
            assert_eq!(r.status, 200, "round {round}: {name}: {}", r.text());
            assert!(r.text().starts_with(&format!("{name}, world!")), "{}", r.text());
        }
    }
    assert!(deployed.lock().unwrap().len() >= 5, "the loop exercised deploys: {:?}", deployed.lock().unwrap());
    assert!(acked_count >= 20, "the loop exercised writes: {acked_count}");
}
