//! A dynamic codec for WIT values, so a typed call can cross a process or network
//! boundary without either side having the other's component.
//!
//! [`WitType`] is a WIT type detached from any component (it serialises with serde, so a
//! caller can ship it); [`WitType::from_component`] builds one from wasmtime's reflection
//! and refuses what cannot leave a Store (resources, futures, streams, error contexts).
//! [`encode`] / [`decode`] turn a [`Val`] of that type into compact bytes and back:
//! integers as LEB128 (zig-zag for signed), floats bit-exact, strings and lists
//! length-prefixed, variants and enums by case index, flags as a bitset. Decoding checks
//! everything (case indices, UTF-8, chars, lengths against the input) and never trusts a
//! length to allocate.

use serde::{Deserialize, Serialize};
use wasmtime::component::{Type, Val};

/// A WIT value type, independent of any component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WitType {
    Bool,
    S8,
    U8,
    S16,
    U16,
    S32,
    U32,
    S64,
    U64,
    F32,
    F64,
    Char,
    String,
    List(Box<WitType>),
    FixedList(Box<WitType>, u32),
    Map(Box<WitType>, Box<WitType>),
    Record(Vec<(String, WitType)>),
    Tuple(Vec<WitType>),
    Variant(Vec<(String, Option<WitType>)>),
    Enum(Vec<String>),
    Option(Box<WitType>),
    Result { ok: Option<Box<WitType>>, err: Option<Box<WitType>> },
    Flags(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("{0} cannot cross a node boundary; pass plain data instead")]
    Unsupported(String),
    #[error("expected a value of type {expected}, got {found}")]
    Mismatch { expected: String, found: String },
    #[error("the encoded value ends early")]
    Truncated,
    #[error("the encoded value is invalid: {0}")]
    Invalid(String),
    #[error("{0} bytes left over after the value")]
    TrailingBytes(usize),
}

impl WitType {
    /// The component-independent form of a wasmtime type.
    pub fn from_component(ty: &Type) -> Result<WitType, CodecError> {
        let boxed = |t: &Type| WitType::from_component(t).map(Box::new);
        Ok(match ty {
            Type::Bool => WitType::Bool,
            Type::S8 => WitType::S8,
            Type::U8 => WitType::U8,
            Type::S16 => WitType::S16,
            Type::U16 => WitType::U16,
            Type::S32 => WitType::S32,
            Type::U32 => WitType::U32,
            Type::S64 => WitType::S64,
            Type::U64 => WitType::U64,
            Type::Float32 => WitType::F32,
            Type::Float64 => WitType::F64,
            Type::Char => WitType::Char,
            Type::String => WitType::String,
            Type::List(l) => WitType::List(boxed(&l.ty())?),
            Type::FixedLengthList(l) => WitType::FixedList(boxed(&l.ty())?, l.len()),
            Type::Map(m) => WitType::Map(boxed(&m.key())?, boxed(&m.value())?),
            Type::Record(r) => WitType::Record(
                r.fields()
                    .map(|f| Ok((f.name.to_string(), WitType::from_component(&f.ty)?)))
                    .collect::<Result<_, _>>()?,
            ),
            Type::Tuple(t) => WitType::Tuple(t.types().map(|t| WitType::from_component(&t)).collect::<Result<_, _>>()?),
            Type::Variant(v) => WitType::Variant(
                v.cases()
                    .map(|c| Ok((c.name.to_string(), c.ty.as_ref().map(WitType::from_component).transpose()?)))
                    .collect::<Result<_, _>>()?,
            ),
            Type::Enum(e) => WitType::Enum(e.names().map(str::to_string).collect()),
            Type::Option(o) => WitType::Option(boxed(&o.ty())?),
            Type::Result(r) => WitType::Result {
                ok: r.ok().as_ref().map(boxed).transpose()?,
                err: r.err().as_ref().map(boxed).transpose()?,
            },
            Type::Flags(f) => WitType::Flags(f.names().map(str::to_string).collect()),
            Type::Own(_) | Type::Borrow(_) => return Err(CodecError::Unsupported("a resource handle".into())),
            Type::Future(_) => return Err(CodecError::Unsupported("a future".into())),
            Type::Stream(_) => return Err(CodecError::Unsupported("a stream".into())),
            Type::ErrorContext => return Err(CodecError::Unsupported("an error-context".into())),
        })
    }

