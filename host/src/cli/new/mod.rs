//! `nanogrid new` and `nanogrid build`: a ready project from templates embedded in the
//! binary, and its build for the project's language, installing nothing silently.
//!
//! A project is a folder with `nanogrid.toml` (`name`, `lang`, `template`) beside the
//! language's own files; each language (`rust.rs`, `js.rs`, `python.rs`) says which files
//! a template writes, where the component lands and how it is built. Nanoservice projects
//! carry the SDK and the platform's WIT (`wit/service.wit`), both embedded from this
//! repository, so a project builds on its own and speaks this binary's contract.

mod js;
mod python;
mod rust;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// Languages a project may be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Rust,
    Python,
    Js,
}

/// What a new project starts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Template {
    /// A nanoservice (the nanogrid SDK): request in, response out, with config and log.
    Nanoservice,
    /// An unmodified `wasi:http/proxy` component, no SDK: runs on any wasi:http host.
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

/// A project's files: path under the project folder, contents.
type Files = Vec<(PathBuf, String)>;

const SERVICE_WIT: &str = include_str!("../../../../wit/service.wit");

/// WASI 0.2.12's WIT, as the node links it (also the test guests' `tests/guests-wit/deps`):
/// `http` projects in languages whose toolchain generates bindings from WIT carry it.
const WASI_WIT: [(&str, &str); 7] = [
    ("cli.wit", include_str!("templates/wasi/cli.wit")),
    ("clocks.wit", include_str!("templates/wasi/clocks.wit")),
    ("filesystem.wit", include_str!("templates/wasi/filesystem.wit")),
    ("http.wit", include_str!("templates/wasi/http.wit")),
    ("io.wit", include_str!("templates/wasi/io.wit")),
    ("random.wit", include_str!("templates/wasi/random.wit")),
    ("sockets.wit", include_str!("templates/wasi/sockets.wit")),
];

/// The `wit/` of an `http` project: WASI's WIT relabelled as `version` (the one the
/// language's toolchain is built on; the node links any 0.2.x) and a world `app` that is
/// the standard proxy.
fn http_wit(version: &str) -> Files {
    let mut files: Files =
        WASI_WIT.iter().map(|(f, text)| (Path::new("wit/deps").join(f), text.replace("0.2.12", version))).collect();
    let world = format!(
        "// The standard wasi:http/proxy world: what this component imports and exports.\n\
         package nanogrid:app;\n\nworld app {{\n  include wasi:http/proxy@{version};\n}}\n"
    );
    files.push(("wit/world.wit".into(), world));
    files
}

impl Template {
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

impl Lang {
    fn files(self, name: &str, template: Template) -> anyhow::Result<Files> {
        match self {
            Lang::Rust => Ok(rust::files(name, template)),
            Lang::Python => python::files(name, template),
            Lang::Js => js::files(name, template),
        }
    }

    /// The file a user edits first and the command that runs the project's tests.
    fn source_and_test(self) -> (&'static str, &'static str) {
        match self {
            Lang::Rust => rust::SOURCE_AND_TEST,
            Lang::Python => python::SOURCE_AND_TEST,
            Lang::Js => js::SOURCE_AND_TEST,
        }
    }

