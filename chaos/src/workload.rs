//! The clients of a run. They go through every node's ingress (chosen at random per
//! request, as clients behind a load balancer would) and record what they did with its
//! outcome; nothing here decides whether the outcome is right (`check.rs` does).
//!
//! - registers: a few keys, each read, written and compare-and-swapped at `quorum` or
//!   `all` by several clients, every operation with its call and return time;
//! - counter: one key incremented by compare-and-swap;
//! - set: unique keys added at `quorum` (a grow-only set);
//! - barriers: jobs fanned out through the `jobs` sample's durable barrier;
//! - plain requests to `hello`, counted per second (availability).
//!
//! Each request is judged by `outcome.rs`: an answer, not applied (nothing was sent, or a
//! 4xx rejected it, which is a finding), or unknown (a timeout, a reset, a 5xx: it may or
//! may not have happened). Each run reports how many were unknown, and fails past a bound.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use nanogrid::client::{Client, Reply};
use serde_json::{Value, json};

use crate::linearizable::{Call, Op, Ret};
use crate::outcome::{Ended, Judged, Outcomes, absent};
use crate::rng::Rng;

/// Register keys in use at once; every few seconds the clients move to fresh keys (as
/// Jepsen's independent keys do), so each key's history stays short enough to check.
const REGISTER_SLOTS: u64 = 16;
const REGISTER_EPOCH_SECS: u64 = 2;
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Counter {
    pub acked: u64,
    pub unknown: u64,
}

#[derive(Default)]
pub struct Set {
    pub acked: Vec<String>,
    pub unknown: u64,
    /// Every add: key, node, call and return time (µs), status (0: no answer).
    pub log: Vec<(String, String, u64, u64, u16)>,
}

pub struct Job {
    pub id: String,
    pub words: u64,
    pub lines: u64,
}

/// Everything the clients saw.
pub struct Histories {
    pub t0: Instant,
    pub registers: Mutex<BTreeMap<String, Vec<Op>>>,
    pub counter: Mutex<Counter>,
    pub set: Mutex<Set>,
    pub jobs: Mutex<Vec<Job>>,
    /// Per second since `t0`: (answered 200, sent).
    pub availability: Mutex<BTreeMap<u64, (u64, u64)>>,
    pub ops: AtomicU64,
    pub unknown: AtomicU64,
    pub outcomes: Outcomes,
}

impl Histories {
    pub fn new() -> Self {
        Histories {
            t0: Instant::now(),
            registers: Default::default(),
            counter: Default::default(),
            set: Default::default(),
            jobs: Default::default(),
            availability: Default::default(),
            ops: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
            outcomes: Outcomes::default(),
        }
    }

    fn micros(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }
}

/// What the clients need: every node's ingress URL and one HTTP client.
#[derive(Clone)]
pub struct Target {
    pub ingress: Arc<Vec<String>>,
    pub http: Client,
}

impl Target {
    /// One request to a random node.
    pub async fn send(&self, rng: &mut Rng, method: Method, path: &str, body: &str) -> Ended {
        let node = rng.pick(&self.ingress).clone();
        self.send_to(&node, method, path, body).await
    }

    /// One request to the node whose ingress is `node`.
    pub async fn send_to(&self, node: &str, method: Method, path: &str, body: &str) -> Ended {
        let url = format!("{node}{path}");
        let sent = self.http.send(method, &url, &[], Bytes::from(body.to_string()));
        match tokio::time::timeout(TIMEOUT, sent).await {
            Ok(r) => Ended::from_result(r),
            Err(_) => Ended::Lost,
        }
    }
}

fn level(rng: &mut Rng) -> &'static str {
    if rng.range(0, 2) == 0 { "quorum" } else { "all" }
}

/// One register client until `stop`.
pub async fn register_client(t: Target, h: Arc<Histories>, client: usize, mut rng: Rng, stop: Instant) {
    let mut seen: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut n = 0;
    while Instant::now() < stop {
        let epoch = h.t0.elapsed().as_secs() / REGISTER_EPOCH_SECS;
        let key = format!("r{}-{epoch}", rng.range(0, REGISTER_SLOTS));
        n += 1;
        let value = format!("c{client}-{n}");
        let start = h.micros();
        let (call, judged) = register_op(&t, &h, &mut rng, &key, &value, seen.get(&key).cloned().flatten()).await;
        let end = h.micros();
        let ret = match judged {
            // It did not happen: no operation in the history (it would only weaken it).
            None => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            Some(ret) => ret,
        };
        h.ops.fetch_add(1, Ordering::Relaxed);
        if ret == Ret::Unknown {
            h.unknown.fetch_add(1, Ordering::Relaxed);
        }
        if let Ret::Read(v) = &ret {
            seen.insert(key.clone(), v.clone());
        }
        let op = Op { client, call, ret, start, end };
        h.registers.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default().push(op);
    }
}

