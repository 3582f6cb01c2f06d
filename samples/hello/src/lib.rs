//! `hello`: greets, and echoes the path and body it was sent.
//!
//! `GET /hello/world?name=Ada` → `hello, Ada! you asked for /world?name=Ada`.
//! With a body, the body is echoed after the greeting.

use nanogrid_sdk::{Error, Request, Response, Service, config};

struct Hello;

impl Service for Hello {
    fn handle(req: Request) -> Result<Response, Error> {
        let name = req.query_param("name").unwrap_or("world");
        let greeting = config::get_or("greeting", "hello");
        let mut text = format!("{greeting}, {name}! you asked for {} {}\n", req.method, req.path);
        if !req.body.is_empty() {
            text.push_str("you sent: ");
            text.push_str(&String::from_utf8_lossy(&req.body));
            text.push('\n');
        }
        Ok(Response::text(200, text))
    }
}

nanogrid_sdk::export!(Hello);
