//! Rust projects: a `cdylib` crate built by cargo for `wasm32-wasip2`. Nanoservice
//! templates carry the guest SDK's sources (`sdk/`) and the platform's WIT (`wit/`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use super::{Build, Files, Project, Template, need_tool};

/// The guest SDK's files as the project gets them (paths under `sdk/`).
const SDK: [(&str, &str); 9] = [
    ("src/lib.rs", include_str!("../../../../guest-sdk/src/lib.rs")),
    ("src/barrier.rs", include_str!("../../../../guest-sdk/src/barrier.rs")),
    ("src/config.rs", include_str!("../../../../guest-sdk/src/config.rs")),
    ("src/context.rs", include_str!("../../../../guest-sdk/src/context.rs")),
    ("src/error.rs", include_str!("../../../../guest-sdk/src/error.rs")),
    ("src/invoke.rs", include_str!("../../../../guest-sdk/src/invoke.rs")),
    ("src/kv.rs", include_str!("../../../../guest-sdk/src/kv.rs")),
    ("src/log.rs", include_str!("../../../../guest-sdk/src/log.rs")),
    ("src/message.rs", include_str!("../../../../guest-sdk/src/message.rs")),
];

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

fn source(template: Template) -> &'static str {
    match template {
        Template::Nanoservice => include_str!("templates/rust/nanoservice.rs"),
        Template::Http => include_str!("templates/rust/http.rs"),
        Template::Kv => include_str!("templates/rust/kv.rs"),
        Template::Pipeline => include_str!("templates/rust/pipeline.rs"),
    }
}

/// The crate name for a service name (`my-svc` → `my_svc`, the .wasm's file name).
fn crate_name(name: &str) -> String {
    name.replace('-', "_")
}

pub fn files(name: &str, template: Template) -> Files {
    let uses_sdk = template != Template::Http;
    let deps = if uses_sdk { "nanogrid-sdk = { path = \"sdk\" }\nserde_json = \"1.0\"\n" } else { "wasi = \"0.14\"\n" };
    // An empty [workspace] keeps the project its own even inside another workspace. The
    // release profile is the samples' (samples/Cargo.toml says what it buys).
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
         [lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\n{deps}\n[workspace]\n\n\
         [profile.release]\nopt-level = 3\nlto = true\ncodegen-units = 1\nstrip = \"debuginfo\"\n\n\
         # `nanogrid dev` builds with this one: release without whole-program optimisation,\n\
         # so a change is rebuilt in a fraction of a second.\n\
         [profile.{DEV_PROFILE}]\ninherits = \"release\"\nlto = false\ncodegen-units = 16\n"
    );
    let mut files = vec![
        (PathBuf::from("Cargo.toml"), manifest),
        ("src/lib.rs".into(), source(template).replace("{{name}}", name).replace("{{crate}}", &crate_name(name))),
        (".gitignore".into(), "target/\n".into()),
    ];
    if uses_sdk {
        files.push(("sdk/Cargo.toml".into(), SDK_MANIFEST.into()));
        files.extend(SDK.iter().map(|(p, text)| (Path::new("sdk").join(p), text.to_string())));
        files.push(("wit/service.wit".into(), super::SERVICE_WIT.into()));
    }
    files
}

/// The source file a user edits and the command that runs its tests, for the README.
pub const SOURCE_AND_TEST: (&str, &str) = ("src/lib.rs", "cargo test");

/// The cargo profile `nanogrid dev` builds with, when the project defines it (projects
/// made before it was added build with `release`).
pub const DEV_PROFILE: &str = "nanogrid-dev";

/// The cargo profile a build of the project in `dir` uses.
fn profile(dir: &Path, build: Build) -> &'static str {
    let defines = |dir: &Path| {
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
        manifest.contains(&format!("[profile.{DEV_PROFILE}]"))
    };
    match build {
        Build::Dev if defines(dir) => DEV_PROFILE,
        _ => "release",
    }
}

/// Where cargo puts the component (its `CARGO_TARGET_DIR` is honoured).
pub fn wasm_path(dir: &Path, p: &Project, build: Build) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| dir.join("target"), |t| dir.join(t));
    target.join(format!("wasm32-wasip2/{}/{}.wasm", profile(dir, build), crate_name(&p.name)))
}

/// The path the README shows (relative, without a `CARGO_TARGET_DIR`).
pub fn shown_wasm(name: &str) -> String {
    format!("target/wasm32-wasip2/release/{}.wasm", crate_name(name))
}

pub fn build(dir: &Path, build: Build) -> anyhow::Result<()> {
    need_tool("cargo", &["--version"], "install Rust with rustup: https://rustup.rs")?;
    let targets = Command::new("rustup").args(["target", "list", "--installed"]).output();
    if let Ok(out) = targets
        && out.status.success()
        && !String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == "wasm32-wasip2")
    {
        bail!("the wasm32-wasip2 target is not installed; install it with: rustup target add wasm32-wasip2");
    }
    let status = Command::new("cargo")
        .args(["build", "--profile", profile(dir, build), "--target", "wasm32-wasip2"])
        .current_dir(dir)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("cargo build failed ({status}); the compiler's messages are above");
    }
    Ok(())
}
