//! Timing shims for fused chains: a small generated component placed between a consumer's
//! import and its provider's export inside the composition. It exports the provider's
//! interface and forwards every call to it unchanged, telling the host when the call
//! starts and ends (`nanogrid:fusion/timing`), so a fused chain's parts get their own
//! spans as a linked chain's do.
//!
//! The shim is a core module of forwarders wrapped by `wit-component`: each exported
//! function's core signature passes its arguments straight to the import of the same
//! function (both sides use the canonical ABI with the shim's own memory, so pointers
//! mean the same thing on either side). Lists and strings live in that memory, handed
//! out by a bump allocator that is reset once a call's results are read. Interfaces with
//! resources, futures, streams or async functions get no shim (their parts are not
//! timed); neither do interfaces that use types of other interfaces.

use anyhow::Context as _;
use wasm_encoder::{
    CodeSection, ConstExpr, DataSection, EntityType, ExportKind, ExportSection, Function, FunctionSection,
    GlobalSection, GlobalType, ImportSection, Instruction as I, MemorySection, MemoryType, Module, TypeSection,
    ValType,
};
use wit_parser::{
    Function as WitFunction, FunctionKind, InterfaceId, LiftLowerAbi, ManglingAndAbi, Resolve, SizeAlign, Type,
    TypeDefKind, WasmExport, WasmExportKind, WasmImport, WorldItem, WorldKey,
    abi::{AbiVariant, WasmType},
};

/// The host interface a shim reports to (defined in the node's linkers).
pub const TIMING: &str = "nanogrid:fusion/timing@0.1.0";
const TIMING_WIT: &str = "package nanogrid:fusion@0.1.0;\n\
     interface timing {\n  enter: func();\n  leave: func(service: string, name: string);\n}\n";

/// Where the bump allocator starts handing out memory (after the labels' bytes).
fn heap_start(labels: usize) -> u32 {
    ((8 + labels as u32) + 15) & !15
}

/// A shim for calls to `interface` (an export of `provider_bytes`, the provider's
/// component) made on behalf of `service`. `Ok(None)`: this interface cannot be shimmed
/// (see the module's comment); the edge is wired directly.
pub fn build(provider_bytes: &[u8], interface: &str, service: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let (mut resolve, world) = match wit_component::decode(provider_bytes).context("decoding a chain part")? {
        wit_component::DecodedWasm::Component(resolve, world) => (resolve, world),
        wit_component::DecodedWasm::WitPackage(..) => return Ok(None),
    };
    let Some(iface) = resolve.worlds[world].exports.iter().find_map(|(k, item)| match (k, item) {
        (WorldKey::Interface(id), WorldItem::Interface { .. }) if resolve.id_of(*id).as_deref() == Some(interface) => {
            Some(*id)
        }
        _ => None,
    }) else {
        return Ok(None);
    };
    if !shimmable(&resolve, iface) {
        return Ok(None);
    }
    resolve.push_str("timing.wit", TIMING_WIT)?;
    let pkg = resolve.push_str(
        "shim.wit",
        &format!("package nanogrid:shim;\nworld shim {{\n  import {TIMING};\n  import {interface};\n  export {interface};\n}}\n"),
    )?;
    let shim_world = resolve.select_world(&[pkg], Some("shim"))?;
    // Only the timing interface and the provider's may be imported: an interface using
    // another's types would make the shim import that one too.
    if resolve.worlds[shim_world].imports.len() != 2 {
        return Ok(None);
    }
    let mut module = core_module(&resolve, iface, service);
    wit_component::embed_component_metadata(&mut module, &resolve, shim_world, wit_component::StringEncoding::UTF8)?;
    let component = wit_component::ComponentEncoder::default().module(&module)?.validate(true).encode()?;
    Ok(Some(component))
}

/// Whether every function of `iface` is synchronous and passes only plain values.
fn shimmable(resolve: &Resolve, iface: InterfaceId) -> bool {
    let i = &resolve.interfaces[iface];
    !i.functions.is_empty()
        && i.types.values().all(|t| !matches!(resolve.types[*t].kind, TypeDefKind::Resource))
        && i.functions.values().all(|f| {
            matches!(f.kind, FunctionKind::Freestanding)
                && f.params.iter().all(|p| plain(resolve, &p.ty))
                && f.result.as_ref().is_none_or(|t| plain(resolve, t))
        })
}

