//! The first checks of an uploaded component, before the node compiles it: the magic
//! number, the layer (a core module is not a component), and structural validation with
//! every WebAssembly feature on (what the engine supports is its own, later, check). They
//! answer garbage quickly and with a reason, and are fuzzed apart from the node.

/// Why an upload is not a component.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    #[error("the upload is not WebAssembly ({0}); upload the .wasm file your build produced")]
    NotWasm(&'static str),
    #[error(
        "this is a core WebAssembly module, not a component; build it for the wasm32-wasip2 target (`cargo build --release --target wasm32-wasip2`)"
    )]
    CoreModule,
    #[error("the component is not valid: {0}")]
    Invalid(String),
}

/// Check an upload's header and structure.
pub fn check(bytes: &[u8]) -> Result<(), UploadError> {
    if bytes.is_empty() {
        return Err(UploadError::NotWasm("the body is empty"));
    }
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(UploadError::NotWasm("it does not start with the \\0asm magic number"));
    }
    // Bytes 4..8: version (2 bytes) and layer (2 bytes); layer 0 is a core module.
    if bytes[6..8] == [0, 0] {
        return Err(UploadError::CoreModule);
    }
    let mut v = wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all());
    v.validate_all(bytes).map_err(|e| UploadError::Invalid(e.to_string()))?;
    Ok(())
}

/// The largest initial size, in bytes, of any linear memory the component's core modules
/// define: an instance needs at least that much before its first instruction runs, so a
/// memory limit below it can never serve a request. Zero for bytes that do not parse
/// (they are refused by [`check`] anyway).
pub fn min_memory_bytes(bytes: &[u8]) -> u64 {
    let mut min = 0u64;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let Ok(wasmparser::Payload::MemorySection(memories)) = payload else { continue };
        for m in memories.into_iter().flatten() {
            min = min.max(m.initial.saturating_mul(1u64 << m.page_size_log2().min(63)));
        }
    }
    min
}

/// Whether the component uses the component model's async ABI: async lifts or lowers,
/// tasks, streams, futures (what WASI 0.3 components do), or names a `wasi:*@0.3`
/// interface. Such components need an engine with concurrency support, which costs every
/// other component time per request, so the node keeps a second engine for them. Bytes
/// that do not parse: false (they are refused by [`check`] anyway).
pub fn uses_async_abi(bytes: &[u8]) -> bool {
    use wasmparser::{CanonicalFunction as F, CanonicalOption as O, Payload};
    let async_options = |o: &[O]| o.iter().any(|o| matches!(o, O::Async | O::Callback(_)));
    let wasi_03 = |name: &str| name.starts_with("wasi:") && name.contains("@0.3.");
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let found = match payload {
            Ok(Payload::ComponentCanonicalSection(funcs)) => funcs.into_iter().flatten().any(|f| match f {
                F::Lift { options, .. } | F::Lower { options, .. } => async_options(&options),
                F::ResourceNew { .. } | F::ResourceDrop { .. } | F::ResourceRep { .. } => false,
                // Task, stream, future, waitable and thread builtins.
                _ => true,
            }),
            Ok(Payload::ComponentImportSection(imports)) => imports.into_iter().flatten().any(|i| wasi_03(i.name.name)),
            Ok(Payload::ComponentExportSection(exports)) => exports.into_iter().flatten().any(|e| wasi_03(e.name.name)),
            Ok(_) => false,
            Err(_) => return false,
        };
        if found {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_memory_of_nested_modules() {
        // A component holding one core module whose memory starts at 3 pages.
        let module = [&b"\0asm\x01\0\0\0"[..], &[5, 3, 1, 0, 3]].concat();
        let mut component = b"\0asm\x0d\0\x01\0".to_vec();
        component.push(1); // core module section
        component.push(module.len() as u8);
        component.extend_from_slice(&module);
        assert_eq!(check(&component), Ok(()));
        assert_eq!(min_memory_bytes(&component), 3 << 16);
        assert_eq!(min_memory_bytes(b"\0asm\x0d\0\x01\0"), 0);
        assert_eq!(min_memory_bytes(b"garbage"), 0);
    }

    #[test]
    fn async_abi_is_recognised() {
        let comp = |body: &str| wat::parse_str(format!("(component {body})")).unwrap();
        let plain = comp(
            r#"(core module $m (func (export "f"))) (core instance $i (instantiate $m))
            (func $f (canon lift (core func $i "f"))) (export "f" (func $f))"#,
        );
        assert!(!uses_async_abi(&plain));
        let lifted_async = comp(
            r#"(core module $m (func (export "f"))) (core instance $i (instantiate $m))
            (func $f (canon lift (core func $i "f") async)) (export "f" (func $f))"#,
        );
        assert!(uses_async_abi(&lifted_async));
        assert!(uses_async_abi(&comp(r#"(core func (canon context.get i32 0))"#)));
        assert!(uses_async_abi(&comp(r#"(import "wasi:cli/stdout@0.3.0" (instance))"#)));
        assert!(!uses_async_abi(&comp(r#"(import "wasi:cli/stdout@0.2.6" (instance))"#)));
        assert!(!uses_async_abi(b"garbage"));
    }

    #[test]
    fn garbage_is_named() {
        assert_eq!(check(b""), Err(UploadError::NotWasm("the body is empty")));
        assert!(matches!(check(b"hello world"), Err(UploadError::NotWasm(_))));
        assert_eq!(check(b"\0asm\x01\0\0\0"), Err(UploadError::CoreModule));
        // The component header alone is an empty, valid component.
        assert_eq!(check(b"\0asm\x0d\0\x01\0"), Ok(()));
        assert!(matches!(check(b"\0asm\x0d\0\x01\0\x01\x02"), Err(UploadError::Invalid(_))));
    }
}
