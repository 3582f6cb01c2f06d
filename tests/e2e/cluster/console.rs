//! The web console in a real browser (headless Chromium over WebDriver) against a real
//! three-node cluster: sign in, see the nodes, deploy through the form, scale with the
//! confirmation dialog, watch the call graph draw an edge once traffic flows, delete, and
//! look at it with a read-only token (signed in by keyboard) and on a phone-sized screen. Screenshots are kept under
//! `$CARGO_TARGET_TMPDIR/console/`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

use super::driver::{Cluster, eventually};
use super::formed;
use crate::support::{TOKEN, wasm_dir};
use crate::webdriver::Browser;

const WAIT: Duration = Duration::from_secs(20);

fn out_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn sign_in(b: &Browser, token: &str) {
    let field = b.find("#token").await;
    b.clear(&field).await;
    b.type_into(&field, token).await;
    b.click(&b.find("#login-submit").await).await;
}

/// Rows of the table `css` (its `tbody tr` with the attribute `attr`), by that attribute.
async fn rows(b: &Browser, css: &str, attr: &str) -> Vec<String> {
    let script = "return [...document.querySelectorAll(arguments[0])].map(r => r.getAttribute(arguments[1]));";
    let v = b.eval(script, json!([format!("{css} tbody tr[{attr}]"), attr])).await;
    v.as_array().unwrap().iter().filter_map(|s| s.as_str().map(str::to_string)).collect()
}

