//! W3C Trace Context: the `traceparent` header (`00-{trace id}-{parent span id}-{flags}`)
//! parsed and written, and new ids.

use std::fmt;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
/// [`TRACEPARENT`] as a header name: inserting one made from a `&str` copies the name
/// into a new allocation every time, this one is shared.
pub static TRACEPARENT_NAME: http::HeaderName = http::HeaderName::from_static(TRACEPARENT);

/// A trace id (16 bytes, never all zero).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(pub u128);

/// A span id (8 bytes, never all zero).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(pub u64);

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl TraceId {
    pub fn random() -> TraceId {
        loop {
            let id = u128::from_le_bytes(random_bytes());
            if id != 0 {
                return TraceId(id);
            }
        }
    }

    /// The 32 lower-case hex digits, without `format!` (an `x-trace-id` on every
    /// response).
    pub fn hex(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out[..16].copy_from_slice(&hex_u64((self.0 >> 64) as u64));
        out[16..].copy_from_slice(&hex_u64(self.0 as u64));
        out
    }

    /// 32 lower-case hex digits, not all zero.
    pub fn parse(s: &str) -> Option<TraceId> {
        (s.len() == 32 && is_lower_hex(s))
            .then(|| u128::from_str_radix(s, 16).ok())
            .flatten()
            .filter(|v| *v != 0)
            .map(TraceId)
    }
}

impl SpanId {
    pub fn random() -> SpanId {
        loop {
            let b: [u8; 16] = random_bytes();
            let id = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
            if id != 0 {
                return SpanId(id);
            }
        }
    }

    pub fn parse(s: &str) -> Option<SpanId> {
        (s.len() == 16 && is_lower_hex(s))
            .then(|| u64::from_str_radix(s, 16).ok())
            .flatten()
            .filter(|v| *v != 0)
            .map(SpanId)
    }
}

/// `v` as 16 lower-case hex digits (zero-padded).
pub fn hex_u64(v: u64) -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = HEX[(v >> (60 - 4 * i)) as usize & 0xf];
    }
    out
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Ids need to be unique, not secret: a fast per-thread generator seeded from the OS.
fn random_bytes() -> [u8; 16] {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut seed = [0u8; 8];
            let _ = getrandom::fill(&mut seed);
            u64::from_le_bytes(seed) | 1
        });
    }
    // splitmix64, twice.
    let next = || {
        STATE.with(|s| {
            let mut z = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
            s.set(z);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
    };
    let (a, b) = (next(), next());
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_le_bytes());
    out[8..].copy_from_slice(&b.to_le_bytes());
    out
}

/// Where a span sits in its trace: the trace, this span, and whether it is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

impl SpanContext {
    /// `traceparent`, version 00. Unknown higher versions are read by their first four
    /// fields, as the specification asks; version `ff` and malformed values are refused.
    pub fn parse(value: &str) -> Option<SpanContext> {
        let value = value.trim();
        let mut parts = value.split('-');
        let version = parts.next()?;
        if version.len() != 2 || !is_lower_hex(version) || version == "ff" {
            return None;
        }
        let trace_id = TraceId::parse(parts.next()?)?;
        let span_id = SpanId::parse(parts.next()?)?;
        let flags = parts.next()?;
        if flags.len() != 2 || !is_lower_hex(flags) {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(SpanContext { trace_id, span_id, sampled: flags & 1 == 1 })
    }

    pub fn header(&self) -> String {
        // The bytes are ASCII hex digits and dashes.
        std::str::from_utf8(&self.header_bytes()).expect("hex digits and dashes").to_owned()
    }

    /// `traceparent` as an HTTP header value. Written by hand: every request on every
    /// hop writes one, sampled or not, and `format!` took several times as long.
    pub fn header_value(&self) -> http::HeaderValue {
        http::HeaderValue::from_bytes(&self.header_bytes()).expect("hex digits and dashes are a valid header value")
    }

    fn header_bytes(&self) -> [u8; 55] {
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        out[3..35].copy_from_slice(&self.trace_id.hex());
        out[36..52].copy_from_slice(&hex_u64(self.span_id.0));
        out[54] = b'0' + self.sampled as u8;
        out
    }

    /// A new span of the same trace under this one.
    pub fn child(&self) -> SpanContext {
        SpanContext { span_id: SpanId::random(), ..*self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_bad_values_are_refused() {
        let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let c = SpanContext::parse(v).unwrap();
        assert!(c.sampled);
        assert_eq!(c.header(), v);
        assert_eq!(c.header_value(), v);
        // Written by hand: the same digits as the formatter's, for any ids and either flag.
        for _ in 0..100 {
            let c = SpanContext { trace_id: TraceId::random(), span_id: SpanId::random(), sampled: false };
            assert_eq!(c.header(), format!("00-{}-{}-00", c.trace_id, c.span_id));
            assert_eq!(SpanContext::parse(&c.header()), Some(c));
            assert_eq!(std::str::from_utf8(&c.trace_id.hex()).unwrap(), c.trace_id.to_string());
        }
        assert_eq!(&TraceId(1).hex(), b"00000000000000000000000000000001");
        assert!(!SpanContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().sampled);
        // A later version with more fields is read by its first four.
        assert!(SpanContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_some());
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
            "",
        ] {
            assert_eq!(SpanContext::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn children_keep_the_trace_and_get_new_span_ids() {
        let root = SpanContext { trace_id: TraceId::random(), span_id: SpanId::random(), sampled: true };
        let a = root.child();
        let b = root.child();
        assert_eq!(a.trace_id, root.trace_id);
        assert!(a.span_id != b.span_id && a.span_id != root.span_id);
    }
}
