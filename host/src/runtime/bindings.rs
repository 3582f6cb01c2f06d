//! The one host-side `bindgen!` of the `nanogrid:service` package. Generated code stays
//! here; the hand-written host imports live in `imports.rs`.
//!
//! Every import is `trappable`: its outer `wasmtime::Result` is a trap or host bug, the
//! inner `Result` (where the WIT function has one) is the `error` the guest can handle.

wasmtime::component::bindgen!({
    world: "nanoservice",
    path: "../wit",
    imports: {
        "nanogrid:service/log": trappable,
        "nanogrid:service/config": trappable,
        "nanogrid:service/context": trappable,
        default: async | trappable,
    },
    exports: { default: async },
});

pub use self::nanogrid::service::types::{Error as GuestError, Request, Response};
