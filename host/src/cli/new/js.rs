//! JavaScript projects: an ES module app with the nanogrid JS SDK (`nanogrid.js`), built
//! by componentize-js (pinned in the project's `package.json`) against the platform's WIT;
//! or, for the `http` template, a `fetch` event listener built as `wasi:http/proxy`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use super::{Files, Project, Template, need_tool};

const SDK: &str = include_str!("../../../../guest-sdk-js/nanogrid.js");

/// The componentize-js this SDK is built and tested with, and the shim it needs
/// (componentize-js 0.23.0 imports it without declaring it; from 0.26 it preopens no
/// directory, so componentize-js could not read the WIT).
const PACKAGE: &str = r#"{
  "name": "{{name}}",
  "private": true,
  "type": "module",
  "scripts": { "test": "node --test" },
  "devDependencies": {
    "@bytecodealliance/componentize-js": "0.23.0",
    "@bytecodealliance/preview2-shim": "0.25.0"
  }
}
"#;

fn sources(template: Template) -> anyhow::Result<[&'static str; 3]> {
    Ok(match template {
        Template::Nanoservice => [
            include_str!("templates/js/app-nanoservice.js"),
            include_str!("templates/js/logic-nanoservice.js"),
            include_str!("templates/js/test-nanoservice.mjs"),
        ],
        Template::Kv => [
            include_str!("templates/js/app-kv.js"),
            include_str!("templates/js/logic-kv.js"),
            include_str!("templates/js/test-kv.mjs"),
        ],
        Template::Pipeline => [
            include_str!("templates/js/app-pipeline.js"),
            include_str!("templates/js/logic-pipeline.js"),
            include_str!("templates/js/test-pipeline.mjs"),
        ],
        Template::Http => [
            include_str!("templates/js/app-http.js"),
            include_str!("templates/js/logic-http.js"),
            include_str!("templates/js/test-http.mjs"),
        ],
    })
}

/// componentize-js 0.23.0's engine exports `wasi:http/incoming-handler@0.2.10` only, so an
/// `http` project's WIT says 0.2.10 (the host links any 0.2.x).
const HTTP_WASI: &str = "0.2.10";

pub fn files(name: &str, template: Template) -> anyhow::Result<Files> {
    let [app, logic, test] = sources(template)?;
    let mut files: Files = vec![
        (PathBuf::from("app.js"), app.replace("{{name}}", name)),
        ("logic.js".into(), logic.into()),
        ("test.mjs".into(), test.into()),
        ("package.json".into(), PACKAGE.replace("{{name}}", name)),
        (".gitignore".into(), "node_modules/\ntarget/\n".into()),
    ];
    if template == Template::Http {
        // No SDK: StarlingMonkey serves the fetch event as the proxy world's handler.
        files.extend(super::http_wit(HTTP_WASI));
    } else {
        files.push(("nanogrid.js".into(), SDK.into()));
        files.push(("wit/service.wit".into(), super::SERVICE_WIT.into()));
    }
    Ok(files)
}

pub const SOURCE_AND_TEST: (&str, &str) = ("app.js", "npm test");

pub fn wasm_path(dir: &Path, p: &Project) -> PathBuf {
    dir.join(shown_wasm(&p.name))
}

pub fn shown_wasm(name: &str) -> String {
    format!("target/{name}.wasm")
}

/// componentize-js: the project's own (`npm install`), else the one `./dev test` caches,
/// else one on the PATH.
fn tool(dir: &Path) -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .map(|c| c.join("nanogrid/js/node_modules/.bin/componentize-js"));
    let local = dir.join("node_modules/.bin/componentize-js");
    [Some(local), cache].into_iter().flatten().find(|p| p.is_file()).or_else(|| {
        let found = Command::new("componentize-js").arg("--version").output().is_ok_and(|o| o.status.success());
        found.then(|| PathBuf::from("componentize-js"))
    })
}

pub fn build(dir: &Path, p: &Project) -> anyhow::Result<()> {
    need_tool("node", &["--version"], "install Node.js 20 or newer (e.g. apt-get install nodejs)")?;
    let Some(tool) = tool(dir) else {
        bail!(
            "componentize-js is needed to build this project and was not found; install it with: npm install (package.json pins @bytecodealliance/componentize-js 0.23.0)"
        );
    };
    let out = wasm_path(dir, p);
    std::fs::create_dir_all(out.parent().unwrap_or(dir)).context("creating target/")?;
    let status = Command::new(&tool)
        .args(["--wit", "wit", "-n", if p.template == Template::Http { "app" } else { "nanoservice" }, "-o"])
        .arg(&out)
        .arg("app.js")
        .current_dir(dir)
        .status()
        .with_context(|| format!("running {}", tool.display()))?;
    if !status.success() {
        bail!("componentize-js failed ({status}); its messages are above");
    }
    Ok(())
}
