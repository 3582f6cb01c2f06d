//! Typed composition: services that import interfaces other services export, fused into
//! one component or linked through the host, deployed in any order, re-fused atomically
//! when a provider changes, and every refusal.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use nanogrid::api::{ChainEdge, ChainMode, TraceView};
use nanogrid::trace::SpanRecord;

use crate::support::{TestNode, assert_error, parse};

const TEXTS: [&str; 6] = [
    "The cat and the hat",
    "",
    "Hat? HAT! hat... the END, the end.",
    "  leading and trailing spaces   ",
    "Ünïcödé wörds: straße STRASSE — 東京 東京 ok",
    "a-b c_d e'f -- ?? 42 42 42",
];

async fn stats(node: &TestNode, service: &str, text: &str) -> Value {
    let r = node.post(&format!("/{service}/"), text).await;
    assert_eq!(r.status, 200, "{service} on {text:?}: {}", r.text());
    r.json().unwrap()
}

async fn deploy_pipeline_out_of_order(node: &TestNode) {
    // The entry point first: accepted, not ready, and it says what it waits for.
    let v = node.deploy("text-stats", "text-stats", json!({ "instances": 4 })).await;
    let v = v.detail().expect("served here");
    assert!(!v.status.ready, "{v:?}");
    assert_eq!(v.unresolved.as_ref().map(|u| u.interface.as_str()), Some("acme:text/tokenize@0.1.0"), "{v:?}");
    let r = node.post("/text-stats/", "x").await;
    let e = assert_error(&r, 503, "unresolved-import");
    assert!(e.message.as_str().contains("acme:text/tokenize@0.1.0"), "{e}");
    assert!(r.header("retry-after").is_some());

    // The middle stage: the chain still lacks its last provider, said from the root.
    let v = node.deploy("text-tokenize", "text-tokenize", json!({})).await;
    let v = v.detail().expect("served here");
    assert_eq!(v.unresolved.as_ref().map(|u| u.interface.as_str()), Some("acme:text/normalize@0.1.0"), "{v:?}");
    let s = node.service("text-stats").await;
    let u = s.unresolved.as_ref().unwrap_or_else(|| panic!("{s:?}"));
    assert_eq!(u.interface, "acme:text/normalize@0.1.0", "{s:?}");
    assert!(u.reason.contains("text-tokenize"), "{s:?}");
    assert_error(&node.post("/text-stats/", "x").await, 503, "unresolved-import");

    // The last provider arrives: the whole chain becomes ready without touching text-stats.
    node.deploy("text-normalize", "text-normalize", json!({})).await;
    let s = node.service("text-stats").await;
    assert!(s.status.ready, "{s:?}");
    assert_eq!(s.unresolved, None);
}

