use proptest::prelude::*;
use wasmtime::component::Val;

use super::*;

/// Equality that treats floats bit for bit (NaN payloads included).
fn same(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Val::Float32(x), Val::Float32(y)) => x.to_bits() == y.to_bits(),
        (Val::Float64(x), Val::Float64(y)) => x.to_bits() == y.to_bits(),
        (Val::List(x), Val::List(y))
        | (Val::Tuple(x), Val::Tuple(y))
        | (Val::FixedLengthList(x), Val::FixedLengthList(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Val::Map(x), Val::Map(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|((k1, v1), (k2, v2))| same(k1, k2) && same(v1, v2))
        }
        (Val::Record(x), Val::Record(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|((n1, a), (n2, b))| n1 == n2 && same(a, b))
        }
        (Val::Variant(n1, a), Val::Variant(n2, b)) => n1 == n2 && opt_same(a, b),
        (Val::Option(a), Val::Option(b)) => opt_same(a, b),
        (Val::Result(Ok(a)), Val::Result(Ok(b))) | (Val::Result(Err(a)), Val::Result(Err(b))) => opt_same(a, b),
        _ => a == b,
    }
}

fn opt_same(a: &Option<Box<Val>>, b: &Option<Box<Val>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same(a, b),
        (None, None) => true,
        _ => false,
    }
}

fn names(prefix: &'static str, max: usize) -> impl Strategy<Value = Vec<String>> {
    (1..=max).prop_map(move |n| (0..n).map(|i| format!("{prefix}{i}")).collect())
}

fn arb_type() -> impl Strategy<Value = WitType> {
    let leaf = prop_oneof![
        Just(WitType::Bool),
        Just(WitType::S8),
        Just(WitType::U8),
        Just(WitType::S16),
        Just(WitType::U16),
        Just(WitType::S32),
        Just(WitType::U32),
        Just(WitType::S64),
        Just(WitType::U64),
        Just(WitType::F32),
        Just(WitType::F64),
        Just(WitType::Char),
        Just(WitType::String),
        names("e", 5).prop_map(WitType::Enum),
        names("f", 12).prop_map(WitType::Flags),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|t| WitType::List(Box::new(t))),
            (inner.clone(), 0..4u32).prop_map(|(t, n)| WitType::FixedList(Box::new(t), n)),
            (inner.clone(), inner.clone()).prop_map(|(k, v)| WitType::Map(Box::new(k), Box::new(v))),
            prop::collection::vec(inner.clone(), 0..4).prop_map(|ts| WitType::Record(
                ts.into_iter().enumerate().map(|(i, t)| (format!("field{i}"), t)).collect()
            )),
            prop::collection::vec(inner.clone(), 0..4).prop_map(WitType::Tuple),
            prop::collection::vec(prop::option::of(inner.clone()), 1..4).prop_map(|cs| WitType::Variant(
                cs.into_iter().enumerate().map(|(i, t)| (format!("case{i}"), t)).collect()
            )),
            inner.clone().prop_map(|t| WitType::Option(Box::new(t))),
            (prop::option::of(inner.clone()), prop::option::of(inner))
                .prop_map(|(ok, err)| WitType::Result { ok: ok.map(Box::new), err: err.map(Box::new) }),
        ]
    })
}

