//! Cluster identity (issue 13): what someone on the network can do to a running cluster
//! without its secrets. Crafted gossip changes nothing and reaches nobody; every peer
//! route refuses strangers; a gossip task that dies or freezes is restarted, and the node
//! is dormant meanwhile.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::Method;
use nanogrid::api::{GossipFault, GossipFaultArmed};
use nanogrid::transport::{PeerClient, RpcError, secrets::ClusterSecrets, tls};
use nanogrid_wire::chitchat::craft::{self, Op};
use nanogrid_wire::seal::{self, GossipKey};
use serde_json::{Value, json};

use super::driver::{Cluster, cluster_secrets, eventually};
use super::{formed, serves};

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A forger's listener on TCP and UDP at one address, counting whatever reaches it.
struct Listener {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

fn forger_listener() -> Listener {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let udp = UdpSocket::bind(addr).unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in tcp.incoming() {
            if s.is_ok() {
                h.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let h = hits.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while udp.recv_from(&mut buf).is_ok() {
            h.fetch_add(1, Ordering::SeqCst);
        }
    });
    Listener { addr, hits }
}

/// What the cluster looks like from each node: roles, gossip addresses, the leader, and
/// where each node would forward to.
async fn view(c: &Cluster) -> Vec<Value> {
    let mut out = Vec::new();
    for i in 0..c.nodes.len() {
        let s = c.status(i).await.unwrap();
        let nodes: Vec<Value> =
            s.nodes.iter().map(|n| json!([n.id, n.role.as_str(), n.live, n.peer_addr, n.addr])).collect();
        out.push(json!({ "nodes": nodes, "leader": s.leader }));
    }
    out
}

/// The delta a forger would send: `id` at generation `generation`, gossiping and serving
/// at `at`.
fn announce(id: &str, generation: u64, at: SocketAddr, mode: &str) -> Vec<u8> {
    let SocketAddr::V4(at) = at else { panic!("v4") };
    let peer = at.to_string();
    craft::ack(&[
        Op::Node { id, generation, addr: at, last_gc: 0, from: 0 },
        Op::Kv { key: "admin", value: &peer, version: 1 },
        Op::Kv { key: "ingress", value: &peer, version: 2 },
        Op::Kv { key: "load", value: "0", version: 3 },
        Op::Kv { key: "mode", value: mode, version: 4 },
        Op::Kv { key: "peer", value: &peer, version: 5 },
        Op::Kv { key: "services", value: "hello", version: 6 },
    ])
}

// One scenario read top to bottom: its steps share the nodes, ids and figures of the ones before, so it stays one function though longer than 80 lines.
#[tokio::test]
async fn crafted_gossip_changes_nothing_and_reaches_no_one() {
    let c = Cluster::start(3).await;
    formed(&c).await;
    c.nodes[0].node.deploy("hello", "hello", json!({ "instances": 1, "placement": ["n3"] })).await;
    for i in 0..3 {
        serves(&c, i, "/hello/", Duration::from_secs(20)).await;
    }
    // The grid settles after the cluster forms: wait for one fully replicated table that
    // every node has applied, so what is compared below is at rest.
    eventually("every node has the same, fully replicated partition table", Duration::from_secs(30), || async {
        let mut versions = Vec::new();
        for i in 0..3 {
            let g = c.grid(i).await.ok()?;
            (g.partitions == 256 && g.under_replicated == 0).then_some(())?;
            versions.push(g.version);
        }
        (versions.iter().all(|v| *v == versions[0] && *v > 0)).then_some(())
    })
    .await;
    let before = view(&c).await;
    let forger = forger_listener();
    let dir = c.cluster_dir();
    let key = GossipKey::from_hex(&std::fs::read_to_string(dir.join("gossip.key")).unwrap()).unwrap();
    let cluster_id = std::fs::read_to_string(dir.join("cluster-id")).unwrap().trim().to_string();
    let other = cluster_secrets(&[]);
    let other_key =
        GossipKey::from_hex(&std::fs::read_to_string(other.path().join("cluster/gossip.key")).unwrap()).unwrap();

    let newcomer = announce("evil", now_ms(), forger.addr, "joining");
    let takeover = announce("n2", now_ms() + 60_000, forger.addr, "follower");
    // A key at version 9, then the node's max version set to 5: chitchat would assert.
    let tripping = craft::ack(&[
        Op::Node { id: "n2", generation: 1, addr: "127.0.0.1:9".parse().unwrap(), last_gc: 0, from: 0 },
        Op::Kv { key: "peer", value: "x", version: 9 },
        Op::SetMax(5),
    ]);
    let benign = craft::syn(&cluster_id);
    let replayed = seal::seal(&key, &cluster_id, now_ms(), &benign).unwrap();
    let mut datagrams: Vec<(&str, Vec<u8>)> = Vec::new();
    for plain in [&newcomer, &takeover, &tripping] {
        // As chitchat sends them (no seal), sealed under a guessed key, and sealed for
        // another cluster with that cluster's key.
        datagrams.push(("version", plain.clone()));
        datagrams.push(("forged", seal::seal(&GossipKey::from_bytes([1; 32]), &cluster_id, now_ms(), plain).unwrap()));
        datagrams.push(("forged", seal::seal(&other_key, "ng-other", now_ms(), plain).unwrap()));
    }
    // What only a key holder can make: an old packet, one for another cluster id, a
    // replay, and the delta chitchat cannot take, all dropped before chitchat sees them.
    datagrams.push(("stale", seal::seal(&key, &cluster_id, now_ms() - 60_000, &newcomer).unwrap()));
    datagrams.push(("foreign-cluster", seal::seal(&key, "ng-other", now_ms(), &newcomer).unwrap()));
    datagrams.push(("invalid", seal::seal(&key, &cluster_id, now_ms(), &tripping).unwrap()));
    datagrams.push(("truncated", replayed[..20].to_vec()));

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut expected: std::collections::BTreeMap<&str, f64> = Default::default();
    for (reason, d) in &datagrams {
        *expected.entry(reason).or_default() += 1.0;
        for m in &c.nodes {
            udp.send_to(d, ("127.0.0.1", m.gossip)).unwrap();
        }
    }
    // The replay: the first copy is a harmless Syn the nodes accept, the second is dropped.
    for m in &c.nodes {
        udp.send_to(&replayed, ("127.0.0.1", m.gossip)).unwrap();
        udp.send_to(&replayed, ("127.0.0.1", m.gossip)).unwrap();
    }
    expected.insert("replay", 1.0);
    for i in 0..3 {
        let n = &c.nodes[i].node;
        for (reason, want) in &expected {
            let labels = format!("reason=\"{reason}\"");
            let what = format!("{} drops {want} datagram(s) as {reason}", c.nodes[i].name);
            eventually(&what, Duration::from_secs(10), || {
                let labels = labels.clone();
                async move {
                    let got = n.metric("nanogrid_gossip_rejected_total", &labels).await;
                    assert!(got <= *want, "{reason}: {got} > {want}");
                    (got == *want).then_some(())
                }
            })
            .await;
        }
    }
    // Keep watching while every node takes part in 30 more gossip exchanges and the
    // leader's Cluster Manager runs many steps over its view.
    let seen: Vec<f64> = futures::future::join_all(
        c.nodes.iter().map(|m| m.node.metric("nanogrid_gossip_packets_total", "direction=\"in\"")),
    )
    .await;
    for (i, s) in seen.iter().enumerate() {
        let n = &c.nodes[i].node;
        eventually("30 more gossip packets arrive", Duration::from_secs(20), || async move {
            (n.metric("nanogrid_gossip_packets_total", "direction=\"in\"").await >= s + 30.0).then_some(())
        })
        .await;
    }
    assert_eq!(view(&c).await, before, "membership, addresses and leader are unchanged");
    // No partition was given to a node the forger announced.
    for i in 0..3 {
        for part in c.grid(i).await.unwrap().table {
            for n in part.replicas.iter().chain([&part.primary]) {
                assert!(["n1", "n2", "n3"].contains(&n.as_str()), "{part:?}");
            }
        }
    }
    for i in 0..3 {
        let n = &c.nodes[i].node;
        assert_eq!(n.metric("nanogrid_gossip_restarts_total", "").await, 0.0, "gossip never stopped");
        assert_eq!(n.metric("nanogrid_gossip_running", "").await, 1.0);
        assert_eq!(c.get(i, "/hello/").await.unwrap().status, 200, "node {i} still serves (n1, n2 by forwarding)");
    }
    assert_eq!(forger.hits.load(Ordering::SeqCst), 0, "nothing was sent to the address the forger announced");
}

// One scenario read top to bottom: its steps share the nodes, ids and figures of the ones before, so it stays one function though longer than 80 lines.
#[tokio::test]
async fn every_peer_route_refuses_strangers() {
    let c = Cluster::start(3).await;
    formed(&c).await;
    let (n2, at) = ("n2", c.peer_addr(1));
    let routes: [(Method, &str); 8] = [
        (Method::POST, "/raft/append"),
        (Method::POST, "/raft/vote"),
        (Method::POST, "/raft/snapshot"),
        (Method::POST, "/control/write"),
        (Method::POST, "/grid"),
        (Method::POST, "/graph"),
        (Method::GET, "/components/0000"),
        (Method::POST, "/forward/hello/"),
    ];
    let request = |m: &Method, path: &str| {
        http::Request::builder()
            .method(m.clone())
            .uri(path)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap()
    };

    // A certificate from another CA, offered to a client that trusts the real one.
    let other = cluster_secrets(&["n1"]);
    let foreign = ClusterSecrets::load(&other.path().join("cluster"), "n1").unwrap();
    let real = ClusterSecrets::load(&c.cluster_dir(), "n1").unwrap();
    let cfg = tls::client_config(&real.ca, foreign.node_cert.clone(), foreign.node_key.clone_key()).unwrap();
    let handshakes = c.nodes[1].node.metric("nanogrid_peer_refused_total", "reason=\"handshake\"").await;
    let stranger = PeerClient::new("n1", Some(cfg));
    for (m, path) in &routes {
        let e = stranger.send(n2, &at, request(m, path), Duration::from_secs(5)).await.unwrap_err();
        let refused =
            matches!(&e, RpcError::NotSent { reason, .. } if reason.contains("refused this node's certificate"));
        assert!(refused, "{path}: {e}");
    }
    // One refused handshake per route (each attempt dials anew).
    let (n, want) = (&c.nodes[1].node, handshakes + routes.len() as f64);
    eventually("n2 counts a refused handshake per route", Duration::from_secs(5), || async move {
        let refused = n.metric("nanogrid_peer_refused_total", "reason=\"handshake\"").await;
        (refused >= want).then_some(())
    })
    .await;

    // A real certificate (n3's) on a request that claims to come from n1.
    let impostor = {
        let s = ClusterSecrets::load(&c.cluster_dir(), "n3").unwrap();
        let cfg = tls::client_config(&s.ca, s.node_cert.clone(), s.node_key.clone_key()).unwrap();
        PeerClient::new("n1", Some(cfg))
    };
    for (m, path) in &routes {
        let resp = impostor.send(n2, &at, request(m, path), Duration::from_secs(5)).await.unwrap();
        assert_eq!(resp.status(), 403, "{path}");
        let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
        let v: nanogrid::http::ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(v.error.code, "wrong-node", "{path}: {v:?}");
    }
    // n3 speaking as itself, but carrying n1's Raft vote.
    let n3 = c.peer_client("n3");
    let vote = openraft::raft::VoteRequest::<u64> {
        vote: openraft::Vote::new(99, nanogrid::control::types::raft_id("n1")),
        last_log_id: None,
    };
    let vote = nanogrid::control::formation::Fenced { formation: None, rpc: vote };
    let e = n3.call(n2, &at, &vote, Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(&e, RpcError::Refused { status: 403, code, .. } if code == "wrong-node"), "{e}");
    assert!(c.status(1).await.unwrap().term < 99, "the forged vote did not move n2's term");

    // Plain HTTP gets no HTTP answer at all.
    for (m, path) in &routes {
        let mut s = std::net::TcpStream::connect(&at).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // The listener may close before the request is all written (it is not TLS).
        let _ = write!(s, "{m} {path} HTTP/1.1\r\nhost: n2\r\nx-nanogrid-node: n1\r\ncontent-length: 0\r\n\r\n");
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        assert!(
            !got.starts_with(b"HTTP/"),
            "{path}: a plain HTTP request was answered: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    // Cleartext HTTP/2 (what a node in benchmark mode speaks) is refused the same way.
    let cleartext = PeerClient::new("n1", None);
    let e = cleartext.call(n2, &at, &nanogrid::control::GraphReq, Duration::from_secs(5)).await.unwrap_err();
    assert!(!matches!(e, RpcError::Refused { .. }), "{e}");
    // Any failure passes the check above (a refused connection too); on the wire, the
    // listener accepts the connection and answers an HTTP/2 preface with no HTTP/2 frame
    // (a server speaking h2c would send its SETTINGS frame: 9-byte header, type 4).
    let preface = [&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], &[0, 0, 0, 4, 0, 0, 0, 0, 0]].concat();
    let got = crate::support::raw_exchange(&at, &preface);
    assert!(got.len() < 9 || got[3] != 4, "cleartext HTTP/2 was answered with a frame: {got:?}");
    // The cluster is as it was.
    assert!(c.agreed_leader(&[0, 1, 2]).await.is_some());
}

/// A peer request of another peer protocol (a node of another release) is refused on
/// every route, counted and explained; answers name this node's protocol.
#[tokio::test]
async fn a_peer_request_of_another_protocol_is_refused() {
    use nanogrid::transport::{PROTOCOL, PROTOCOL_HEADER};
    let c = Cluster::start(3).await;
    formed(&c).await;
    let (n2, at) = ("n2", c.peer_addr(1));
    let n1 = c.peer_client("n1");
    let request = |m: Method, path: &str, protocol: Option<&'static str>| {
        let mut b = http::Request::builder().method(m).uri(path);
        if let Some(p) = protocol {
            b = b.header(PROTOCOL_HEADER, p);
        }
        b.body(http_body_util::Full::new(bytes::Bytes::new())).unwrap()
    };
    let before = c.nodes[1].node.metric("nanogrid_peer_refused_total", "reason=\"protocol\"").await;
    let routes = [(Method::POST, "/raft/vote"), (Method::POST, "/grid"), (Method::POST, "/forward/hello/")];
    for (m, path) in &routes {
        for theirs in ["99", "not-a-number"] {
            let resp = n1.send(n2, &at, request(m.clone(), path, Some(theirs)), Duration::from_secs(5)).await;
            // The caller reads the refusal as the answer of a node of its own protocol.
            let resp = resp.unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(resp.status(), 409, "{path}");
            assert_eq!(resp.headers().get(PROTOCOL_HEADER).unwrap(), &PROTOCOL.to_string(), "{path}");
            let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
            let v: nanogrid::http::ErrorBody = serde_json::from_slice(&body).unwrap();
            assert_eq!(v.error.code, "protocol-mismatch", "{path}: {v:?}");
            let msg = &v.error.message;
            assert!(msg.contains(&format!("speaks peer protocol {theirs}")), "{msg}");
            assert!(msg.contains("run one nanogrid release on every node"), "{msg}");
        }
    }
    let after = c.nodes[1].node.metric("nanogrid_peer_refused_total", "reason=\"protocol\"").await;
    assert_eq!(after - before, (routes.len() * 2) as f64);
    // Its own protocol is served, and the answer names it.
    let resp = n1.send(n2, &at, request(Method::POST, "/graph", None), Duration::from_secs(5)).await.unwrap();
    assert_ne!(resp.status(), 409);
    assert_eq!(resp.headers().get(PROTOCOL_HEADER).unwrap(), &PROTOCOL.to_string());
    assert!(c.agreed_leader(&[0, 1, 2]).await.is_some());

    // The header stays between nodes: a client's forwarded request is answered without it.
    c.nodes[0].node.deploy("hello", "hello", json!({ "instances": 1, "placement": ["n1"] })).await;
    super::placement_is(&c, 1, "hello", &[("n1", 1)]).await;
    serves(&c, 1, "/hello/", Duration::from_secs(10)).await;
    let r = c.get(1, "/hello/").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header(PROTOCOL_HEADER), None, "relayed to the client");
}