/// One read, write or compare-and-swap of `key`: the call and its return, `None` when it
/// was not applied.
async fn register_op(
    t: &Target,
    h: &Histories,
    rng: &mut Rng,
    key: &str,
    value: &str,
    expected: Option<String>,
) -> (Call, Option<Ret>) {
    match rng.range(0, 10) {
        0..4 => {
            let path = format!("/kv/{key}?consistency={}", level(rng));
            let ret = match h.outcomes.judge(t.send(rng, Method::GET, &path, "").await, &path, true) {
                Judged::Answered(r) if absent(&r) => Some(Ret::Read(None)),
                Judged::Answered(r) => Some(Ret::Read(Some(r.text()))),
                Judged::NotApplied => None,
                Judged::Unknown => Some(Ret::Unknown),
            };
            (Call::Read, ret)
        }
        4..7 => {
            let path = format!("/kv/{key}?consistency={}", level(rng));
            let ret = match h.outcomes.judge(t.send(rng, Method::PUT, &path, value).await, &path, false) {
                Judged::Answered(_) => Some(Ret::Written),
                Judged::NotApplied => None,
                Judged::Unknown => Some(Ret::Unknown),
            };
            (Call::Write(value.to_string()), ret)
        }
        _ => {
            let body = json!({ "expected": expected, "new": value }).to_string();
            let path = format!("/kv/{key}?cas");
            let ret = match h.outcomes.judge(t.send(rng, Method::POST, &path, &body).await, &path, false) {
                Judged::Answered(r) => Some(swapped(h, &path, &r).map_or(Ret::Unknown, Ret::Swapped)),
                Judged::NotApplied => None,
                Judged::Unknown => Some(Ret::Unknown),
            };
            (Call::Cas { expected, new: value.to_string() }, ret)
        }
    }
}

/// A compare-and-swap answer's `swapped`; an answer without it is unexpected.
fn swapped(h: &Histories, what: &str, r: &Reply) -> Option<bool> {
    let swapped = r.json().ok().and_then(|v: Value| v["swapped"].as_bool());
    if swapped.is_none() {
        h.outcomes.unexpected(what, r);
    }
    swapped
}

/// Increment `counter` by compare-and-swap until `stop`.
pub async fn counter_client(t: Target, h: Arc<Histories>, mut rng: Rng, stop: Instant) {
    const PATH: &str = "/kv/counter?cas";
    while Instant::now() < stop {
        let read = t.send(&mut rng, Method::GET, "/kv/counter?consistency=quorum", "").await;
        let Some(v) = read.reply().filter(|r| r.status == 200).and_then(|r| r.text().parse::<u64>().ok()) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let body = json!({ "expected": v.to_string(), "new": (v + 1).to_string() }).to_string();
        let judged = h.outcomes.judge(t.send(&mut rng, Method::POST, PATH, &body).await, PATH, false);
        let swapped = match judged {
            Judged::NotApplied => continue,
            Judged::Answered(r) => swapped(&h, PATH, &r),
            Judged::Unknown => None,
        };
        h.ops.fetch_add(1, Ordering::Relaxed);
        let mut c = h.counter.lock().unwrap_or_else(|e| e.into_inner());
        match swapped {
            Some(true) => c.acked += 1,
            Some(false) => {}
            None => {
                c.unknown += 1;
                h.unknown.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Add unique elements to the set until `stop`.
pub async fn set_client(t: Target, h: Arc<Histories>, client: usize, mut rng: Rng, stop: Instant) {
    let mut n = 0;
    while Instant::now() < stop {
        n += 1;
        let key = format!("set-{client}-{n}");
        let node = rng.pick(&t.ingress).clone();
        let start = h.micros();
        let path = format!("/kv/{key}?consistency=quorum");
        let sent = t.send_to(&node, Method::PUT, &path, "1").await;
        let status = match &sent {
            Ended::Answer(r) => r.status.as_u16(),
            Ended::NotSent | Ended::Lost => 0,
        };
        let judged = h.outcomes.judge(sent, &path, false);
        h.ops.fetch_add(1, Ordering::Relaxed);
        let mut s = h.set.lock().unwrap_or_else(|e| e.into_inner());
        s.log.push((key.clone(), node, start, h.micros(), status));
        match judged {
            Judged::Answered(_) => s.acked.push(key),
            Judged::NotApplied => {}
            Judged::Unknown => {
                s.unknown += 1;
                h.unknown.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Start a job every second or two until `stop`; each has a known word count.
pub async fn barrier_client(t: Target, h: Arc<Histories>, mut rng: Rng, stop: Instant) {
    while Instant::now() < stop {
        let lines = rng.range(2, 6);
        let text: Vec<String> = (0..lines).map(|l| vec!["word"; l as usize + 1].join(" ")).collect();
        let words = (1..=lines).sum();
        let sent = t.send(&mut rng, Method::POST, "/jobs/", &text.join("\n")).await;
        h.ops.fetch_add(1, Ordering::Relaxed);
        match h.outcomes.judge(sent, "POST /jobs/", false) {
            Judged::Answered(r) => match r.json().ok().and_then(|v: Value| v["job"].as_str().map(String::from)) {
                Some(id) => h.jobs.lock().unwrap_or_else(|e| e.into_inner()).push(Job { id, words, lines }),
                None => h.outcomes.unexpected("POST /jobs/", &r),
            },
            Judged::NotApplied => {}
            Judged::Unknown => {
                h.unknown.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.range(500, 1500))).await;
    }
}

/// Plain requests, counted per second.
pub async fn availability_client(t: Target, h: Arc<Histories>, mut rng: Rng, stop: Instant) {
    while Instant::now() < stop {
        let second = h.t0.elapsed().as_secs();
        let ok = t.send(&mut rng, Method::GET, "/hello/", "").await.reply().is_some_and(|r| r.status == 200);
        {
            let mut a = h.availability.lock().unwrap_or_else(|e| e.into_inner());
            let e = a.entry(second).or_default();
            e.0 += u64::from(ok);
            e.1 += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