    fn name(&self) -> String {
        format!("{self:?}").chars().take(80).collect()
    }
}

/// WIT syntax, as a user would write the type (`list<record { word: string }>`).
impl std::fmt::Display for WitType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let join = |f: &mut std::fmt::Formatter<'_>, items: &[String]| f.write_str(&items.join(", "));
        match self {
            WitType::Bool => f.write_str("bool"),
            WitType::S8 => f.write_str("s8"),
            WitType::U8 => f.write_str("u8"),
            WitType::S16 => f.write_str("s16"),
            WitType::U16 => f.write_str("u16"),
            WitType::S32 => f.write_str("s32"),
            WitType::U32 => f.write_str("u32"),
            WitType::S64 => f.write_str("s64"),
            WitType::U64 => f.write_str("u64"),
            WitType::F32 => f.write_str("f32"),
            WitType::F64 => f.write_str("f64"),
            WitType::Char => f.write_str("char"),
            WitType::String => f.write_str("string"),
            WitType::List(t) => write!(f, "list<{t}>"),
            WitType::FixedList(t, n) => write!(f, "list<{t}, {n}>"),
            WitType::Map(k, v) => write!(f, "map<{k}, {v}>"),
            WitType::Record(fields) => {
                f.write_str("record { ")?;
                join(f, &fields.iter().map(|(n, t)| format!("{n}: {t}")).collect::<Vec<_>>())?;
                f.write_str(" }")
            }
            WitType::Tuple(ts) => {
                f.write_str("tuple<")?;
                join(f, &ts.iter().map(ToString::to_string).collect::<Vec<_>>())?;
                f.write_str(">")
            }
            WitType::Variant(cases) => {
                f.write_str("variant { ")?;
                let cases: Vec<String> = cases
                    .iter()
                    .map(|(n, t)| match t {
                        Some(t) => format!("{n}({t})"),
                        None => n.clone(),
                    })
                    .collect();
                join(f, &cases)?;
                f.write_str(" }")
            }
            WitType::Enum(names) => write!(f, "enum {{ {} }}", names.join(", ")),
            WitType::Flags(names) => write!(f, "flags {{ {} }}", names.join(", ")),
            WitType::Option(t) => write!(f, "option<{t}>"),
            WitType::Result { ok, err } => match (ok, err) {
                (None, None) => f.write_str("result"),
                (Some(o), None) => write!(f, "result<{o}>"),
                (None, Some(e)) => write!(f, "result<_, {e}>"),
                (Some(o), Some(e)) => write!(f, "result<{o}, {e}>"),
            },
        }
    }
}

fn kind(v: &Val) -> String {
    let s = format!("{v:?}");
    s.split(['(', ' ']).next().unwrap_or("?").to_string()
}

fn mismatch(ty: &WitType, v: &Val) -> CodecError {
    CodecError::Mismatch { expected: ty.name(), found: kind(v) }
}

