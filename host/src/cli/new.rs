//! `nanogrid new` and `nanogrid build`: a ready project from templates embedded in the
//! binary, and its build for the project's language, installing nothing silently.
//!
//! A project is a folder with `nanogrid.toml` (`name`, `lang`, `template`) beside the
//! language's own files. For Rust, nanoservice templates carry a copy of the guest SDK
//! (`sdk/`) and the platform's WIT (`wit/service.wit`), so a project builds outside this
//! repository with nothing but crates.io.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// Languages a project may be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Rust,
}

/// What a new project starts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Template {
    /// A nanoservice (the nanogrid SDK): request in, response out, with config and log.
    Nanoservice,
    /// An unmodified `wasi:http/proxy` component: runs on any wasi:http host.
    Http,
    /// A nanoservice keeping a counter per key in kv (compare-and-swap).
    Kv,
    /// A nanoservice stage that transforms its input and invokes the next stage.
    Pipeline,
}

/// `nanogrid.toml`: what `build` and `dev` need to know about a project.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    /// The service name it deploys as.
    pub name: String,
    pub lang: Lang,
    pub template: Template,
}

pub const MANIFEST: &str = "nanogrid.toml";

/// The guest SDK's files as the project gets them (paths under `sdk/`).
const SDK: [(&str, &str); 9] = [
    ("src/lib.rs", include_str!("../../../guest-sdk/src/lib.rs")),
    ("src/barrier.rs", include_str!("../../../guest-sdk/src/barrier.rs")),
    ("src/config.rs", include_str!("../../../guest-sdk/src/config.rs")),
    ("src/context.rs", include_str!("../../../guest-sdk/src/context.rs")),
    ("src/error.rs", include_str!("../../../guest-sdk/src/error.rs")),
    ("src/invoke.rs", include_str!("../../../guest-sdk/src/invoke.rs")),
    ("src/kv.rs", include_str!("../../../guest-sdk/src/kv.rs")),
    ("src/log.rs", include_str!("../../../guest-sdk/src/log.rs")),
    ("src/message.rs", include_str!("../../../guest-sdk/src/message.rs")),
];
const SERVICE_WIT: &str = include_str!("../../../wit/service.wit");

/// The SDK crate's manifest in a project (the repository's inherits from its workspace).
const SDK_MANIFEST: &str = r#"[package]
name = "nanogrid-sdk"
description = "Write nanogrid nanoservices in a few lines of Rust (copied in by `nanogrid new`)"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
wit-bindgen = { version = "0.63", default-features = false, features = ["macros", "realloc"] }
serde = { version = "1.0", features = ["derive"] }
serde_json = "1.0"
"#;

impl Template {
    fn rust_source(self) -> &'static str {
        match self {
            Template::Nanoservice => include_str!("templates/rust/nanoservice.rs"),
            Template::Http => include_str!("templates/rust/http.rs"),
            Template::Kv => include_str!("templates/rust/kv.rs"),
            Template::Pipeline => include_str!("templates/rust/pipeline.rs"),
        }
    }

    fn uses_sdk(self) -> bool {
        self != Template::Http
    }

    /// A request to try once it runs, for the README and `new`'s last words.
    fn example(self, name: &str) -> String {
        match self {
            Template::Nanoservice => format!("curl 'http://127.0.0.1:8080/{name}/hi?name=Ada'"),
            Template::Http => format!("curl http://127.0.0.1:8080/{name}/hi"),
            Template::Kv => format!("curl -X POST http://127.0.0.1:8080/{name}/visits"),
            Template::Pipeline => format!("curl -d 'make me loud' http://127.0.0.1:8080/{name}/"),
        }
    }
}

/// The Rust crate name for a service name (`my-svc` → `my_svc`, the .wasm's file name).
fn crate_name(name: &str) -> String {
    name.replace('-', "_")
}

