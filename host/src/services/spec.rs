//! Service specs: the types and request checks live in `nanogrid_wire::spec` (fuzzed there).

pub use nanogrid_wire::spec::*;
