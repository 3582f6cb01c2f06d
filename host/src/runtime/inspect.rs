//! Upload validation: tell the user exactly why bytes cannot be deployed.

use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use super::state::StoreState;
use super::typed::{self, Interface};

/// The export a nanoservice must have.
pub const HANDLER_EXPORT: &str = "nanogrid:service/handler@0.1.0";
/// The export of a standard `wasi:http/proxy` component (any 0.2.x).
pub const HTTP_EXPORT_PREFIX: &str = "wasi:http/incoming-handler@0.2.";
/// The export of a WASI 0.3 `wasi:http/service` component (any 0.3.x).
pub const HTTP3_EXPORT_PREFIX: &str = "wasi:http/handler@0.3.";

/// What an accepted component is.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentInfo {
    pub world: String,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// Interfaces other services must provide (bound at deploy).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub typed_imports: Vec<Interface>,
    /// Interfaces this component provides to other services.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub typed_exports: Vec<Interface>,
    /// Linear memory an instance has before it runs (the largest initial memory of its
    /// core modules); `limits.memory_mib` must allow it.
    pub min_memory_bytes: u64,
}

/// The world of a typed nanoservice handler.
pub const NANOSERVICE_WORLD: &str = "nanogrid:service/nanoservice";
/// The world of a standard HTTP component.
pub const HTTP_WORLD: &str = "wasi:http/proxy";
/// The world of a WASI 0.3 (async) HTTP component.
pub const HTTP3_WORLD: &str = "wasi:http/service";

/// Whether components of `world` are served as HTTP (streaming bodies, any path).
pub fn is_http_world(world: &str) -> bool {
    world == HTTP_WORLD || world == HTTP3_WORLD
}
/// The world of a component that only provides typed interfaces (no HTTP handler).
pub const PROVIDER_WORLD: &str = "provider";

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("the upload is not WebAssembly ({0}); upload the .wasm file your build produced")]
    NotWasm(String),
    #[error(
        "this is a core WebAssembly module, not a component; build it for the wasm32-wasip2 target \
         (`cargo build --release --target wasm32-wasip2`)"
    )]
    CoreModule,
    #[error("the component is not valid: {0}")]
    Invalid(String),
    #[error("the component exports no supported handler: it exports [{}]; export `{HANDLER_EXPORT}` (the `nanoservice` world), `wasi:http/incoming-handler@0.2.x` (the `wasi:http/proxy` world), `wasi:http/handler@0.3.x` (the WASI 0.3 `wasi:http/service` world) or an interface of your own for other services to import", .0.join(", "))]
    NoHandler(Vec<String>),
    #[error("the component imports what neither this platform nor another service can provide: [{}]; nanoservices may import `nanogrid:service/*@0.1.x`, WASI 0.2 and 0.3 interfaces, and `namespace:package/interface` interfaces that other services export", .0.join(", "))]
    UnsatisfiedImports(Vec<String>),
    #[error("the component cannot be linked: {0}")]
    LinkFailed(String),
    #[error(transparent)]
    Typed(#[from] typed::TypedError),
}

/// Checks before compiling: the magic number, the layer (module vs component) and the
/// structure (`nanogrid_wire::upload`, fuzzed there).
pub fn check_header(bytes: &[u8]) -> Result<(), InspectError> {
    use nanogrid_wire::upload::{UploadError, check};
    check(bytes).map_err(|e| match e {
        UploadError::NotWasm(what) => InspectError::NotWasm(what.to_string()),
        UploadError::CoreModule => InspectError::CoreModule,
        UploadError::Invalid(m) => InspectError::Invalid(m),
    })
}

