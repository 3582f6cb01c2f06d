//! `{{name}}`: a nanoservice. `GET /{{name}}/anything?name=Ada` greets Ada.
//!
//! Build with `nanogrid build`, try it with `nanogrid dev` (see README.md).

use nanogrid_sdk::{Error, Request, Response, Service, config, log};

struct App;

/// The answer, apart from the platform calls, so `cargo test` can check it on the host.
fn greet(greeting: &str, name: &str, path: &str) -> String {
    format!("{greeting}, {name}! you asked for {path}\n")
}

impl Service for App {
    fn handle(req: Request) -> Result<Response, Error> {
        let name = req.query_param("name").unwrap_or("world");
        let greeting = config::get_or("greeting", "hello");
        log::info(&format!("greeting {name}"));
        Ok(Response::text(200, greet(&greeting, name, &req.path)))
    }
}

nanogrid_sdk::export!(App);

#[cfg(test)]
mod tests {
    #[test]
    fn greets_by_name() {
        assert_eq!(super::greet("hello", "Ada", "/x"), "hello, Ada! you asked for /x\n");
    }
}