#[tokio::test]
async fn a_gossip_task_that_stops_is_restarted_and_its_node_is_dormant_meanwhile() {
    // The gossip task's own failures are armed through the admin API (no network rule
    // can make a socket report an error or a send hang).
    let c = Cluster::start_with(3, &["--fault-injection"]).await;
    formed(&c).await;
    for (i, fault, kind) in [(1, "fail", GossipFault::Fail), (2, "stall", GossipFault::Stall)] {
        let n = &c.nodes[i].node;
        let armed = Instant::now();
        let r = n.admin().call_json(Method::POST, "/v1/debug/gossip", &json!({ "fault": fault })).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(crate::support::parse::<GossipFaultArmed>(&r).armed, kind);
        eventually(
            &format!("{}'s gossip ({fault}) is restarted", c.nodes[i].name),
            Duration::from_secs(15),
            || async { (n.metric("nanogrid_gossip_restarts_total", "").await == 1.0).then_some(()) },
        )
        .await;
        println!("gossip {fault}: restarted {:?} after the fault was armed", armed.elapsed());
        // Logged as it happens (the mode loop sees gossip stopped within its 100 ms tick;
        // the restart waits 200 ms).
        for line in [
            "the gossip task stopped; this node is dormant until gossip runs again",
            "node is dormant: its gossip is not running",
        ] {
            eventually(&format!("the node logs {line:?}"), Duration::from_secs(5), || async move {
                n.log().contains(line).then_some(())
            })
            .await;
        }
        let all: Vec<usize> = (0..3).collect();
        eventually("the node serves in the cluster again", Duration::from_secs(20), || c.agreed_leader(&all)).await;
        assert_eq!(n.metric("nanogrid_gossip_running", "").await, 1.0);
    }
    // The dormant spells cleared everywhere: every node sees all three live.
    let c = &c;
    for i in 0..3 {
        eventually("every node sees all three live", Duration::from_secs(20), || async move {
            let s = c.status(i).await?;
            s.nodes.iter().all(|n| n.live).then_some(())
        })
        .await;
    }
    // The restarted nodes' own gossip (a second incarnation of their names) passed every
    // check on the way.
    for m in &c.nodes {
        for reason in ["invalid", "malformed", "replay", "stale", "forged"] {
            let got = m.node.metric("nanogrid_gossip_rejected_total", &format!("reason=\"{reason}\"")).await;
            assert_eq!(got, 0.0, "{}: cluster gossip dropped as {reason}", m.name);
        }
    }
}

#[tokio::test]
async fn a_guests_own_503_is_passed_through_and_runs_once() {
    let c = Cluster::start(3).await;
    formed(&c).await;
    // Two instances, on n2 and n3: a forwarder that took the guest's 503 for the platform's
    // "not run here" would try the other one too.
    c.nodes[0].node.deploy("m", "misbehave", json!({ "instances": 2, "placement": ["n2", "n3"] })).await;
    serves(&c, 0, "/m/", Duration::from_secs(20)).await;
    let r = c.get(0, "/m/fake-no-instance").await.unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.error().map(|e| e.message).as_deref(), Some("not me"), "the guest's own answer came through");
    let runs = c.get(0, "/m/kv-get/fake-runs").await.unwrap();
    assert_eq!((runs.status.as_u16(), runs.text()), (200, "1".to_string()), "the guest ran exactly once");
}
