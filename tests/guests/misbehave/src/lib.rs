//! Test fixture: misbehaves in the way the path asks.
//!
//! - `/trap`: panics (a wasm trap)
//! - `/sleep/{ms}`: sleeps, then answers (holds an instance slot)
//! - `/loop`: spins forever
//! - `/alloc/{mib}`: allocates and touches that much memory
//! - `/kv-trap`: writes a key, then traps
//! - `/recurse`: calls itself through `invoke` until the platform refuses
//! - `/stack/{depth}`: recurses natively until the stack runs out
//! - `/huge/{mib}`: answers with a body that large
//! - `/kv-key/{bytes}`, `/kv-value/{bytes}`: writes a key or value of that size
//! - `/fanout/{n}`: `call-all` with n calls to itself (`?sleep={ms}`: each call sleeps;
//!   `?path=P`: each call is `GET P`, with `+` for a space)
//! - `/call-path?path=P` (`&to=S`): `invoke` of itself (or of service S) with `GET P` (`+`
//!   for a space); answers 200 with the callee's status, or the platform's error as
//!   `error {code}: {message}`
//! - `/kv-probe`: tries keys that look like escapes from its namespace
//! - `/kv-get/{key}`: reads a key at `quorum` (404 when absent)
//! - `/keyed/{service}/{key}`: `GET /{key}` on the service, with `key` as routing key
//! - `/barrier/{n}` (`?sleep={ms}`, `?spread={ms}`, `?path=P`, `?also=S`): a durable barrier
//!   over n calls to itself (and one to service S); answers its id. With `spread`, call i
//!   sleeps i * ms.
//!   The continuation (any path, with the barrier header) stores `"{ok}/{n}:{body}"` under
//!   `barrier-{id}` and counts its runs under `resumes-{id}`
//! - `/barrier-peek/{id}`: reads a barrier's results (another service's must be not-found)
//! - `/fake-no-instance`: counts its runs under `fake-runs`, then answers 503 with the body
//!   the platform uses for "no instance here" (a guest must not make a node re-run it)
//! - `/flaky/{n}`: counts its runs under `flaky-runs`; the first n answer 503, later ones
//!   200 `"ok after {runs} runs"`
//! - `/whoami`: counts its runs in a static and in the key `whoami`, and answers
//!   `"{static count} {request id} {trace id}"` (the static shows instance reuse)
//! - anything else: 200 "ok"

use nanogrid_sdk::{Error, Request, Response, Service, barrier, context, invoke, kv};

struct Misbehave;

