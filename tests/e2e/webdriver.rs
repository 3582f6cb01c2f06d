//! A headless Chromium driven over the W3C WebDriver protocol (Debian's `chromium` and
//! `chromium-driver`; `./dev test` installs them). The dozen calls the console tests need
//! are plain JSON over HTTP, so they are written here on the suite's HTTP client rather than
//! pulling a WebDriver crate (fantoccini brings 21 more crates, http 0.2 and ICU data among
//! them, into the test build).
//!
//! Chromedriver runs in its own process group, killed with everything it started when the
//! [`Browser`] drops.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use nanogrid::client::Client;
use serde_json::{Value, json};

use crate::support::eventually;

/// The W3C name of an element reference in a response.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    http: Client,
    session: String,
    driver: Child,
    /// Where screenshots go.
    pub out: PathBuf,
    _profile: tempfile::TempDir,
}

#[derive(Clone, Debug)]
pub struct Element(String);

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names.iter().flat_map(|n| std::env::split_paths(&path).map(move |d| d.join(n))).find(|p| p.is_file())
}

impl Browser {
    /// Start chromedriver and a headless Chromium session with a `width`×`height` window;
    /// screenshots go to `out`.
    pub async fn start(out: &Path, width: u32, height: u32) -> Browser {
        let driver_bin = find_program(&["chromedriver"]).expect(
            "chromedriver is not installed: run ./dev setup (it installs Debian's chromium and chromium-driver)",
        );
        let chromium = find_program(&["chromium", "chromium-browser"])
            .expect("chromium is not installed: run ./dev setup (it installs Debian's chromium and chromium-driver)");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(out.join("chromedriver.log")).expect("chromedriver log");
        use std::os::unix::process::CommandExt;
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("starting chromedriver");
        let http = Client::new();
        let base = format!("http://127.0.0.1:{port}");
        eventually("chromedriver answers /status", Duration::from_secs(20), || {
            let (http, url) = (http.clone(), format!("{base}/status"));
            async move {
                let r = http.send(Method::GET, &url, &[], Bytes::new()).await.ok()?;
                r.json().ok()?["value"]["ready"].as_bool().filter(|r| *r)
            }
        })
        .await;
        let profile = tempfile::tempdir().expect("profile dir");
        // As root Chromium needs --no-sandbox; the background-networking flags keep it from
        // calling out of this machine's closed network at start.
        let args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
        }}});
        let mut b = Browser { http, session: String::new(), driver, out: out.to_path_buf(), _profile: profile };
        b.session = format!("{base}/session");
        let v = b.call(Method::POST, "", caps).await;
        let id = v["sessionId"].as_str().unwrap_or_else(|| panic!("no session id in {v}")).to_string();
        b.session = format!("{base}/session/{id}");
        b
    }

    /// One WebDriver command; panics with the driver's error (the test cannot go on).
    async fn call(&self, method: Method, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.session);
        let bytes = if method == Method::GET { Bytes::new() } else { Bytes::from(body.to_string()) };
        let headers = [("content-type", "application/json".to_string())];
        let r = self
            .http
            .send(method.clone(), &url, &headers, bytes)
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e:#}"));
        let v: Value = r.json().unwrap_or_else(|e| panic!("{method} {url}: {e:#}"));
        assert!(r.status.is_success(), "WebDriver {method} {path} failed ({}): {}", r.status, v["value"]);
        v["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(Method::POST, "/url", json!({ "url": url })).await;
    }

    pub async fn url(&self) -> String {
        self.call(Method::GET, "/url", Value::Null).await.as_str().unwrap_or_default().to_string()
    }

    /// The first element matching `css`, if any.
    pub async fn try_find(&self, css: &str) -> Option<Element> {
        let url = format!("{}/elements", self.session);
        let body = Bytes::from(json!({ "using": "css selector", "value": css }).to_string());
        let headers = [("content-type", "application/json".to_string())];
        let r = self.http.send(Method::POST, &url, &headers, body).await.ok()?;
        let v: Value = r.json().ok()?;
        v["value"].as_array()?.first().and_then(|e| e[ELEMENT].as_str()).map(|id| Element(id.to_string()))
    }

    /// The element matching `css`, waiting up to 15 s for it to appear.
    pub async fn find(&self, css: &str) -> Element {
        eventually(&format!("the page has {css}"), Duration::from_secs(15), || self.try_find(css)).await
    }

    pub async fn click(&self, e: &Element) {
        self.call(Method::POST, &format!("/element/{}/click", e.0), json!({})).await;
    }

    /// Click the first element matching `css` once it is there, again if the page
    /// replaced it between finding and clicking (a list that re-renders).
    pub async fn click_when_there(&self, css: &str) {
        eventually(&format!("{css} can be clicked"), Duration::from_secs(15), || async {
            let e = self.try_find(css).await?;
            let url = format!("{}/element/{}/click", self.session, e.0);
            let headers = [("content-type", "application/json".to_string())];
            let r = self.http.send(Method::POST, &url, &headers, Bytes::from("{}")).await.ok()?;
            r.status.is_success().then_some(())
        })
        .await
    }

    pub async fn clear(&self, e: &Element) {
        self.call(Method::POST, &format!("/element/{}/clear", e.0), json!({})).await;
    }

    /// Type `text` into the element (for a file input: a path to upload).
    pub async fn type_into(&self, e: &Element, text: &str) {
        self.call(Method::POST, &format!("/element/{}/value", e.0), json!({ "text": text })).await;
    }

    pub async fn displayed(&self, e: &Element) -> bool {
        self.call(Method::GET, &format!("/element/{}/displayed", e.0), Value::Null).await.as_bool().unwrap_or(false)
    }

    /// Run `script` (a function body; `arguments` holds `args`) and return its value.
    pub async fn eval(&self, script: &str, args: Value) -> Value {
        self.call(Method::POST, "/execute/sync", json!({ "script": script, "args": args })).await
    }

    /// The text of the first element matching `css` (read in the page, so a table the
    /// console re-renders meanwhile cannot leave a stale reference), if there is one.
    pub async fn text_of(&self, css: &str) -> Option<String> {
        let v =
            self.eval("const e = document.querySelector(arguments[0]); return e && e.textContent;", json!([css])).await;
        v.as_str().map(str::to_string)
    }

    /// Until the text of the first element matching `css` satisfies `ok`; returns it.
    pub async fn wait_text(&self, css: &str, within: Duration, ok: impl Fn(&str) -> bool) -> String {
        let what = format!("{css} shows the expected text");
        eventually(&what, within, || async { self.text_of(css).await.filter(|t| ok(t)) }).await
    }

    pub async fn set_window(&self, width: u32, height: u32) {
        self.call(Method::POST, "/window/rect", json!({ "width": width, "height": height })).await;
    }

    /// Save a PNG of the viewport as `out/name.png`; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        use base64_decode as b64;
        let data = self.call(Method::GET, "/screenshot", Value::Null).await;
        let png = b64(data.as_str().expect("screenshot is base64"));
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
        let path = self.out.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("writing the screenshot");
        path
    }

    pub async fn close(mut self) {
        let _ = self.http.send(Method::DELETE, &self.session, &[], Bytes::new()).await;
        self.kill();
    }

    fn kill(&mut self) {
        // The whole group: chromedriver and the Chromium processes it started.
        unsafe { libc::kill(-(self.driver.id() as i32), libc::SIGKILL) };
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.driver.try_wait().ok().flatten().is_none() {
            self.kill();
        }
    }
}

/// Standard base64 (screenshots), without a crate for one call.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
