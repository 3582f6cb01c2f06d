//! Fan out and finish: a durable barrier collects the answers and resumes the service.
//!
//! ```no_run
//! use nanogrid_sdk::{barrier, Error, Request, Response};
//!
//! fn handle(req: Request) -> Result<Response, Error> {
//!     if let Some(id) = barrier::id(&req) {
//!         // The continuation: every call has answered.
//!         let answers = barrier::results(id)?;
//!         let ok = answers.iter().filter(|a| a.as_ref().is_ok_and(|r| r.is_success())).count();
//!         return Ok(Response::text(200, format!("{ok} of {} answered", answers.len())));
//!     }
//!     let calls = vec![("a".to_string(), Request::get("/")), ("b".to_string(), Request::get("/"))];
//!     let id = barrier::fan_out(&calls, &Request::new("POST", "/resume").with_body("my state"))?;
//!     Ok(Response::text(202, id))
//! }
//! # fn main() {}
//! ```

use crate::bindings::nanogrid::service::barrier as wit;
use crate::{Error, Request, Response};

/// The header a continuation arrives with; its value is the barrier id.
pub const HEADER: &str = "x-nanogrid-barrier";

/// Start `calls` concurrently and return the barrier's id at once; the current request
/// can finish. When every call has answered, `then` is sent to this service with the
/// header [`HEADER`]; put what the continuation needs in `then`'s body. The barrier lives
/// in the grid: if its node stops, calls that had not answered are sent again and `then`
/// still runs (at least once).
pub fn fan_out(calls: &[(String, Request)], then: &Request) -> Result<String, Error> {
    wit::fan_out(calls, then)
}

/// The barrier that resumed this request, if it is a continuation.
pub fn id(req: &Request) -> Option<&str> {
    req.header(HEADER)
}

/// The answers of one of this service's barriers, in the order of its calls.
pub fn results(id: &str) -> Result<Vec<Result<Response, Error>>, Error> {
    wit::results(id)
}