/// A type made of values only: no handles, futures, streams or error contexts.
fn plain(resolve: &Resolve, ty: &Type) -> bool {
    let id = match ty {
        Type::ErrorContext => return false,
        Type::Id(id) => *id,
        _ => return true,
    };
    match &resolve.types[id].kind {
        TypeDefKind::Record(r) => r.fields.iter().all(|f| plain(resolve, &f.ty)),
        TypeDefKind::Tuple(t) => t.types.iter().all(|t| plain(resolve, t)),
        TypeDefKind::Variant(v) => v.cases.iter().all(|c| c.ty.as_ref().is_none_or(|t| plain(resolve, t))),
        TypeDefKind::Option(t) | TypeDefKind::List(t) | TypeDefKind::Type(t) => plain(resolve, t),
        TypeDefKind::FixedLengthList(t, _) => plain(resolve, t),
        TypeDefKind::Result(r) => {
            r.ok.as_ref().is_none_or(|t| plain(resolve, t)) && r.err.as_ref().is_none_or(|t| plain(resolve, t))
        }
        TypeDefKind::Flags(_) | TypeDefKind::Enum(_) => true,
        TypeDefKind::Map(k, v) => plain(resolve, k) && plain(resolve, v),
        TypeDefKind::Resource
        | TypeDefKind::Handle(_)
        | TypeDefKind::Future(_)
        | TypeDefKind::Stream(_)
        | TypeDefKind::Unknown => false,
    }
}

fn val(t: &WasmType) -> ValType {
    match t {
        WasmType::I32 | WasmType::Pointer | WasmType::Length => ValType::I32,
        WasmType::I64 | WasmType::PointerOrI64 => ValType::I64,
        WasmType::F32 => ValType::F32,
        WasmType::F64 => ValType::F64,
    }
}

/// The shim's core module: imports `enter`/`leave` and every function of `iface`;
/// exports a forwarder per function, `cabi_realloc`, `memory` and, for functions that
/// return through memory, a post-return that resets the allocator. Over 80 lines: one
/// module written section by section, in the order wasm requires.
fn core_module(resolve: &Resolve, iface: InterfaceId, service: &str) -> Vec<u8> {
    let legacy = ManglingAndAbi::Legacy(LiftLowerAbi::Sync);
    let key = WorldKey::Interface(iface);
    let funcs: Vec<&WitFunction> = resolve.interfaces[iface].functions.values().collect();
    let mut sizes = SizeAlign::default();
    sizes.fill(resolve);

    // Labels: the service's name, then each function's, in the shim's data.
    let mut labels: Vec<u8> = service.as_bytes().to_vec();
    let mut func_label = Vec::new();
    for f in &funcs {
        func_label.push((8 + labels.len() as i32, f.name.len() as i32));
        labels.extend_from_slice(f.name.as_bytes());
    }
    let heap = heap_start(labels.len()) as i32;

    let mut types = TypeSection::new();
    let mut imports = ImportSection::new();
    // Types 0..2: enter, leave, realloc, post-return.
    types.ty().function([], []);
    types.ty().function([ValType::I32; 4], []);
    types.ty().function([ValType::I32; 4], [ValType::I32]);
    types.ty().function([ValType::I32], []);
    imports.import(TIMING, "enter", EntityType::Function(0));
    imports.import(TIMING, "leave", EntityType::Function(1));
    let (enter, leave) = (0u32, 1u32);
    let mut sigs = Vec::new();
    for (i, f) in funcs.iter().enumerate() {
        let imp = resolve.wasm_signature(AbiVariant::GuestImport, f);
        let exp = resolve.wasm_signature(AbiVariant::GuestExport, f);
        types.ty().function(imp.params.iter().map(val), imp.results.iter().map(val));
        types.ty().function(exp.params.iter().map(val), exp.results.iter().map(val));
        let (module, name) = resolve.wasm_import_name(legacy, WasmImport::Func { interface: Some(&key), func: f });
        imports.import(&module, &name, EntityType::Function(4 + 2 * i as u32));
        sigs.push((imp, exp));
    }
    let imported = 2 + funcs.len() as u32;
    let realloc = imported;

    let mut functions = FunctionSection::new();
    let mut exports = ExportSection::new();
    let mut code = CodeSection::new();
    functions.function(2);
    exports.export(&resolve.wasm_export_name(legacy, WasmExport::Realloc), ExportKind::Func, realloc);
    code.function(&realloc_body());
    let mut next = realloc + 1;
    let post = next;
    functions.function(3);
    code.function(&reset_body(heap));
    next += 1;
    for (i, (f, (imp, exp))) in funcs.iter().zip(&sigs).enumerate() {
        let import = 2 + i as u32;
        let mut body = Function::new(if imp.retptr { vec![(1, ValType::I32)] } else { vec![] });
        let n = exp.params.len() as u32;
        body.instruction(&I::Call(enter));
        if imp.retptr {
            let ty = f.result.as_ref().expect("a return pointer means a result");
            let (size, align) = (sizes.size(ty).size_wasm32() as i32, sizes.align(ty).align_wasm32() as i32);
            for v in [0, 0, align, size] {
                body.instruction(&I::I32Const(v));
            }
            body.instruction(&I::Call(realloc)).instruction(&I::LocalSet(n));
        }
        for p in 0..n {
            body.instruction(&I::LocalGet(p));
        }
        if imp.retptr {
            body.instruction(&I::LocalGet(n));
        }
        body.instruction(&I::Call(import));
        let (at, len) = func_label[i];
        for v in [8, service.len() as i32, at, len] {
            body.instruction(&I::I32Const(v));
        }
        body.instruction(&I::Call(leave));
        if imp.retptr {
            // The results stay in memory until the caller has read them (post-return).
            body.instruction(&I::LocalGet(n));
        } else {
            // Only plain values come back: the arguments' memory is free again.
            body.instruction(&I::I32Const(heap)).instruction(&I::GlobalSet(0));
        }
        body.instruction(&I::End);
        functions.function(5 + 2 * i as u32);
        code.function(&body);
        let export = WasmExport::Func { interface: Some(&key), func: f, kind: WasmExportKind::Normal };
        exports.export(&resolve.wasm_export_name(legacy, export), ExportKind::Func, next);
        if exp.retptr {
            let export = WasmExport::Func { interface: Some(&key), func: f, kind: WasmExportKind::PostReturn };
            exports.export(&resolve.wasm_export_name(legacy, export), ExportKind::Func, post);
        }
        next += 1;
    }
    exports.export(&resolve.wasm_export_name(legacy, WasmExport::Memory), ExportKind::Memory, 0);

    let mut memories = MemorySection::new();
    memories.memory(MemoryType { minimum: 1, maximum: None, memory64: false, shared: false, page_size_log2: None });
    let mut globals = GlobalSection::new();
    globals.global(GlobalType { val_type: ValType::I32, mutable: true, shared: false }, &ConstExpr::i32_const(heap));
    let mut data = DataSection::new();
    data.active(0, &ConstExpr::i32_const(8), labels);

    let mut m = Module::new();
    m.section(&types)
        .section(&imports)
        .section(&functions)
        .section(&memories)
        .section(&globals)
        .section(&exports)
        .section(&code)
        .section(&data);
    m.finish()
}