// One scenario read top to bottom: its steps share the nodes, ids and figures of the ones before, so it stays one function though longer than 80 lines.
#[tokio::test]
async fn the_console_signs_in_shows_the_cluster_deploys_scales_and_draws_the_call_graph() {
    let c = Cluster::start(3).await;
    let leader = formed(&c).await;
    let ui = format!("{}/ui/", c.nodes[0].node.admin_url);
    let b = Browser::start(&out_dir(), 1280, 900).await;

    // A wrong token is refused on the page; the right one opens the console.
    b.goto(&ui).await;
    sign_in(&b, "not-a-token").await;
    b.wait_text("#login-error", WAIT, |t| t.contains("not one of this cluster's")).await;
    sign_in(&b, TOKEN).await;
    b.wait_text("#who-text", WAIT, |t| t.contains("admin token") && t.contains("node n1")).await;
    let url = b.url().await;
    assert!(!url.contains(TOKEN), "the token never goes into the URL: {url}");
    let kept = b.eval("return sessionStorage.getItem('nanogrid.token')", json!([])).await;
    assert_eq!(kept, TOKEN, "the tab keeps the token");

    // Cluster: three live voters, the leader marked.
    let nodes = eventually("the console lists three nodes", WAIT, || async {
        let r = rows(&b, "#nodes-table", "data-node").await;
        (r.len() == 3).then_some(r)
    })
    .await;
    assert_eq!(nodes, ["n1", "n2", "n3"]);
    b.wait_text(&format!("#nodes-table tr[data-node='{leader}'] th"), WAIT, |t| t.contains("leader")).await;
    b.screenshot("cluster").await;

    // Deploy hello through the form, uploading the .wasm file.
    b.click(&b.find("nav a[data-view='services']").await).await;
    b.type_into(&b.find("#deploy-name").await, "hello").await;
    let wasm = wasm_dir().join("hello.wasm");
    b.type_into(&b.find("#deploy-file").await, wasm.to_str().unwrap()).await;
    let count = b.find("#deploy-instances").await;
    b.clear(&count).await;
    b.type_into(&count, "1").await;
    b.click(&b.find("#deploy-submit").await).await;
    b.wait_text("#deploy-result", WAIT, |t| t.contains("Deployed hello")).await;
    let svc = eventually("another node has what the form deployed", WAIT, || async {
        let r = c.nodes[1].node.admin().get("/v1/services/hello").await.ok()?;
        (r.status == 200).then(|| crate::support::parse::<nanogrid::api::ServiceDetail>(&r))
    })
    .await;
    assert_eq!(svc.spec.instances, 1, "{svc:?}");
    b.wait_text("#services-table tr[data-service='hello'] .instances", WAIT, |t| t == "1").await;

    // Scale it to 3 through the confirmation dialog; Cancel first changes nothing.
    let input = b.find("#services-table tr[data-service='hello'] .scale-input").await;
    b.clear(&input).await;
    b.type_into(&input, "3").await;
    b.click(&b.find("#services-table tr[data-service='hello'] button.scale").await).await;
    b.wait_text("#confirm-text", WAIT, |t| t.contains("Scale hello from 1 to 3")).await;
    b.click(&b.find("#confirm-cancel").await).await;
    assert_eq!(c.nodes[0].node.service("hello").await.spec.instances, 1, "cancel scales nothing");
    let input = b.find("#services-table tr[data-service='hello'] .scale-input").await;
    b.clear(&input).await;
    b.type_into(&input, "3").await;
    b.click(&b.find("#services-table tr[data-service='hello'] button.scale").await).await;
    b.click(&b.find("#confirm-ok").await).await;
    b.wait_text("#services-table tr[data-service='hello'] .per-node", WAIT, |t| {
        t.contains("n1: 1") && t.contains("n2: 1") && t.contains("n3: 1")
    })
    .await;
    b.screenshot("services").await;

    // The call graph: head calls tail (invoke); traffic draws the edge with its rate.
    c.nodes[0].node.deploy("tail", "chain-invoke", json!({ "instances": 1, "config": { "stage": "2" } })).await;
    let spec = json!({ "instances": 1, "config": { "stage": "1", "next": "tail" } });
    c.nodes[0].node.deploy("head", "chain-invoke", spec).await;
    b.click(&b.find("nav a[data-view='graph']").await).await;
    b.wait_text("#graph-svg", WAIT, |_| true).await;
    let c = Arc::new(c);
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (c, stop) = (c.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = c.get(0, "/head/").await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let rate = b
        .wait_text("#graph-svg g.edge[data-edge='head>tail'] text.rate", WAIT, |t| {
            t.trim_end_matches("/s").parse::<f64>().is_ok_and(|r| r > 0.0)
        })
        .await;
    println!("the console drew head → tail at {rate}");
    assert_eq!(rows(&b, "#edges-table", "data-edge").await.first().map(String::as_str), Some("head>tail"));
    b.screenshot("graph").await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();

    // Traces: the list shows head's requests; one opens as a waterfall across nodes.
    b.click(&b.find("nav a[data-view='traces']").await).await;
    b.type_into(&b.find("#traces-service").await, "tail").await;
    b.click(&b.find("#traces-filter button").await).await;
    b.wait_text("#traces-table tbody tr[data-trace] td:nth-child(5)", WAIT, |t| t.contains("tail")).await;
    b.click_when_there("#traces-table tbody tr[data-trace] button").await;
    let title = b.wait_text("#trace-title", WAIT, |t| t.starts_with("Trace ")).await;
    let spans = b.wait_text("#waterfall", WAIT, |t| t.contains("run head") && t.contains("run tail")).await;
    assert!(spans.contains("invoke tail"), "{spans}");
    let bars = b.eval("return document.querySelectorAll('#waterfall .bar').length", json!([])).await;
    assert!(bars.as_u64().unwrap() >= 4, "one bar per span: {title}");
    let width = b.eval("return getComputedStyle(document.querySelector('#waterfall .bar')).width", json!([])).await;
    assert_ne!(width, "0px", "bars are drawn (the policy allows CSSOM styles)");
    b.screenshot("trace").await;

    // The data grid: every node's partitions.
    b.click(&b.find("nav a[data-view='grid']").await).await;
    let grid = eventually("the grid view lists partitions", WAIT, || async {
        let n = b.eval("return document.querySelectorAll('#grid-parts tbody tr').length", json!([])).await;
        n.as_u64().filter(|&n| n > 1)
    })
    .await;
    let parts = c.grid(0).await.unwrap().partitions;
    assert_eq!(grid, parts as u64, "one row per partition");
    b.screenshot("grid").await;

    // Barriers: none running, and who barriers wait for (nobody yet).
    b.click(&b.find("nav a[data-view='barriers']").await).await;
    b.wait_text("#barriers-summary", WAIT, |t| t.starts_with("0 pending")).await;
    b.wait_text("#barrier-stats tbody", WAIT, |t| t.contains("nothing yet")).await;

    // Experiments: the mode and the rule a verdict follows.
    b.click(&b.find("nav a[data-view='experiments']").await).await;
    b.wait_text("#experiments-summary", WAIT, |t| t.starts_with("Mode auto") && t.contains("bootstrap")).await;

    // Delete through the dialog.
    b.click(&b.find("nav a[data-view='services']").await).await;
    b.click(&b.find("#services-table tr[data-service='head'] button.delete").await).await;
    b.wait_text("#confirm-text", WAIT, |t| t.starts_with("Delete head?")).await;
    b.click(&b.find("#confirm-ok").await).await;
    eventually("head is deleted", WAIT, || async {
        (c.nodes[2].node.admin().get("/v1/services/head").await.ok()?.status == 404).then_some(())
    })
    .await;
    eventually("the console drops head's row", WAIT, || async {
        (!rows(&b, "#services-table", "data-service").await.contains(&"head".to_string())).then_some(())
    })
    .await;

    // Every form control has a label a screen reader reads.
    let unlabelled = b
        .eval(
            "return [...document.querySelectorAll('input, button')].filter(e => !(e.labels && e.labels.length) \
             && !e.getAttribute('aria-label') && !e.textContent.trim()).map(e => e.outerHTML);",
            json!([]),
        )
        .await;
    assert_eq!(unlabelled, json!([]), "controls without a label");

    // A read token sees everything and no control that would be refused.
    b.click(&b.find("#logout").await).await;
    // Signing in by keyboard alone: type the token, press Enter.
    let read = std::fs::read_to_string(c.cluster_dir().join("read-token")).unwrap();
    b.type_into(&b.find("#token").await, &format!("{}\u{E007}", read.trim())).await;
    b.wait_text("#who-text", WAIT, |t| t.contains("read token")).await;
    b.click(&b.find("nav a[data-view='services']").await).await;
    b.wait_text("#services-table tr[data-service='hello'] th", WAIT, |t| t == "hello").await;
    assert!(!b.displayed(&b.find("#deploy-form").await).await, "no deploy form for a read token");
    assert!(!b.displayed(&b.find("#services-table tr[data-service='hello'] button.scale").await).await);

    // A phone-sized screen: nothing wider than the screen but the tables' own scrollers.
    b.set_window(390, 844).await;
    let (page, screen) = eventually("the page fits the narrow window", WAIT, || async {
        let v = b.eval("return [document.documentElement.scrollWidth, window.innerWidth]", json!([])).await;
        let (page, screen) = (v[0].as_u64()?, v[1].as_u64()?);
        (screen < 500 && page <= screen).then_some((page, screen))
    })
    .await;
    println!("phone width: page {page} px in a {screen} px window");
    b.screenshot("services-phone").await;
    b.close().await;
}
