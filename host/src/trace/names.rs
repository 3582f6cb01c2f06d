//! The names spans carry (`run hello`, `hello`, the node's), interned once per process
//! and read without a lock or an atomic.
//!
//! Every sampled request records a few spans, each naming itself, its service and its
//! node. Shared `Arc<str>` names cost an atomic increment when a span is made and a
//! decrement when the ring drops it, on a cache line every core writes; with a lock around
//! the name table that was the larger part of tracing's cost per request. Here a name is
//! interned for the life of the process (a bounded table of short names: a guest or a
//! client inventing names can fill it, and spans past that, or with a name too long to
//! keep, carry their own copy), and each thread keeps its own index to the interned
//! names, so a span whose names are known takes no lock and touches no shared line (a
//! name not interned takes the table's lock each time).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A span's name, service or node: interned, or its own.
#[derive(Clone)]
pub enum Name {
    Interned(&'static str),
    Own(Arc<str>),
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            Name::Interned(s) => s,
            Name::Own(s) => s,
        }
    }
}

/// Names compare by content, whichever way they are kept.
impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        **self == **other
    }
}

impl Eq for Name {}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Name {
        Name::Own(s.into())
    }
}

impl From<String> for Name {
    fn from(s: String) -> Name {
        Name::Own(s.into())
    }
}

impl From<Arc<str>> for Name {
    fn from(s: Arc<str>) -> Name {
        Name::Own(s)
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
        Ok(Name::Own(String::deserialize(d)?.into()))
    }
}

/// Distinct names the process interns (service, span and node names).
const MAX_INTERNED: usize = 65_536;
/// The longest name interned (a service name is at most 63 bytes, a span name adds its
/// prefix). Longer ones, which only made-up requests carry, are never kept: with both
/// bounds the table stays under ~8 MiB however names are invented.
const MAX_LEN: usize = 96;

/// Strings kept for the life of the process: at most `limit` of them, none longer than
/// `max_len` bytes.
pub(crate) struct Interner {
    set: HashSet<&'static str>,
    limit: usize,
    max_len: usize,
}

impl Interner {
    pub(crate) fn new(limit: usize, max_len: usize) -> Interner {
        Interner { set: HashSet::new(), limit, max_len }
    }

    /// `s`, interned (`None` when it is too long or the table is full).
    pub(crate) fn intern(&mut self, s: &str) -> Option<&'static str> {
        if s.len() > self.max_len {
            return None;
        }
        if let Some(&k) = self.set.get(s) {
            return Some(k);
        }
        if self.set.len() >= self.limit {
            return None;
        }
        // Bounded by `limit` and `max_len`: the leak is the point (names live as long as
        // the process).
        let k: &'static str = Box::leak(s.into());
        self.set.insert(k);
        Some(k)
    }
}

static GLOBAL: LazyLock<Mutex<Interner>> = LazyLock::new(|| Mutex::new(Interner::new(MAX_INTERNED, MAX_LEN)));

fn intern_global(s: &str) -> Option<&'static str> {
    GLOBAL.lock().unwrap_or_else(|e| e.into_inner()).intern(s)
}

/// A thread's index to interned names: per subject, its name and its span names (keyed
/// by the interned subject itself, so the index holds no copies).
#[derive(Default)]
struct Local {
    subjects: HashMap<&'static str, Subject>,
}

struct Subject {
    name: &'static str,
    /// `(prefix, "{prefix} {subject}")`, a handful per subject.
    spans: Vec<(&'static str, &'static str)>,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::default();
}

/// `subject`'s interned entry in this thread's index (made on first use).
fn with_subject<R>(subject: &str, f: impl FnOnce(Option<&mut Subject>) -> R) -> R {
    LOCAL.with(|local| {
        let mut local = local.borrow_mut();
        // One lookup for a known subject: this runs for every span.
        if let Some(e) = local.subjects.get_mut(subject) {
            return f(Some(e));
        }
        match intern_global(subject) {
            Some(name) => f(Some(local.subjects.entry(name).or_insert(Subject { name, spans: Vec::new() }))),
            None => f(None),
        }
    })
}

/// `s` as a span's name, service or node.
pub fn name(s: &str) -> Name {
    with_subject(s, |e| e.map_or_else(|| Name::from(s), |e| Name::Interned(e.name)))
}

/// The span name `"{prefix} {subject}"` and `subject`'s own name.
pub fn span_name(prefix: &'static str, subject: &str) -> (Name, Name) {
    with_subject(subject, |e| {
        let Some(e) = e else { return (Name::from(format!("{prefix} {subject}")), Name::from(subject)) };
        if let Some((_, n)) = e.spans.iter().find(|(p, _)| *p == prefix) {
            return (Name::Interned(n), Name::Interned(e.name));
        }
        let built = format!("{prefix} {subject}");
        match intern_global(&built) {
            Some(n) => {
                e.spans.push((prefix, n));
                (Name::Interned(n), Name::Interned(e.name))
            }
            None => (Name::from(built), Name::Interned(e.name)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_interned_once_and_read_from_any_thread() {
        let (a, s) = span_name("run", "names-test-svc");
        let (b, _) = span_name("run", "names-test-svc");
        let (Name::Interned(a), Name::Interned(b), Name::Interned(s)) = (a, b, s) else { panic!("not interned") };
        assert_eq!((a, s), ("run names-test-svc", "names-test-svc"));
        assert!(std::ptr::eq(a, b), "the same name, not a copy");
        let other = std::thread::spawn(|| match span_name("run", "names-test-svc").0 {
            Name::Interned(n) => n as *const str as *const u8 as usize,
            Name::Own(_) => 0,
        })
        .join()
        .unwrap();
        assert_eq!(other, a as *const str as *const u8 as usize, "another thread finds the same interned name");
        assert_eq!(&*name("names-test-svc"), "names-test-svc");
        // A name too long to intern (a made-up path) is a copy, and no table grows.
        let long = "x".repeat(MAX_LEN + 1);
        assert!(matches!(name(&long), Name::Own(_)));
        assert!(matches!(span_name("ingress", &long), (Name::Own(_), Name::Own(_))));
        assert!(!LOCAL.with(|l| l.borrow().subjects.contains_key(long.as_str())));
    }

    #[test]
    fn the_table_is_bounded_and_past_it_names_are_copies() {
        let mut t = Interner::new(3, 8);
        assert_eq!(t.intern("123456789"), None, "too long to keep");
        let a = t.intern("a").unwrap();
        assert!(std::ptr::eq(a, t.intern("a").unwrap()));
        t.intern("b").unwrap();
        t.intern("c").unwrap();
        assert_eq!(t.intern("d"), None, "full");
        assert!(t.intern("b").is_some(), "what is in stays readable");
        assert_eq!(serde_json::to_value(Name::from("x")).unwrap(), "x");
        assert_eq!(serde_json::from_value::<Name>("y".into()).unwrap(), Name::from("y"));
    }
}