/// Create `dir` (which must not exist) as a project named `name`; returns the files written.
pub fn create(dir: &Path, name: &str, lang: Lang, template: Template) -> anyhow::Result<Vec<PathBuf>> {
    crate::services::spec::validate_name(name)
        .map_err(|e| anyhow::anyhow!("{e}; the project name is the service name"))?;
    if dir.exists() {
        bail!("{} already exists; choose another name or remove it", dir.display());
    }
    let project = Project { name: name.to_string(), lang, template };
    let mut files: Vec<(PathBuf, String)> = vec![(MANIFEST.into(), toml::to_string(&project)?)];
    match lang {
        Lang::Rust => files.extend(rust_files(name, template)),
    }
    files.push(("README.md".into(), readme(&project)));
    let mut written = Vec::new();
    for (rel, text) in files {
        let path = dir.join(&rel);
        std::fs::create_dir_all(path.parent().unwrap_or(dir)).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn rust_files(name: &str, template: Template) -> Vec<(PathBuf, String)> {
    let krate = crate_name(name);
    let deps = if template.uses_sdk() {
        "nanogrid-sdk = { path = \"sdk\" }\nserde_json = \"1.0\"\n"
    } else {
        "wasi = \"0.14\"\n"
    };
    // An empty [workspace] keeps the project its own even inside another workspace.
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
         [lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\n{deps}\n[workspace]\n\n\
         [profile.release]\nopt-level = \"s\"\nstrip = \"debuginfo\"\n"
    );
    let source = template.rust_source().replace("{{name}}", name).replace("{{crate}}", &krate);
    let mut files = vec![
        (PathBuf::from("Cargo.toml"), manifest),
        ("src/lib.rs".into(), source),
        (".gitignore".into(), "target/\n".into()),
    ];
    if template.uses_sdk() {
        files.push(("sdk/Cargo.toml".into(), SDK_MANIFEST.into()));
        files.extend(SDK.iter().map(|(p, text)| (Path::new("sdk").join(p), text.to_string())));
        files.push(("wit/service.wit".into(), SERVICE_WIT.into()));
    }
    files
}

fn readme(p: &Project) -> String {
    let name = &p.name;
    let what = match p.template {
        Template::Nanoservice => "a nanoservice (`src/lib.rs`; the SDK is in `sdk/`, the platform's WIT in `wit/`)",
        Template::Http => "a standard `wasi:http/proxy` component (`src/lib.rs`)",
        Template::Kv => "a nanoservice keeping a counter per key in kv (`src/lib.rs`)",
        Template::Pipeline => "a pipeline stage that invokes the next one named in its config (`src/lib.rs`)",
    };
    format!(
        "# {name}\n\n{what}.\n\n## Next\n\n```sh\nnanogrid build            # the component: {wasm}\n\
         nanogrid dev              # a local node, rebuilt and redeployed on every save\n\
         {example}\ncargo test                # the unit tests, on this machine\n```\n\n\
         To deploy to a running node instead: `nanogrid deploy {wasm} --name {name} --admin http://HOST:8081`.\n",
        wasm = format!("target/wasm32-wasip2/release/{}.wasm", crate_name(name)),
        example = p.template.example(name),
    )
}

/// `nanogrid new NAME`: the project in `./NAME`, and what to type next.
pub fn run_new(name: &str, lang: Lang, template: Template) -> anyhow::Result<std::process::ExitCode> {
    let dir = PathBuf::from(name);
    let files = create(&dir, name, lang, template)?;
    println!("created {} ({} files): {:?} {:?} project", dir.display(), files.len(), lang, template);
    println!("next:\n  cd {name}\n  nanogrid build\n  nanogrid dev\n  {}", template.example(name));
    Ok(std::process::ExitCode::SUCCESS)
}

/// `nanogrid build`: build the project in `dir` (default `.`) and print the component's path.
pub fn run_build(dir: Option<&Path>) -> anyhow::Result<std::process::ExitCode> {
    let dir = dir.unwrap_or(Path::new("."));
    let project = load(dir)?;
    let started = std::time::Instant::now();
    let wasm = build(dir, &project)?;
    let size = std::fs::metadata(&wasm).map(|m| m.len()).unwrap_or(0);
    println!(
        "built {} in {:.1} s: {} ({} KiB)",
        project.name,
        started.elapsed().as_secs_f64(),
        wasm.display(),
        size / 1024
    );
    Ok(std::process::ExitCode::SUCCESS)
}

/// Read `nanogrid.toml` in `dir`.
pub fn load(dir: &Path) -> anyhow::Result<Project> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("{} not found: run this in a project folder (one `nanogrid new NAME` made)", path.display())
    })?;
    toml::from_str(&text).with_context(|| format!("{} is not a valid project manifest", path.display()))
}

