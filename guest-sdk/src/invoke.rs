//! Call other services by name. On the same node the call runs in-process; the request id
//! travels with it.

use serde::Serialize;

use crate::bindings::nanogrid::service::invoke as wit;
use crate::{Error, Request, Response};

/// Send `req` to `service` and wait for its response. An error status from the callee is
/// an `Ok` response; `Err` means the call itself failed (unknown service, overload, …).
pub fn call(service: &str, req: &Request) -> Result<Response, Error> {
    wit::call(service, req)
}

/// `GET path` on `service`.
pub fn get(service: &str, path: &str) -> Result<Response, Error> {
    call(service, &Request::get(path))
}

/// `POST path` on `service` with a JSON body.
pub fn post_json<T: Serialize>(service: &str, path: &str, value: &T) -> Result<Response, Error> {
    call(service, &Request::post_json(path, value)?)
}

/// Run several calls concurrently; the results are in the order of `calls`.
pub fn call_all(calls: &[(String, Request)]) -> Vec<Result<Response, Error>> {
    wit::call_all(calls)
}
