//! Python projects: an `app.py` binding `Handler = export(App)` with the nanogrid Python
//! SDK (the `nanogrid` package), built by componentize-py against the platform's WIT; or,
//! for the `http` template, an `IncomingHandler` against WASI's `wasi:http/proxy`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use super::{Files, Project, Template};

/// The componentize-py this SDK is built and tested with.
const TOOL_VERSION: &str = "0.25.1";

const SDK: [(&str, &str); 9] = [
    ("nanogrid/__init__.py", include_str!("../../../../guest-sdk-py/nanogrid/__init__.py")),
    ("nanogrid/barrier.py", include_str!("../../../../guest-sdk-py/nanogrid/barrier.py")),
    ("nanogrid/config.py", include_str!("../../../../guest-sdk-py/nanogrid/config.py")),
    ("nanogrid/context.py", include_str!("../../../../guest-sdk-py/nanogrid/context.py")),
    ("nanogrid/errors.py", include_str!("../../../../guest-sdk-py/nanogrid/errors.py")),
    ("nanogrid/invoke.py", include_str!("../../../../guest-sdk-py/nanogrid/invoke.py")),
    ("nanogrid/kv.py", include_str!("../../../../guest-sdk-py/nanogrid/kv.py")),
    ("nanogrid/log.py", include_str!("../../../../guest-sdk-py/nanogrid/log.py")),
    ("nanogrid/message.py", include_str!("../../../../guest-sdk-py/nanogrid/message.py")),
];

fn sources(template: Template) -> anyhow::Result<[&'static str; 3]> {
    Ok(match template {
        Template::Nanoservice => [
            include_str!("templates/python/app-nanoservice.py"),
            include_str!("templates/python/logic-nanoservice.py"),
            include_str!("templates/python/test-nanoservice.py"),
        ],
        Template::Kv => [
            include_str!("templates/python/app-kv.py"),
            include_str!("templates/python/logic-kv.py"),
            include_str!("templates/python/test-kv.py"),
        ],
        Template::Pipeline => [
            include_str!("templates/python/app-pipeline.py"),
            include_str!("templates/python/logic-pipeline.py"),
            include_str!("templates/python/test-pipeline.py"),
        ],
        Template::Http => [
            include_str!("templates/python/app-http.py"),
            include_str!("templates/python/logic-http.py"),
            include_str!("templates/python/test-http.py"),
        ],
    })
}

/// The WASI version an `http` project's WIT carries (the host links any 0.2.x).
const HTTP_WASI: &str = "0.2.12";

pub fn files(name: &str, template: Template) -> anyhow::Result<Files> {
    let [app, logic, test] = sources(template)?;
    let mut files: Files = vec![
        (PathBuf::from("app.py"), app.replace("{{name}}", name)),
        ("logic.py".into(), logic.into()),
        ("test_logic.py".into(), test.into()),
        (".gitignore".into(), "__pycache__/\ntarget/\n".into()),
    ];
    if template == Template::Http {
        // No SDK: the bindings come from WASI's WIT.
        files.extend(super::http_wit(HTTP_WASI));
    } else {
        files.push(("wit/service.wit".into(), super::SERVICE_WIT.into()));
        files.extend(SDK.iter().map(|(p, text)| (PathBuf::from(p), text.to_string())));
    }
    Ok(files)
}

pub const SOURCE_AND_TEST: (&str, &str) = ("app.py", "python3 -m unittest test_logic");

pub fn wasm_path(dir: &Path, p: &Project) -> PathBuf {
    dir.join(shown_wasm(&p.name))
}

pub fn shown_wasm(name: &str) -> String {
    format!("target/{name}.wasm")
}

/// componentize-py: one on the PATH, else the one `./dev test` caches.
fn tool() -> Option<PathBuf> {
    let runs = |p: &Path| Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success());
    let on_path = PathBuf::from("componentize-py");
    if runs(&on_path) {
        return Some(on_path);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
    Some(cache.join("nanogrid/py-guests/bin/componentize-py")).filter(|p| runs(p))
}

/// The world componentize-py builds against (an `http` project's `wit/world.wit` is the proxy).
fn world(template: Template) -> &'static str {
    if template == Template::Http { "app" } else { "nanogrid:service/nanoservice" }
}

pub fn build(dir: &Path, p: &Project) -> anyhow::Result<()> {
    let Some(tool) = tool() else {
        bail!(
            "componentize-py is needed to build this project and was not found; install it with: pip install componentize-py=={TOOL_VERSION}"
        );
    };
    let out = wasm_path(dir, p);
    std::fs::create_dir_all(out.parent().unwrap_or(dir)).context("creating target/")?;
    let status = Command::new(&tool)
        .args(["-q", "-d", "wit", "-w", world(p.template), "componentize", "-p", ".", "app", "-o"])
        .arg(&out)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "0")
        .status()
        .with_context(|| format!("running {}", tool.display()))?;
    if !status.success() {
        let hint = match p.template {
            Template::Http => "app.py must define class IncomingHandler(exports.IncomingHandler)",
            _ => "app.py must bind Handler = export(App)",
        };
        bail!("componentize-py failed ({status}); its messages are above ({hint})");
    }
    Ok(())
}