impl Service for Misbehave {
    // One arm per misbehaviour in a single route table: long by nature, each arm short (so the function has more than 80 lines).
    fn handle(req: Request) -> Result<Response, Error> {
        if let Some(id) = barrier::id(&req) {
            let answers = barrier::results(id)?;
            let ok = answers.iter().filter(|a| a.as_ref().is_ok_and(|r| r.is_success())).count();
            let runs = kv::increment(&format!("resumes-{id}"), 1)?;
            let body = String::from_utf8_lossy(&req.body);
            kv::set(&format!("barrier-{id}"), format!("{ok}/{}:{body}", answers.len()).as_bytes())?;
            return Ok(Response::text(200, format!("resumed {runs} time(s)")));
        }
        let route = req.route().to_string();
        let mut parts = route.trim_matches('/').split('/');
        match (parts.next(), parts.next()) {
            (Some("trap"), _) => panic!("misbehave was asked to trap"),
            (Some("whoami"), _) => {
                use std::sync::atomic::{AtomicU64, Ordering};
                static RUNS: AtomicU64 = AtomicU64::new(0);
                let runs = RUNS.fetch_add(1, Ordering::Relaxed) + 1;
                kv::increment("whoami", 1)?;
                Ok(Response::text(200, format!("{runs} {} {}", context::request_id(), context::trace_id())))
            }
            (Some("sleep"), Some(ms)) => {
                let ms: u64 = ms.parse().map_err(|_| Error::invalid("sleep/{ms}"))?;
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Ok(Response::text(200, format!("slept {ms}ms")))
            }
            (Some("loop"), _) => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            (Some("alloc"), Some(mib)) => {
                let mib: usize = mib.parse().map_err(|_| Error::invalid("alloc/{mib}"))?;
                let mut v: Vec<u8> = Vec::new();
                v.try_reserve_exact(mib << 20).map_err(|e| Error::internal(format!("allocation failed: {e}")))?;
                v.resize(mib << 20, 1);
                Ok(Response::text(200, format!("allocated {} bytes", v.len())))
            }
            (Some("kv-trap"), _) => {
                kv::set("before-trap", b"written")?;
                panic!("trapped after a kv write");
            }
            (Some("stack"), Some(depth)) => {
                let depth: u64 = depth.parse().map_err(|_| Error::invalid("stack/{depth}"))?;
                Ok(Response::text(200, format!("depth {}", deep(depth))))
            }
            (Some("huge"), Some(mib)) => {
                let mib: usize = mib.parse().map_err(|_| Error::invalid("huge/{mib}"))?;
                Ok(Response::new(200, vec![b'x'; mib << 20]))
            }
            (Some("kv-key"), Some(n)) => {
                let n: usize = n.parse().map_err(|_| Error::invalid("kv-key/{bytes}"))?;
                kv::set(&"k".repeat(n), b"v")?;
                Ok(Response::text(200, "stored"))
            }
            (Some("kv-value"), Some(n)) => {
                let n: usize = n.parse().map_err(|_| Error::invalid("kv-value/{bytes}"))?;
                kv::set("big", &vec![7u8; n])?;
                Ok(Response::text(200, "stored"))
            }
            (Some("fanout"), Some(n)) => {
                let calls = calls_to_self(&req, n)?;
                let mut ok = 0;
                for r in invoke::call_all(&calls) {
                    r?;
                    ok += 1;
                }
                Ok(Response::text(200, format!("{ok} calls answered")))
            }
            (Some("barrier"), Some(n)) => {
                let calls = calls_to_self(&req, n)?;
                let id = barrier::fan_out(&calls, &Request::new("POST", "/resumed").with_body("state"))?;
                Ok(Response::text(202, id))
            }
            (Some("call-path"), _) => {
                let path = req.query_param("path").unwrap_or("/").replace('+', " ");
                let to = req.query_param("to").map(str::to_string).unwrap_or_else(context::service_name);
                match invoke::call(&to, &Request::get(&path)) {
                    Ok(r) => Ok(Response::text(200, format!("status {}", r.status))),
                    Err(e) => Ok(Response::text(200, format!("error {}: {}", e.code(), e.message()))),
                }
            }
            (Some("barrier-peek"), Some(id)) => {
                let answers = barrier::results(id)?;
                Ok(Response::text(200, format!("{} answers", answers.len())))
            }
            (Some("flaky"), Some(n)) => {
                let n: i64 = n.parse().map_err(|_| Error::invalid("flaky/{n}"))?;
                let runs = kv::increment("flaky-runs", 1)?;
                let status = if runs <= n { 503 } else { 200 };
                Ok(Response::text(status, format!("ok after {runs} runs")))
            }
            (Some("fake-no-instance"), _) => {
                kv::increment("fake-runs", 1)?;
                let body = r#"{"error":{"code":"no-instance","message":"not me","request_id":"x"}}"#;
                Ok(Response::new(503, body.as_bytes().to_vec()))
            }
            (Some("kv-probe"), _) => kv_probe(),
            (Some("kv-get"), Some(key)) => match kv::get(key)? {
                Some(v) => Ok(Response::new(200, v)),
                None => Err(Error::not_found(format!("no key {key}"))),
            },
            (Some("keyed"), Some(service)) => {
                let key = parts.next().ok_or_else(|| Error::invalid("keyed/{service}/{key}"))?;
                invoke::call(service, &Request::get(&format!("/{key}")).with_routing_key(key))
            }
            (Some("recurse"), _) => {
                // The callee's answer (or the platform's refusal) is passed back up as is.
                invoke::get(&context::service_name(), "/recurse")
            }
            _ => Ok(Response::text(200, "ok")),
        }
    }
}

nanogrid_sdk::export!(Misbehave);

#[inline(never)]
fn deep(n: u64) -> u64 {
    // A frame with some weight, so the stack runs out at a modest depth.
    let pad = std::hint::black_box([n; 32]);
    if n == 0 { 0 } else { deep(n - 1) + pad[(n % 32) as usize] % 2 }
}

/// Keys a hostile guest might use to reach another service's data. Each is read before
/// being written (it must be absent: this namespace is fresh), then written and listed.
fn kv_probe() -> Result<Response, Error> {
    let keys =
        ["../counter/visits", "counter\0visits", "\0counter\0visits", "visits", "/", "..", "ключ", &"x".repeat(1024)];
    let mut seen_before = Vec::new();
    for k in keys {
        if let Some(v) = kv::get(k)? {
            seen_before.push((k.to_string(), String::from_utf8_lossy(&v).into_owned()));
        }
        kv::set(k, b"probe")?;
    }
    let listed = kv::list_keys("", None, 100)?;
    Response::json(200, &serde_json::json!({ "seen_before": seen_before, "listed": listed.len() }))
}

/// `n` (a path segment) calls to this service: `GET /`, or `GET /sleep/{ms}` with `?sleep=`.
fn calls_to_self(req: &Request, n: &str) -> Result<Vec<(String, Request)>, Error> {
    let n: usize = n.parse().map_err(|_| Error::invalid(format!("expected a number of calls, got {n:?}")))?;
    let me = context::service_name();
    let target = match (req.query_param("sleep"), req.query_param("path")) {
        (Some(ms), _) => format!("/sleep/{ms}"),
        (None, Some(path)) => path.replace('+', " "),
        (None, None) => "/".to_string(),
    };
    // `?spread={ms}`: call i sleeps i * ms, so the answers arrive that far apart.
    let spread: Option<u64> = req.query_param("spread").and_then(|ms| ms.parse().ok());
    let call = |i: usize| match spread {
        Some(ms) => Request::get(&format!("/sleep/{}", i as u64 * ms)),
        None => Request::get(&target),
    };
    let mut calls: Vec<(String, Request)> = (0..n).map(|i| (me.clone(), call(i))).collect();
    if let Some(other) = req.query_param("also") {
        calls.push((other.to_string(), Request::get(&target)));
    }
    Ok(calls)
}