    /// Where the component lands, as the README shows it.
    fn shown_wasm(self, name: &str) -> String {
        match self {
            Lang::Rust => rust::shown_wasm(name),
            Lang::Python => python::shown_wasm(name),
            Lang::Js => js::shown_wasm(name),
        }
    }
}

/// Create `dir` (which must not exist) as a project named `name`; returns the files written.
pub fn create(dir: &Path, name: &str, lang: Lang, template: Template) -> anyhow::Result<Vec<PathBuf>> {
    crate::services::spec::validate_name(name)
        .map_err(|e| anyhow::anyhow!("{e}; the project name is the service name"))?;
    if dir.exists() {
        bail!("{} already exists; choose another name or remove it", dir.display());
    }
    let project = Project { name: name.to_string(), lang, template };
    let mut files: Files = vec![(MANIFEST.into(), toml::to_string(&project)?)];
    files.extend(lang.files(name, template)?);
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

fn readme(p: &Project) -> String {
    let name = &p.name;
    let (source, test) = p.lang.source_and_test();
    let what = match p.template {
        Template::Nanoservice => "a nanoservice: request in, response out, with config and log",
        Template::Http => "a standard `wasi:http/proxy` component",
        Template::Kv => "a nanoservice keeping a counter per key in kv",
        Template::Pipeline => "a pipeline stage that invokes the next one named in its config",
    };
    let wasm = p.lang.shown_wasm(name);
    format!(
        "# {name}\n\n{what} (`{source}`).\n\n## Next\n\n```sh\nnanogrid build            # the component: {wasm}\n\
         nanogrid dev              # a local node, rebuilt and redeployed on every save\n\
         {example}\n{test:<25} # the tests, on this machine\n```\n\n\
         To deploy to a running node instead: `nanogrid deploy {wasm} --name {name} --admin http://HOST:8081`.\n",
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
    let wasm = build(dir, &project, Build::Release)?;
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

/// Which build: `nanogrid build`'s, or `nanogrid dev`'s (quicker to rebuild where the
/// language has such a build: Rust's `nanogrid-dev` profile, without LTO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    Release,
    Dev,
}

/// Where the build puts the component.
pub fn wasm_path(dir: &Path, p: &Project, build: Build) -> PathBuf {
    match p.lang {
        Lang::Rust => rust::wasm_path(dir, p, build),
        Lang::Python => python::wasm_path(dir, p),
        Lang::Js => js::wasm_path(dir, p),
    }
}

/// Build the project in `dir`; returns the component's path. The tool's own output goes
/// to this process's stderr.
pub fn build(dir: &Path, p: &Project, build: Build) -> anyhow::Result<PathBuf> {
    match p.lang {
        Lang::Rust => rust::build(dir, build)?,
        Lang::Python => python::build(dir, p)?,
        Lang::Js => js::build(dir, p)?,
    }
    let wasm = wasm_path(dir, p, build);
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
        assert!(wasm_path(&dir, &p, Build::Release).ends_with("wasm32-wasip2/release/my_svc.wasm"));
        // `nanogrid dev` builds with the project's quicker profile; a project made before
        // there was one builds `release` there too.
        assert!(wasm_path(&dir, &p, Build::Dev).ends_with("wasm32-wasip2/nanogrid-dev/my_svc.wasm"));
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let older = &manifest[..manifest.find("# `nanogrid dev`").expect("the dev profile")];
        std::fs::write(dir.join("Cargo.toml"), older).unwrap();
        assert!(wasm_path(&dir, &p, Build::Dev).ends_with("wasm32-wasip2/release/my_svc.wasm"));
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
    fn python_and_js_projects_carry_their_sdk() {
        let tmp = tempfile::tempdir().unwrap();
        for (lang, files) in [
            (Lang::Python, ["app.py", "logic.py", "test_logic.py", "nanogrid/kv.py", "wit/service.wit"]),
            (Lang::Js, ["app.js", "logic.js", "test.mjs", "nanogrid.js", "package.json"]),
        ] {
            let dir = tmp.path().join(format!("{lang:?}").to_lowercase());
            create(&dir, "tally", lang, Template::Kv).unwrap();
            for f in files {
                assert!(dir.join(f).is_file(), "{lang:?}: {f}");
            }
            let p = load(&dir).unwrap();
            assert_eq!(wasm_path(&dir, &p, Build::Dev), dir.join("target/tally.wasm"));
        }
    }

    #[test]
    fn python_and_js_http_projects_carry_wasi_wit_at_their_toolchains_version() {
        let tmp = tempfile::tempdir().unwrap();
        for (lang, version, sdk) in [(Lang::Python, "0.2.12", "nanogrid/kv.py"), (Lang::Js, "0.2.10", "nanogrid.js")] {
            let dir = tmp.path().join(format!("{lang:?}"));
            create(&dir, "web", lang, Template::Http).unwrap();
            assert!(!dir.join(sdk).exists(), "{lang:?}: no SDK in an http project");
            let world = std::fs::read_to_string(dir.join("wit/world.wit")).unwrap();
            assert!(world.contains(&format!("include wasi:http/proxy@{version};")), "{world}");
            let http = std::fs::read_to_string(dir.join("wit/deps/http.wit")).unwrap();
            assert!(http.starts_with(&format!("package wasi:http@{version};")), "{lang:?}");
        }
    }

    #[test]
    fn outside_a_project_the_error_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        let err = load(tmp.path()).unwrap_err();
        assert!(format!("{err:#}").contains("nanogrid new NAME"), "{err:#}");
    }
}