// One scenario read top to bottom: its steps share the nodes, ids and figures of the ones before, so it stays one function though longer than 80 lines.
#[tokio::test]
async fn pipeline_in_any_order_fused_and_linked_agree() {
    // Its own compile cache: the recompile check below reads this node's log, and a
    // shared cache filled by another test would leave nothing to compile here. Every
    // sampled request to a fused chain runs its timed composition.
    let mut node = TestNode::start_with_args(false, &["--trace-fused-parts", "1"]).await;
    deploy_pipeline_out_of_order(&node).await;
    node.deploy("stats-linked", "text-stats", json!({ "fuse": false, "instances": 2 })).await;

    let v = stats(&node, "text-stats", TEXTS[0]).await;
    assert_eq!(
        v,
        json!({
            "words": 5, "unique": 4, "chars": 19, "longest": "the", "longest_at": 0,
            "top": [{"word": "the", "count": 2}, {"word": "and", "count": 1},
                    {"word": "cat", "count": 1}, {"word": "hat", "count": 1}],
        })
    );
    // Normalizing happened two services away: punctuation gone, case folded.
    let v = stats(&node, "text-stats", TEXTS[2]).await;
    assert_eq!(v["top"][0], json!({"word": "hat", "count": 3}), "{v}");
    for text in TEXTS {
        let fused = stats(&node, "text-stats", text).await;
        let linked = stats(&node, "stats-linked", text).await;
        assert_eq!(fused, linked, "fused and linked differ on {text:?}");
    }

    // The graphs: one fused component of three parts; the linked one says why.
    let g = node.service("text-stats").await.graph.expect("a chain");
    assert_eq!(g.mode, ChainMode::Fused, "{g:?}");
    let names: Vec<&str> = g.services.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(names, ["text-normalize", "text-tokenize", "text-stats"]);
    let edge =
        |from: &str, import: &str, to: &str| ChainEdge { from: from.into(), import: import.into(), to: to.into() };
    assert_eq!(
        g.edges,
        [
            edge("text-tokenize", "acme:text/normalize@0.1.0", "text-normalize"),
            edge("text-stats", "acme:text/tokenize@0.1.0", "text-tokenize"),
        ]
    );
    assert!(g.digest.starts_with("sha256:"));
    let g = node.service("stats-linked").await.graph.expect("a chain");
    assert_eq!(g.mode, ChainMode::Linked, "{g:?}");
    assert!(g.reason.as_deref().unwrap().contains("fuse"), "{g:?}");

    // Traces: each typed call to a provider is a span under the run, linked or fused (a
    // fused chain's calls pass through timing shims inside its component); a fused run
    // also names its parts.
    for (svc, fused) in [("text-stats", true), ("stats-linked", false)] {
        let r = node.post(&format!("/{svc}/"), "a b").await;
        let id = r.header("x-trace-id").expect("every answer names its trace").to_string();
        let t: TraceView = parse(&node.admin().get(&format!("/v1/traces/{id}")).await.unwrap());
        let spans = &t.spans;
        let run = spans.iter().find(|s| *s.name == format!("run {svc}")).unwrap_or_else(|| panic!("{t:#?}"));
        let parts: Vec<&SpanRecord> = spans.iter().filter(|s| s.name.starts_with("part ")).collect();
        let fused_attr = run.attrs.get("chain.fused").and_then(|a| a.as_str());
        let names = fused.then_some("text-normalize,text-tokenize,text-stats");
        assert_eq!(fused_attr, names, "{run:?}");
        // A fused run went through its timed composition, and says so.
        let timed = run.attrs.get("chain.timed").map(|a| matches!(a, nanogrid::trace::Attr::Bool(true)));
        assert_eq!(timed, fused.then_some(true), "{run:?}");
        // text-tokenize once, and it normalizes each of the two words.
        let mut names: Vec<&str> = parts.iter().map(|p| &*p.name).collect();
        names.sort();
        assert_eq!(
            names,
            ["part text-normalize.normalize-word", "part text-normalize.normalize-word", "part text-tokenize.tokenize"],
            "{svc}"
        );
        for provider in ["text-normalize", "text-tokenize"] {
            let part =
                parts.iter().find(|p| p.service.as_deref() == Some(provider)).unwrap_or_else(|| panic!("{t:#?}"));
            assert!(part.name.starts_with(&format!("part {provider}.")), "{part:?}");
            assert_eq!(part.parent_id, Some(run.span_id), "{part:?}");
            // Inside the run: it starts no earlier and ends no later.
            assert!(part.start_unix_us >= run.start_unix_us, "{part:?} {run:?}");
            let end = part.start_unix_us + part.duration_us;
            assert!(end <= run.start_unix_us + run.duration_us + 1, "{part:?} {run:?}");
        }
        // tokenize calls normalize: its span encloses normalize's.
        let span = |svc: &str| parts.iter().find(|p| p.service.as_deref() == Some(svc)).unwrap();
        let (outer, inner) = (span("text-tokenize"), span("text-normalize"));
        assert!(outer.start_unix_us <= inner.start_unix_us, "{outer:?} {inner:?}");
        assert!(
            inner.start_unix_us + inner.duration_us <= outer.start_unix_us + outer.duration_us + 1,
            "{outer:?} {inner:?}"
        );
    }

    // A provider has no handler of its own.
    let e = assert_error(&node.post("/text-normalize/", "x").await, 404, "no-handler");
    assert!(e.message.as_str().contains("acme:text/normalize@0.1.0"), "{e}");

    // The five-stage chain, bound explicitly (every stage exports the same interface).
    deploy_chain(&node, "", true).await;
    deploy_chain(&node, "l", false).await;
    let fused = node.post("/chain-1/", "in").await.json().unwrap();
    let expected =
        json!({"input": "in", "stage-1": "ok", "stage-2": "ok", "stage-3": "ok", "stage-4": "ok", "stage-5": "ok"});
    assert_eq!(fused, expected);
    assert_eq!(node.post("/lchain-1/", "in").await.json().unwrap(), expected);
    assert_eq!(node.service("chain-1").await.graph.expect("a chain").services.len(), 5);

    // After a restart every chain is rebuilt from the stored specs, and the fused
    // component comes from the compile cache (keyed by its parts), not the compiler.
    let chain_digest = node.service("text-stats").await.graph.expect("a chain").digest;
    // Tiered compilation: the fused component's optimized code is compiled after the deploy.
    node.wait_optimized("text-stats").await;
    // The chain's own composition, not its timed one ("<digest>+timed", compiled too).
    let plain = |l: &str| l.contains(&chain_digest) && !l.contains(&format!("{chain_digest}+timed"));
    let compiles = |log: String| log.lines().filter(|l| l.contains("compiled component") && plain(l)).count();
    let before = compiles(node.log());
    assert_eq!(before, 1, "the fused chain was compiled once before the restart:\n{}", node.log());
    let log_before = node.log().len();
    node.stop();
    node.restart();
    for text in TEXTS {
        assert_eq!(stats(&node, "text-stats", text).await, stats(&node, "stats-linked", text).await);
    }
    assert_eq!(node.post("/chain-1/", "in").await.json().unwrap(), expected);
    let g = node.service("text-stats").await.graph.expect("a chain");
    assert_eq!((g.mode, g.digest.as_str()), (ChainMode::Fused, chain_digest.as_str()));
    // Neither tier: a cache miss would compile baseline code ("compiled baseline code")
    // before the chain serves, and Cranelift's only later, in the background.
    let after = node.log()[log_before..].to_string();
    let recompiled: Vec<&str> = after.lines().filter(|l| l.contains("compiled") && plain(l)).collect();
    assert!(recompiled.is_empty(), "the restart recompiled the fused chain:\n{}", recompiled.join("\n"));
}