/// Interfaces the node can link, by `namespace:package/interface` without version.
fn is_supported_import(name: &str) -> bool {
    let (iface, version) = name.split_once('@').unwrap_or((name, ""));
    if let Some(rest) = iface.strip_prefix("nanogrid:service/") {
        return version.starts_with("0.1.")
            && matches!(rest, "types" | "kv" | "invoke" | "barrier" | "log" | "config" | "context");
    }
    match iface {
        "wasi:http/types" => return version.starts_with("0.2.") || version.starts_with("0.3."),
        "wasi:http/outgoing-handler" => return version.starts_with("0.2."),
        "wasi:http/client" => return version.starts_with("0.3."),
        _ => {}
    }
    if iface.starts_with("wasi:") {
        let known = ["wasi:cli/", "wasi:clocks/", "wasi:filesystem/", "wasi:random/", "wasi:sockets/"];
        // wasi:io is 0.2 only: 0.3 has streams and futures in the component model.
        let io = iface.starts_with("wasi:io/") && version.starts_with("0.2.");
        let other =
            known.iter().any(|k| iface.starts_with(k)) && (version.starts_with("0.2.") || version.starts_with("0.3."));
        return io || other;
    }
    false
}

fn is_platform_export(name: &str) -> bool {
    name == HANDLER_EXPORT || name.starts_with(HTTP_EXPORT_PREFIX) || name.starts_with(HTTP3_EXPORT_PREFIX)
}

pub fn describe(
    engine: &Engine,
    linker: &Linker<StoreState>,
    component: &Component,
) -> Result<ComponentInfo, InspectError> {
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let (typed_imports, typed_exports) = typed::interfaces(engine, component, is_supported_import, is_platform_export)?;
    let missing: Vec<String> = imports
        .iter()
        .filter(|i| !is_supported_import(i) && !typed_imports.iter().any(|t| &t.name == *i))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(InspectError::UnsatisfiedImports(missing));
    }
    let world = if exports.iter().any(|e| e == HANDLER_EXPORT) {
        NANOSERVICE_WORLD
    } else if exports.iter().any(|e| e.starts_with(HTTP_EXPORT_PREFIX)) {
        HTTP_WORLD
    } else if exports.iter().any(|e| e.starts_with(HTTP3_EXPORT_PREFIX)) {
        HTTP3_WORLD
    } else if !typed_exports.is_empty() {
        PROVIDER_WORLD
    } else {
        return Err(InspectError::NoHandler(exports));
    };
    // Names match; this also checks the types behind them. Typed imports are linked to
    // providers at deploy; here they get placeholders (any type fits).
    let mut linker = linker.clone();
    stub_typed_imports(&mut linker, &typed_imports).map_err(|e| InspectError::LinkFailed(format!("{e:#}")))?;
    linker.instantiate_pre(component).map_err(|e| InspectError::LinkFailed(format!("{:#}", anyhow::Error::from(e))))?;
    Ok(ComponentInfo { world: world.into(), imports, exports, typed_imports, typed_exports, min_memory_bytes: 0 })
}

/// Define every function of `imports` as a trap, for link checks.
fn stub_typed_imports(linker: &mut Linker<StoreState>, imports: &[Interface]) -> anyhow::Result<()> {
    for iface in imports {
        let mut inst = linker.instance(&iface.name)?;
        for f in &iface.funcs {
            inst.func_new(&f.name, |_, _, _, _| Err(wasmtime::format_err!("typed import not linked")))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert!(matches!(check_header(b"hello world"), Err(InspectError::NotWasm(_))));
        assert!(matches!(check_header(b""), Err(InspectError::NotWasm(_))));
        assert!(matches!(check_header(b"\0asm\x01\0\0\0"), Err(InspectError::CoreModule)));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn import_names() {
        assert!(is_supported_import("nanogrid:service/kv@0.1.0"));
        assert!(is_supported_import("wasi:cli/environment@0.2.6"));
        assert!(is_supported_import("wasi:http/outgoing-handler@0.2.6"));
        assert!(!is_supported_import("wasi:http/outgoing-handler@0.3.0"));
        assert!(is_supported_import("wasi:http/client@0.3.0"));
        assert!(is_supported_import("wasi:http/types@0.3.0"));
        assert!(is_supported_import("wasi:cli/stdout@0.3.0"));
        assert!(!is_supported_import("wasi:io/streams@0.3.0"));
        assert!(!is_supported_import("wasi:http/client@0.2.6"));
        assert!(!is_supported_import("wasi:cli/stdout@0.4.0"));
        assert!(!is_supported_import("wasi:keyvalue/store@0.2.0"));
        assert!(!is_supported_import("acme:text/tokenize@1.0.0"));
        assert!(!is_supported_import("nanogrid:service/kv@0.2.0"));
    }
}