fn arb_val(ty: &WitType) -> BoxedStrategy<Val> {
    match ty {
        WitType::Bool => any::<bool>().prop_map(Val::Bool).boxed(),
        WitType::S8 => any::<i8>().prop_map(Val::S8).boxed(),
        WitType::U8 => any::<u8>().prop_map(Val::U8).boxed(),
        WitType::S16 => any::<i16>().prop_map(Val::S16).boxed(),
        WitType::U16 => any::<u16>().prop_map(Val::U16).boxed(),
        WitType::S32 => any::<i32>().prop_map(Val::S32).boxed(),
        WitType::U32 => any::<u32>().prop_map(Val::U32).boxed(),
        WitType::S64 => any::<i64>().prop_map(Val::S64).boxed(),
        WitType::U64 => any::<u64>().prop_map(Val::U64).boxed(),
        WitType::F32 => any::<u32>().prop_map(|b| Val::Float32(f32::from_bits(b))).boxed(),
        WitType::F64 => any::<u64>().prop_map(|b| Val::Float64(f64::from_bits(b))).boxed(),
        WitType::Char => any::<char>().prop_map(Val::Char).boxed(),
        WitType::String => "\\PC{0,16}".prop_map(Val::String).boxed(),
        WitType::List(t) => prop::collection::vec(arb_val(t), 0..4).prop_map(Val::List).boxed(),
        WitType::FixedList(t, n) => {
            prop::collection::vec(arb_val(t), *n as usize).prop_map(Val::FixedLengthList).boxed()
        }
        WitType::Map(k, v) => prop::collection::vec((arb_val(k), arb_val(v)), 0..3).prop_map(Val::Map).boxed(),
        WitType::Record(fields) => {
            let names: Vec<String> = fields.iter().map(|(n, _)| n.clone()).collect();
            let vals: Vec<BoxedStrategy<Val>> = fields.iter().map(|(_, t)| arb_val(t)).collect();
            vals.prop_map(move |vs| Val::Record(names.iter().cloned().zip(vs).collect())).boxed()
        }
        WitType::Tuple(types) => types.iter().map(arb_val).collect::<Vec<_>>().prop_map(Val::Tuple).boxed(),
        WitType::Variant(cases) => {
            let options: Vec<BoxedStrategy<Val>> = cases
                .iter()
                .map(|(name, t)| {
                    let name = name.clone();
                    match t {
                        Some(t) => arb_val(t).prop_map(move |v| Val::Variant(name.clone(), Some(Box::new(v)))).boxed(),
                        None => Just(Val::Variant(name, None)).boxed(),
                    }
                })
                .collect();
            prop::strategy::Union::new(options).boxed()
        }
        WitType::Enum(names) => prop::sample::select(names.clone()).prop_map(Val::Enum).boxed(),
        WitType::Option(t) => prop::option::of(arb_val(t)).prop_map(|o| Val::Option(o.map(Box::new))).boxed(),
        WitType::Result { ok, err } => {
            let side = |t: &Option<Box<WitType>>| match t {
                Some(t) => arb_val(t).prop_map(|v| Some(Box::new(v))).boxed(),
                None => Just(None).boxed(),
            };
            prop_oneof![side(ok).prop_map(|p| Val::Result(Ok(p))), side(err).prop_map(|p| Val::Result(Err(p)))].boxed()
        }
        WitType::Flags(names) => prop::sample::subsequence(names.clone(), 0..=names.len()).prop_map(Val::Flags).boxed(),
    }
}

fn typed_value() -> impl Strategy<Value = (WitType, Val)> {
    arb_type().prop_flat_map(|t| {
        let v = arb_val(&t);
        (Just(t), v)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn round_trips((ty, v) in typed_value()) {
        let mut bytes = Vec::new();
        encode(&ty, &v, &mut bytes).unwrap();
        let back = decode_all(&ty, &bytes).unwrap();
        prop_assert!(same(&v, &back), "{v:?} came back as {back:?}");
        // The type itself travels too.
        let json = serde_json::to_string(&ty).unwrap();
        prop_assert_eq!(serde_json::from_str::<WitType>(&json).unwrap(), ty);
    }

    #[test]
    fn truncated_or_corrupt_input_is_an_error_not_a_panic((ty, v) in typed_value(), cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>()) {
        let mut bytes = Vec::new();
        encode(&ty, &v, &mut bytes).unwrap();
        if !bytes.is_empty() {
            let short = &bytes[..cut.index(bytes.len())];
            prop_assert!(decode_all(&ty, short).is_err());
            let mut bad = bytes.clone();
            let i = flip.0.index(bad.len());
            bad[i] ^= flip.1 | 1;
            let _ = decode_all(&ty, &bad);
        }
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert_eq!(decode_all(&ty, &longer), Err(CodecError::TrailingBytes(1)));
    }
}

#[test]
fn wrong_values_are_named() {
    let mut out = Vec::new();
    let err = encode(&WitType::U32, &Val::String("x".into()), &mut out).unwrap_err();
    assert!(matches!(err, CodecError::Mismatch { .. }), "{err}");
    let err = encode(&WitType::Enum(vec!["a".into()]), &Val::Enum("b".into()), &mut out).unwrap_err();
    assert!(err.to_string().contains("\"b\""), "{err}");
}

#[test]
fn forged_lengths_do_not_allocate() {
    // A list claiming 2^60 items in a few bytes.
    let mut bytes = Vec::new();
    put_uleb(1 << 60, &mut bytes);
    assert_eq!(decode_all(&WitType::List(Box::new(WitType::U8)), &bytes), Err(CodecError::Truncated));
    let empty = WitType::List(Box::new(WitType::Tuple(vec![])));
    assert!(matches!(decode_all(&empty, &bytes), Err(CodecError::Invalid(_))));
}