/// Where the build puts the component (cargo's `CARGO_TARGET_DIR` is honoured).
pub fn wasm_path(dir: &Path, p: &Project) -> PathBuf {
    match p.lang {
        Lang::Rust => {
            let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| dir.join("target"), |t| dir.join(t));
            target.join(format!("wasm32-wasip2/release/{}.wasm", crate_name(&p.name)))
        }
    }
}

/// Build the project in `dir`; returns the component's path. The build's own output goes
/// to this process's stderr.
pub fn build(dir: &Path, p: &Project) -> anyhow::Result<PathBuf> {
    match p.lang {
        Lang::Rust => {
            need_tool("cargo", &["--version"], "install Rust with rustup: https://rustup.rs")?;
            let targets = Command::new("rustup").args(["target", "list", "--installed"]).output();
            if let Ok(out) = targets
                && out.status.success()
                && !String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == "wasm32-wasip2")
            {
                bail!("the wasm32-wasip2 target is not installed; install it with: rustup target add wasm32-wasip2");
            }
            let status = Command::new("cargo")
                .args(["build", "--release", "--target", "wasm32-wasip2"])
                .current_dir(dir)
                .status()
                .context("running cargo")?;
            if !status.success() {
                bail!("cargo build failed ({status}); the compiler's messages are above");
            }
        }
    }
    let wasm = wasm_path(dir, p);
    if !wasm.is_file() {
        bail!("the build finished but {} is missing", wasm.display());
    }
    Ok(wasm)
}

/// Fail with `install` when `tool` does not run.
fn need_tool(tool: &str, args: &[&str], install: &str) -> anyhow::Result<()> {
    match Command::new(tool).args(args).output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => bail!("{tool} is needed to build this project and was not found; {install}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_project_has_its_manifest_sources_and_sdk() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("my-svc");
        let files = create(&dir, "my-svc", Lang::Rust, Template::Kv).unwrap();
        assert!(files.iter().any(|f| f.ends_with("sdk/src/kv.rs")));
        assert!(dir.join("wit/service.wit").is_file());
        let p = load(&dir).unwrap();
        assert_eq!((p.name.as_str(), p.lang, p.template), ("my-svc", Lang::Rust, Template::Kv));
        let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains("`my-svc`") && !lib.contains("{{"), "{lib}");
        assert!(wasm_path(&dir, &p).ends_with("wasm32-wasip2/release/my_svc.wasm"));
        let err = create(&dir, "my-svc", Lang::Rust, Template::Kv).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        let err = create(&tmp.path().join("x"), "Bad_Name", Lang::Rust, Template::Http).unwrap_err();
        assert!(err.to_string().contains("service name"), "{err}");
    }

    #[test]
    fn the_http_template_needs_no_sdk() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("web");
        create(&dir, "web", Lang::Rust, Template::Http).unwrap();
        assert!(!dir.join("sdk").exists());
        assert!(std::fs::read_to_string(dir.join("Cargo.toml")).unwrap().contains("wasi = \"0.14\""));
    }

    #[test]
    fn outside_a_project_the_error_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        let err = load(tmp.path()).unwrap_err();
        assert!(format!("{err:#}").contains("nanogrid new NAME"), "{err:#}");
    }
}