/// `cabi_realloc(old, old_size, align, size)`: bump-allocate `size` bytes at `align`,
/// growing memory as needed, and copy the old bytes (a grown allocation).
fn realloc_body() -> Function {
    let (old, old_size, align, size, ptr) = (0, 1, 2, 3, 4);
    let mut f = Function::new([(1, ValType::I32)]);
    for i in [
        // ptr = (bump + align - 1) & -align
        I::GlobalGet(0),
        I::LocalGet(align),
        I::I32Add,
        I::I32Const(1),
        I::I32Sub,
        I::I32Const(0),
        I::LocalGet(align),
        I::I32Sub,
        I::I32And,
        I::LocalSet(ptr),
        // bump = ptr + size
        I::LocalGet(ptr),
        I::LocalGet(size),
        I::I32Add,
        I::GlobalSet(0),
        // while bump > memory.size * 64 KiB: grow by what is missing (or trap)
        I::GlobalGet(0),
        I::MemorySize(0),
        I::I32Const(16),
        I::I32Shl,
        I::I32GtU,
        I::If(wasm_encoder::BlockType::Empty),
        I::GlobalGet(0),
        I::MemorySize(0),
        I::I32Const(16),
        I::I32Shl,
        I::I32Sub,
        I::I32Const(0xffff),
        I::I32Add,
        I::I32Const(16),
        I::I32ShrU,
        I::MemoryGrow(0),
        I::I32Const(-1),
        I::I32Eq,
        I::If(wasm_encoder::BlockType::Empty),
        I::Unreachable,
        I::End,
        I::End,
        // copy what a grown allocation held
        I::LocalGet(old_size),
        I::If(wasm_encoder::BlockType::Empty),
        I::LocalGet(ptr),
        I::LocalGet(old),
        I::LocalGet(old_size),
        I::MemoryCopy { src_mem: 0, dst_mem: 0 },
        I::End,
        I::LocalGet(ptr),
        I::End,
    ] {
        f.instruction(&i);
    }
    f
}

/// A post-return (its one parameter, the results' address, unused) that hands the whole
/// heap back.
fn reset_body(heap: i32) -> Function {
    let mut f = Function::new([]);
    f.instruction(&I::I32Const(heap)).instruction(&I::GlobalSet(0)).instruction(&I::End);
    f
}