/// Deploy chain-5 .. chain-1 as `{prefix}chain-N`, each bound to the next.
async fn deploy_chain(node: &TestNode, prefix: &str, fuse: bool) {
    for i in (1..=5).rev() {
        let mut spec = json!({ "fuse": fuse, "instances": 2 });
        if i < 5 {
            spec["bindings"] = json!({ "bench:chain/stage": format!("{prefix}chain-{}", i + 1) });
        }
        node.deploy(&format!("{prefix}chain-{i}"), &format!("chain-{i}"), spec).await;
    }
}

#[tokio::test]
async fn refusals_name_the_problem_and_change_nothing() {
    let node = TestNode::start().await;
    node.deploy("text-normalize", "text-normalize", json!({})).await;
    node.deploy("text-tokenize", "text-tokenize", json!({})).await;
    node.deploy("tokenize-alt", "tokenize-alt", json!({})).await;
    node.deploy("tokenize-v2", "tokenize-v2", json!({})).await;
    node.deploy("hello", "hello", json!({})).await;

    // Two providers, no binding.
    let r = node.try_deploy("text-stats", "text-stats", json!({})).await;
    let e = assert_error(&r, 422, "ambiguous-binding");
    let m = e.message.as_str();
    assert!(m.contains("text-tokenize") && m.contains("tokenize-alt") && m.contains("bindings"), "{m}");
    // Auto-binding matches the interface regardless of version; a wrong version is then a
    // mismatch, below.
    assert!(m.contains("tokenize-v2"), "{m}");

    // A binding to a service that does not export the interface.
    let r = node.try_deploy("text-stats", "text-stats", json!({ "bindings": { "acme:text/tokenize": "hello" } })).await;
    let m = assert_error(&r, 422, "bad-binding").message;
    assert!(m.contains("\"hello\"") && m.contains("acme:text/tokenize"), "{m}");

    // A binding for an interface the component does not import.
    let r = node.try_deploy("text-stats", "text-stats", json!({ "bindings": { "acme:text/nothing": "hello" } })).await;
    assert_error(&r, 422, "bad-binding");
    let r = node.try_deploy("text-stats", "text-stats", json!({ "bindings": { "not an interface": "hello" } })).await;
    assert_error(&r, 400, "bad-request");

    // Version and type mismatch: both signatures are shown.
    let r = node
        .try_deploy("text-stats", "text-stats", json!({ "bindings": { "acme:text/tokenize": "tokenize-v2" } }))
        .await;
    let m = assert_error(&r, 422, "interface-mismatch").message;
    assert!(m.contains("acme:text/tokenize@0.1.0") && m.contains("acme:text/tokenize@0.2.0"), "{m}");
    assert!(m.contains("tokenize: func(text: string) -> list<record { word: string, offset: u32 }>"), "{m}");
    assert!(m.contains("tokenize: func(text: string) -> list<string>"), "{m}");

    // None of that deployed anything.
    assert_error(&node.admin().get("/v1/services/text-stats").await.unwrap(), 404, "not-found");

    let v =
        node.deploy("text-stats", "text-stats", json!({ "bindings": { "acme:text/tokenize": "text-tokenize" } })).await;
    assert!(v.detail().expect("served here").status.ready, "{v:?}");
    let good = stats(&node, "text-stats", TEXTS[0]).await;

    // A provider redeploy that would break its consumer is refused; the chain keeps serving.
    let r = node.try_deploy("text-tokenize", "tokenize-v2", json!({})).await;
    assert_error(&r, 422, "interface-mismatch");
    // Taking a provider away from a consumer is refused, by delete or by redeploy.
    let r = node.admin().call_json(http::Method::DELETE, "/v1/services/text-normalize", &json!({})).await.unwrap();
    let m = assert_error(&r, 409, "in-use").message;
    assert!(m.contains("text-stats"), "{m}");
    let r = node.try_deploy("text-normalize", "hello", json!({})).await;
    assert_error(&r, 409, "in-use");
    assert_eq!(stats(&node, "text-stats", TEXTS[0]).await, good);

    // Cycles: a stage bound to itself, and two stages bound to each other.
    let r = node.try_deploy("chain-2", "chain-2", json!({ "bindings": { "bench:chain/stage": "chain-2" } })).await;
    let m = assert_error(&r, 422, "import-cycle").message;
    assert!(m.contains("chain-2 -> chain-2"), "{m}");
    let v = node.deploy("chain-2", "chain-2", json!({ "bindings": { "bench:chain/stage": "chain-3" } })).await;
    assert!(!v.detail().expect("served here").status.ready, "bound to a service not deployed yet: {v:?}");
    let r = node.try_deploy("chain-3", "chain-3", json!({ "bindings": { "bench:chain/stage": "chain-2" } })).await;
    let m = assert_error(&r, 422, "import-cycle").message;
    assert!(m.contains("chain-2 -> chain-3 -> chain-2") || m.contains("chain-3 -> chain-2 -> chain-3"), "{m}");
}