/// Append `n` as unsigned LEB128 (the integer encoding of this codec and of wasm itself).
pub fn put_uleb(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn put_sleb(n: i64, out: &mut Vec<u8>) {
    put_uleb(((n << 1) ^ (n >> 63)) as u64, out);
}

fn put_len(n: usize, out: &mut Vec<u8>) {
    put_uleb(n as u64, out);
}

fn index_of(names: impl Iterator<Item = impl AsRef<str>>, name: &str, what: &str) -> Result<usize, CodecError> {
    names
        .into_iter()
        .position(|n| n.as_ref() == name)
        .ok_or_else(|| CodecError::Invalid(format!("no {what} named {name:?}")))
}

/// Append the encoding of `v`, which must be of type `ty`. Over 80 lines: one arm per WIT
/// type, in the order of the format's description, so the encoding of each type reads in
/// one place (`decode` mirrors it arm for arm).
pub fn encode(ty: &WitType, v: &Val, out: &mut Vec<u8>) -> Result<(), CodecError> {
    match (ty, v) {
        (WitType::Bool, Val::Bool(b)) => out.push(u8::from(*b)),
        (WitType::S8, Val::S8(n)) => out.push(*n as u8),
        (WitType::U8, Val::U8(n)) => out.push(*n),
        (WitType::S16, Val::S16(n)) => put_sleb(i64::from(*n), out),
        (WitType::U16, Val::U16(n)) => put_uleb(u64::from(*n), out),
        (WitType::S32, Val::S32(n)) => put_sleb(i64::from(*n), out),
        (WitType::U32, Val::U32(n)) => put_uleb(u64::from(*n), out),
        (WitType::S64, Val::S64(n)) => put_sleb(*n, out),
        (WitType::U64, Val::U64(n)) => put_uleb(*n, out),
        (WitType::F32, Val::Float32(f)) => out.extend_from_slice(&f.to_bits().to_le_bytes()),
        (WitType::F64, Val::Float64(f)) => out.extend_from_slice(&f.to_bits().to_le_bytes()),
        (WitType::Char, Val::Char(c)) => put_uleb(u64::from(u32::from(*c)), out),
        (WitType::String, Val::String(s)) => {
            put_len(s.len(), out);
            out.extend_from_slice(s.as_bytes());
        }
        (WitType::List(t), Val::List(items)) => {
            put_len(items.len(), out);
            for item in items {
                encode(t, item, out)?;
            }
        }
        (WitType::FixedList(t, n), Val::FixedLengthList(items) | Val::List(items)) => {
            if items.len() != *n as usize {
                return Err(CodecError::Invalid(format!("fixed-length list of {n} has {} items", items.len())));
            }
            for item in items {
                encode(t, item, out)?;
            }
        }
        (WitType::Map(k, val), Val::Map(entries)) => {
            put_len(entries.len(), out);
            for (key, value) in entries {
                encode(k, key, out)?;
                encode(val, value, out)?;
            }
        }
        (WitType::Record(fields), Val::Record(values)) => {
            if fields.len() != values.len() {
                return Err(mismatch(ty, v));
            }
            for ((name, t), (vname, value)) in fields.iter().zip(values) {
                if name != vname {
                    return Err(CodecError::Invalid(format!("record field {vname:?} where {name:?} was expected")));
                }
                encode(t, value, out)?;
            }
        }
        (WitType::Tuple(types), Val::Tuple(values)) => {
            if types.len() != values.len() {
                return Err(mismatch(ty, v));
            }
            for (t, value) in types.iter().zip(values) {
                encode(t, value, out)?;
            }
        }
        (WitType::Variant(cases), Val::Variant(name, payload)) => {
            let i = index_of(cases.iter().map(|c| &c.0), name, "variant case")?;
            put_len(i, out);
            match (&cases[i].1, payload) {
                (Some(t), Some(p)) => encode(t, p, out)?,
                (None, None) => {}
                _ => {
                    return Err(CodecError::Invalid(format!(
                        "payload of variant case {name:?} does not match its type"
                    )));
                }
            }
        }
        (WitType::Enum(names), Val::Enum(name)) => put_len(index_of(names.iter(), name, "enum case")?, out),
        (WitType::Option(t), Val::Option(o)) => match o {
            None => out.push(0),
            Some(inner) => {
                out.push(1);
                encode(t, inner, out)?;
            }
        },
        (WitType::Result { ok, err }, Val::Result(r)) => {
            let (tag, t, payload) = match r {
                Ok(p) => (0, ok, p),
                Err(p) => (1, err, p),
            };
            out.push(tag);
            match (t, payload) {
                (Some(t), Some(p)) => encode(t, p, out)?,
                (None, None) => {}
                _ => return Err(CodecError::Invalid("result payload does not match its type".into())),
            }
        }
        (WitType::Flags(names), Val::Flags(set)) => {
            let mut bits = vec![0u8; names.len().div_ceil(8)];
            for name in set {
                let i = index_of(names.iter(), name, "flag")?;
                bits[i / 8] |= 1 << (i % 8);
            }
            out.extend_from_slice(&bits);
        }
        (_, Val::Resource(_)) => return Err(CodecError::Unsupported("a resource handle".into())),
        (_, Val::Future(_) | Val::Stream(_) | Val::ErrorContext(_)) => {
            return Err(CodecError::Unsupported(kind(v)));
        }
        _ => return Err(mismatch(ty, v)),
    }
    Ok(())
}

/// Decode one whole value of type `ty`; bytes left over are an error.
pub fn decode_all(ty: &WitType, bytes: &[u8]) -> Result<Val, CodecError> {
    let mut input = bytes;
    let v = decode(ty, &mut input)?;
    if !input.is_empty() {
        return Err(CodecError::TrailingBytes(input.len()));
    }
    Ok(v)
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], CodecError> {
    if input.len() < n {
        return Err(CodecError::Truncated);
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

fn get_uleb(input: &mut &[u8]) -> Result<u64, CodecError> {
    let mut n: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = take(input, 1)?[0];
        n |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            if shift == 63 && b > 1 {
                break;
            }
            return Ok(n);
        }
    }
    Err(CodecError::Invalid("integer longer than 64 bits".into()))
}

fn get_sleb(input: &mut &[u8]) -> Result<i64, CodecError> {
    let z = get_uleb(input)?;
    Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
}

fn narrow<T: TryFrom<i64> + TryFrom<u64>>(what: &str, n: impl TryInto<T>) -> Result<T, CodecError> {
    n.try_into().map_err(|_| CodecError::Invalid(format!("{what} out of range")))
}

const MAX_EMPTY_ITEMS: usize = 1 << 16;

/// A length or count, bounded by what is left of the input (each item takes at least
/// `min_item` bytes), so a forged length cannot make us allocate.
fn get_len(input: &mut &[u8], min_item: usize) -> Result<usize, CodecError> {
    let n = get_uleb(input)?;
    let n = usize::try_from(n).map_err(|_| CodecError::Invalid("length out of range".into()))?;
    // Items that encode to nothing are not bounded by the input: cap their count.
    if min_item == 0 && n > MAX_EMPTY_ITEMS {
        return Err(CodecError::Invalid(format!("{n} zero-sized items; at most {MAX_EMPTY_ITEMS}")));
    }
    if n.saturating_mul(min_item) > input.len() {
        return Err(CodecError::Truncated);
    }
    Ok(n)
}

fn get_index(input: &mut &[u8], count: usize, what: &str) -> Result<usize, CodecError> {
    let i = get_uleb(input)?;
    usize::try_from(i)
        .ok()
        .filter(|i| *i < count)
        .ok_or_else(|| CodecError::Invalid(format!("{what} index {i} out of range")))
}

/// Decode one value of type `ty` from the front of `input`.
pub fn decode(ty: &WitType, input: &mut &[u8]) -> Result<Val, CodecError> {
    Ok(match ty {
        WitType::Bool => match take(input, 1)?[0] {
            0 => Val::Bool(false),
            1 => Val::Bool(true),
            b => return Err(CodecError::Invalid(format!("bool byte {b}"))),
        },
        WitType::S8 => Val::S8(take(input, 1)?[0] as i8),
        WitType::U8 => Val::U8(take(input, 1)?[0]),
        WitType::S16 => Val::S16(narrow("s16", get_sleb(input)?)?),
        WitType::U16 => Val::U16(narrow("u16", get_uleb(input)?)?),
        WitType::S32 => Val::S32(narrow("s32", get_sleb(input)?)?),
        WitType::U32 => Val::U32(narrow("u32", get_uleb(input)?)?),
        WitType::S64 => Val::S64(get_sleb(input)?),
        WitType::U64 => Val::U64(get_uleb(input)?),
        WitType::F32 => Val::Float32(f32::from_bits(u32::from_le_bytes(take(input, 4)?.try_into().expect("4 bytes")))),
        WitType::F64 => Val::Float64(f64::from_bits(u64::from_le_bytes(take(input, 8)?.try_into().expect("8 bytes")))),
        WitType::Char => {
            let n: u32 = narrow("char", get_uleb(input)?)?;
            Val::Char(char::from_u32(n).ok_or_else(|| CodecError::Invalid(format!("{n:#x} is not a char")))?)
        }
        WitType::String => {
            let n = get_len(input, 1)?;
            let s = std::str::from_utf8(take(input, n)?).map_err(|e| CodecError::Invalid(format!("string: {e}")))?;
            Val::String(s.to_string())
        }
        WitType::List(t) => {
            let n = get_len(input, min_size(t))?;
            Val::List((0..n).map(|_| decode(t, input)).collect::<Result<_, _>>()?)
        }
        WitType::FixedList(t, n) => Val::FixedLengthList((0..*n).map(|_| decode(t, input)).collect::<Result<_, _>>()?),
        WitType::Map(k, v) => {
            let n = get_len(input, min_size(k) + min_size(v))?;
            Val::Map((0..n).map(|_| Ok((decode(k, input)?, decode(v, input)?))).collect::<Result<_, _>>()?)
        }
        WitType::Record(fields) => {
            Val::Record(fields.iter().map(|(name, t)| Ok((name.clone(), decode(t, input)?))).collect::<Result<_, _>>()?)
        }
        WitType::Tuple(types) => Val::Tuple(types.iter().map(|t| decode(t, input)).collect::<Result<_, _>>()?),
        WitType::Variant(cases) => {
            let i = get_index(input, cases.len(), "variant case")?;
            let (name, t) = &cases[i];
            let payload = t.as_ref().map(|t| decode(t, input).map(Box::new)).transpose()?;
            Val::Variant(name.clone(), payload)
        }
        WitType::Enum(names) => Val::Enum(names[get_index(input, names.len(), "enum case")?].clone()),
        WitType::Option(t) => match take(input, 1)?[0] {
            0 => Val::Option(None),
            1 => Val::Option(Some(Box::new(decode(t, input)?))),
            b => return Err(CodecError::Invalid(format!("option tag {b}"))),
        },
        WitType::Result { ok, err } => {
            let tag = take(input, 1)?[0];
            let t = match tag {
                0 => ok,
                1 => err,
                b => return Err(CodecError::Invalid(format!("result tag {b}"))),
            };
            let payload = t.as_ref().map(|t| decode(t, input).map(Box::new)).transpose()?;
            Val::Result(if tag == 0 { Ok(payload) } else { Err(payload) })
        }
        WitType::Flags(names) => {
            let bits = take(input, names.len().div_ceil(8))?;
            let set =
                names.iter().enumerate().filter(|(i, _)| bits[i / 8] & (1 << (i % 8)) != 0).map(|(_, n)| n.clone());
            let set: Vec<String> = set.collect();
            let used = bits.iter().map(|b| b.count_ones()).sum::<u32>() as usize;
            if used != set.len() {
                return Err(CodecError::Invalid("flag bits beyond the declared flags".into()));
            }
            Val::Flags(set)
        }
    })
}

/// The fewest bytes any value of `ty` encodes to (for bounding lengths).
fn min_size(ty: &WitType) -> usize {
    match ty {
        WitType::F32 => 4,
        WitType::F64 => 8,
        // Aggregates can be zero-sized (an empty record, tuple or flags).
        WitType::Record(fields) => fields.iter().map(|(_, t)| min_size(t)).sum(),
        WitType::Tuple(types) => types.iter().map(min_size).sum(),
        WitType::FixedList(t, n) => min_size(t).saturating_mul(*n as usize),
        WitType::Flags(names) => names.len().div_ceil(8),
        _ => 1,
    }
}

#[cfg(test)]
mod tests;
