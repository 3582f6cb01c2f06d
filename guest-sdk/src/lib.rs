//! Write nanogrid nanoservices in a few lines of Rust.
//!
//! A nanoservice is a WebAssembly component of the `nanogrid:service/nanoservice` world
//! (see `wit/service.wit`), built for `wasm32-wasip2`. This crate wraps the generated
//! bindings in a small API:
//!
//! - [`Service`]: implement `handle` and pass the type to [`export!`].
//! - [`Request`] / [`Response`]: HTTP-shaped values with text and JSON helpers.
//! - [`kv`]: state in the service's own namespace; [`invoke`]: call other services;
//!   [`barrier`]: fan out, finish, and be resumed when every answer is in;
//!   [`log`], [`config`], [`context`]: the rest of the platform.
//! - [`Error`]: what platform calls return; `?` turns it into an error response with the
//!   matching status (`not-found` → 404, `invalid` → 400, `unavailable` → 503, …).
//!
//! # Example
//!
//! A complete service that counts visits per path (this is `samples/counter` in short):
//!
//! ```no_run,standalone_crate
//! use nanogrid_sdk::{kv, Error, Request, Response, Service};
//!
//! struct Visits;
//!
//! impl Service for Visits {
//!     fn handle(req: Request) -> Result<Response, Error> {
//!         let key = format!("visits:{}", req.route());
//!         let n = kv::get_json::<u64>(&key)?.unwrap_or(0) + 1;
//!         kv::set_json(&key, &n)?;
//!         nanogrid_sdk::log::info(&format!("{key} is now {n}"));
//!         Response::json(200, &serde_json::json!({ "key": key, "visits": n }))
//!     }
//! }
//!
//! nanogrid_sdk::export!(Visits);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` and deploy the `.wasm` file
//! with `nanogrid deploy target/wasm32-wasip2/release/visits.wasm --name visits`.

#![warn(missing_docs)]

// Lets the generated code and the `export!` macro name this crate the same way from inside
// and from a guest crate.
extern crate self as nanogrid_sdk;

mod error;
mod message;

pub mod barrier;
pub mod config;
pub mod context;
pub mod invoke;
pub mod kv;
pub mod log;

pub use error::Error;
pub use message::{Request, Response};

/// Raw bindings generated from `wit/service.wit`. Prefer the wrappers in this crate.
#[doc(hidden)]
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "nanoservice",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_nanoservice",
        default_bindings_module: "nanogrid_sdk::bindings",
        runtime_path: "nanogrid_sdk::__private::wit_bindgen::rt",
        generate_all,
    });
}

/// A nanoservice: one function from request to response.
///
/// Each request runs in a fresh instance, so statics do not carry state from one request
/// to the next; keep state in [`kv`]. (A service deployed with `"reuse"` runs several
/// requests in one instance: its statics then carry over, so never rely on them either
/// way.)
///
/// # Example
///
/// ```no_run,standalone_crate
/// use nanogrid_sdk::{Error, Request, Response, Service};
///
/// struct Hello;
///
/// impl Service for Hello {
///     fn handle(req: Request) -> Result<Response, Error> {
///         match (req.method.as_str(), req.route()) {
///             ("GET", "/") => Ok(Response::text(200, "hello\n")),
///             (method, route) => Err(Error::not_found(format!("no route {method} {route}"))),
///         }
///     }
/// }
///
/// nanogrid_sdk::export!(Hello);
/// # fn main() {}
/// ```
pub trait Service {
    /// Handle one request. An `Err` becomes a JSON error response
    /// `{"error":{"code":…,"message":…}}` with the status that matches the error.
    ///
    /// # Example
    ///
    /// ```
    /// use nanogrid_sdk::{Error, Request, Response, Service};
    ///
    /// struct Shout;
    ///
    /// impl Service for Shout {
    ///     fn handle(req: Request) -> Result<Response, Error> {
    ///         Ok(Response::text(200, req.text()?.to_uppercase()))
    ///     }
    /// }
    ///
    /// // `handle` is a plain function: call it directly in a unit test.
    /// let resp = Shout::handle(Request::new("POST", "/").with_body("hi")).unwrap();
    /// assert_eq!(resp.text_body().unwrap(), "HI");
    /// ```
    fn handle(req: Request) -> Result<Response, Error>;
}

/// Export a [`Service`] implementation as this component's handler. Use it once per
/// crate, at the top level; the crate must be a `cdylib` built for `wasm32-wasip2`.
///
/// # Example
///
/// ```no_run,standalone_crate
/// use nanogrid_sdk::{Error, Request, Response, Service};
///
/// struct MyService;
///
/// impl Service for MyService {
///     fn handle(_req: Request) -> Result<Response, Error> {
///         Ok(Response::text(200, "hi"))
///     }
/// }
///
/// nanogrid_sdk::export!(MyService);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export {
    ($service:ty) => {
        const _: () = {
            struct NanogridHandler;
            impl $crate::bindings::exports::nanogrid::service::handler::Guest for NanogridHandler {
                fn handle(req: $crate::Request) -> $crate::Response {
                    $crate::__private::dispatch::<$service>(req)
                }
            }
    $crate::bindings::__export_nanoservice!(NanogridHandler with_types_in $crate::bindings);
        };
    };
}

#[doc(hidden)]
#[allow(missing_docs)]
pub mod __private {
    pub use wit_bindgen;

    use crate::{Request, Response, Service};

    pub fn dispatch<S: Service>(req: Request) -> Response {
        match S::handle(req) {
            Ok(resp) => resp,
            Err(err) => Response::from_error(&err),
        }
    }
}
