//! Typed interfaces between services: the WIT interfaces a component imports or exports
//! beyond the platform's own, read from the compiled component as plain data so that
//! providers and consumers can be matched, type-checked and shown to users.

use std::fmt;

use serde::{Deserialize, Serialize};
use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use super::codec::WitType;

/// One function of an interface, with types detached from any component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FuncSig {
    pub name: String,
    pub params: Vec<(String, WitType)>,
    pub results: Vec<WitType>,
}

impl fmt::Display for FuncSig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let params: Vec<String> = self.params.iter().map(|(n, t)| format!("{n}: {t}")).collect();
        write!(f, "{}: func({})", self.name, params.join(", "))?;
        match self.results.as_slice() {
            [] => Ok(()),
            [one] => write!(f, " -> {one}"),
            many => write!(f, " -> ({})", many.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
        }
    }
}

/// An interface instance imported or exported by a component (`acme:text/tokenize@0.1.0`).
/// Shown to users as its name and WIT function signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// The full name, version included.
    pub name: String,
    pub funcs: Vec<FuncSig>,
}

impl Serialize for Interface {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Interface", 2)?;
        st.serialize_field("name", &self.name)?;
        st.serialize_field("functions", &self.funcs.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        st.end()
    }
}

impl Interface {
    /// The name without its version: what bindings and auto-binding match on.
    pub fn key(&self) -> &str {
        key_of(&self.name)
    }

    pub fn func(&self, name: &str) -> Option<&FuncSig> {
        self.funcs.iter().find(|f| f.name == name)
    }
}

/// `acme:text/tokenize@0.1.0` -> `acme:text/tokenize`.
pub use nanogrid_wire::spec::{is_interface_name, key_of};

/// Namespaces the platform owns: services cannot provide interfaces in them.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with("wasi:") || name.starts_with("nanogrid:")
}

#[derive(Debug, thiserror::Error)]
#[error("interface `{interface}` cannot be used between services: {reason}")]
pub struct TypedError {
    pub interface: String,
    pub reason: String,
}

fn reflect(engine: &Engine, name: &str, item: &ComponentItem) -> Result<Option<Interface>, TypedError> {
    let ComponentItem::ComponentInstance(inst) = item else { return Ok(None) };
    let err = |reason: String| TypedError { interface: name.to_string(), reason };
    let mut funcs = Vec::new();
    for (fname, item) in inst.exports(engine) {
        match item.ty {
            ComponentItem::ComponentFunc(f) => {
                let mut params = Vec::new();
                for (pname, ty) in f.params() {
                    let ty =
                        WitType::from_component(&ty).map_err(|e| err(format!("`{fname}` parameter `{pname}`: {e}")))?;
                    params.push((pname.to_string(), ty));
                }
                let results = f
                    .results()
                    .map(|t| WitType::from_component(&t))
                    .collect::<Result<_, _>>()
                    .map_err(|e| err(format!("`{fname}` result: {e}")))?;
                funcs.push(FuncSig { name: fname.to_string(), params, results });
            }
            ComponentItem::Type(_) => {}
            ComponentItem::Resource(_) => {
                return Err(err(format!(
                    "it defines resource `{fname}`; resources cannot be shared between services, pass plain data"
                )));
            }
            _ => return Err(err(format!("`{fname}` is not a function"))),
        }
    }
    funcs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Some(Interface { name: name.to_string(), funcs }))
}

/// The typed (non-platform) interfaces a component imports and exports.
pub fn interfaces(
    engine: &Engine,
    component: &Component,
    is_platform_import: impl Fn(&str) -> bool,
    is_platform_export: impl Fn(&str) -> bool,
) -> Result<(Vec<Interface>, Vec<Interface>), TypedError> {
    let ty = component.component_type();
    let mut imports = Vec::new();
    for (name, item) in ty.imports(engine) {
        if is_platform_import(name) || is_reserved(name) || !is_interface_name(name) {
            continue;
        }
        imports.extend(reflect(engine, name, &item.ty)?);
    }
    let mut exports = Vec::new();
    for (name, item) in ty.exports(engine) {
        if is_platform_export(name) || is_reserved(name) || !is_interface_name(name) {
            continue;
        }
        exports.extend(reflect(engine, name, &item.ty)?);
    }
    Ok((imports, exports))
}

/// Why a provider's export does not satisfy a consumer's import: one line per difference.
pub fn differences(import: &Interface, export: &Interface) -> Vec<String> {
    let mut out = Vec::new();
    if import.name != export.name {
        out.push(format!("version: the import is `{}`, the export is `{}`", import.name, export.name));
    }
    for want in &import.funcs {
        match export.func(&want.name) {
            None => out.push(format!("missing function: expected `{want}`")),
            Some(have) if have != want => out.push(format!("expected `{want}`, found `{have}`")),
            Some(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(name: &str, p: WitType, r: WitType) -> FuncSig {
        FuncSig { name: name.into(), params: vec![("text".into(), p)], results: vec![r] }
    }

    #[test]
    fn names() {
        assert_eq!(key_of("acme:text/tokenize@0.1.0"), "acme:text/tokenize");
        assert!(is_interface_name("acme:text/tokenize@0.1.0"));
        assert!(!is_interface_name("tokenize"));
        assert!(is_reserved("wasi:keyvalue/store@0.2.0"));
    }

    #[test]
    fn differences_name_the_signatures() {
        let tok = WitType::List(Box::new(WitType::Record(vec![("word".into(), WitType::String)])));
        let import =
            Interface { name: "acme:text/tokenize@0.1.0".into(), funcs: vec![sig("tokenize", WitType::String, tok)] };
        assert!(differences(&import, &import).is_empty());
        let export = Interface {
            name: "acme:text/tokenize@0.2.0".into(),
            funcs: vec![sig("tokenize", WitType::String, WitType::List(Box::new(WitType::String)))],
        };
        let d = differences(&import, &export);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].contains("0.2.0"));
        assert_eq!(
            d[1],
            "expected `tokenize: func(text: string) -> list<record { word: string }>`, \
             found `tokenize: func(text: string) -> list<string>`"
        );
    }
}
