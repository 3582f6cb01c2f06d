//! `{{name}}`: one stage of a pipeline. It upper-cases the body and, when its config names
//! a `next` service, passes the result on with `invoke` and answers what that returned.
//!
//! Deploy two copies to chain them: `nanogrid deploy first target/.../{{crate}}.wasm
//! --config next=second`, then `second` without `next`.

use nanogrid_sdk::{Error, Request, Response, Service, config, invoke};

struct App;

/// This stage's own work.
fn transform(body: &[u8]) -> Vec<u8> {
    body.to_ascii_uppercase()
}

impl Service for App {
    fn handle(req: Request) -> Result<Response, Error> {
        let out = transform(&req.body);
        match config::get("next") {
            Some(next) => invoke::call(&next, &Request::new("POST", "/").with_body(out)),
            None => Ok(Response::new(200, out)),
        }
    }
}

nanogrid_sdk::export!(App);

#[cfg(test)]
mod tests {
    #[test]
    fn upper_cases() {
        assert_eq!(super::transform(b"abc"), b"ABC");
    }
}