#[tokio::test]
async fn redeploying_a_provider_under_load_switches_whole_chains() {
    let node = Arc::new(TestNode::start().await);
    node.deploy("text-normalize", "text-normalize", json!({})).await;
    node.deploy("text-tokenize", "text-tokenize", json!({})).await;
    let bind = json!({ "acme:text/tokenize": "text-tokenize" });
    node.deploy("text-stats", "text-stats", json!({ "instances": 4, "bindings": bind })).await;
    node.deploy("stats-linked", "text-stats", json!({ "instances": 4, "bindings": bind, "fuse": false })).await;
    let text = "Hat? hat the cat";
    let old = stats(&node, "text-stats", text).await;
    assert_eq!(old["top"][0], json!({"word": "hat", "count": 2}), "{old}");

    let failures = Arc::new(AtomicUsize::new(0));
    let seen_old = Arc::new(AtomicUsize::new(0));
    let seen_new = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let (node, failures, seen_old, seen_new, stop, old) =
            (node.clone(), failures.clone(), seen_old.clone(), seen_new.clone(), stop.clone(), old.clone());
        let service = if i % 2 == 0 { "text-stats" } else { "stats-linked" };
        tasks.push(tokio::spawn(async move {
            // Bounded: at most 10000 requests per task (each redeploy compiles the chain's
            // two compositions while these run).
            for _ in 0..10_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let r = node.post(&format!("/{service}/"), text).await;
                let v = r.json().unwrap_or(Value::Null);
                if r.status != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                    eprintln!("{service}: {} {}", r.status, r.text());
                } else if v == old {
                    seen_old.fetch_add(1, Ordering::Relaxed);
                } else if v["top"][0] == json!({"word": "CAT", "count": 1}) && v["words"] == 4 {
                    // tokenize-alt: whitespace split, upper case, punctuation kept.
                    seen_new.fetch_add(1, Ordering::Relaxed);
                } else {
                    failures.fetch_add(1, Ordering::Relaxed);
                    eprintln!("{service}: a response from neither chain: {v}");
                }
            }
        }));
    }
    // Each redeploy waits until the chain it put in place has answered (so every switch
    // happens under load and is seen), instead of a fixed pause.
    for round in 0..6 {
        let seen = if round % 2 == 0 { &seen_old } else { &seen_new };
        let from = seen.load(Ordering::Relaxed);
        crate::support::eventually("the current chain answers", std::time::Duration::from_secs(10), || async {
            (seen.load(Ordering::Relaxed) > from).then_some(())
        })
        .await;
        let guest = if round % 2 == 0 { "tokenize-alt" } else { "text-tokenize" };
        node.deploy("text-tokenize", guest, json!({})).await;
    }
    let from = seen_old.load(Ordering::Relaxed);
    crate::support::eventually("the original chain answers again", std::time::Duration::from_secs(10), || async {
        (seen_old.load(Ordering::Relaxed) > from).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let (o, n) = (seen_old.load(Ordering::Relaxed), seen_new.load(Ordering::Relaxed));
    assert_eq!(failures.load(Ordering::Relaxed), 0, "requests failed during the switches (old {o}, new {n})");
    assert!(o > 0 && n > 0, "both chains should have answered: old {o}, new {n}");
    // The last redeploy put the original back.
    assert_eq!(stats(&node, "text-stats", text).await, old);
    assert_eq!(stats(&node, "stats-linked", text).await, old);
}
