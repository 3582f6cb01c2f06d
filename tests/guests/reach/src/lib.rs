//! Test fixture: tries to reach outside the sandbox and reports what happened.
//!
//! - `/connect/{ip:port}`: opens a TCP connection, writes "ping", reads the answer
//! - `/read/{path}`: reads a file (path relative to `/`, e.g. `/read/data/a.txt`)
//! - `/env/{name}`: reads an environment variable
//!
//! Success is 200 with what was read; a refusal is 403 with the error text.

use std::io::{Read, Write};

use nanogrid_sdk::{Error, Request, Response, Service};

struct Reach;

fn refused(what: &str, e: impl std::fmt::Display) -> Result<Response, Error> {
    Ok(Response::text(403, format!("{what}: {e}")))
}

impl Service for Reach {
    fn handle(req: Request) -> Result<Response, Error> {
        let route = req.route().to_string();
        let rest = route.trim_start_matches('/');
        let (op, arg) = rest.split_once('/').unwrap_or((rest, ""));
        match op {
            "connect" => match std::net::TcpStream::connect(arg) {
                Ok(mut s) => {
                    s.write_all(b"ping").map_err(|e| Error::internal(e.to_string()))?;
                    let mut buf = [0u8; 64];
                    let n = s.read(&mut buf).map_err(|e| Error::internal(e.to_string()))?;
                    Ok(Response::text(200, String::from_utf8_lossy(&buf[..n]).into_owned()))
                }
                Err(e) => refused("connect", e),
            },
            "read" => match std::fs::read_to_string(format!("/{arg}")) {
                Ok(text) => Ok(Response::text(200, text)),
                Err(e) => refused("read", e),
            },
            "env" => match std::env::var(arg) {
                Ok(v) => Ok(Response::text(200, v)),
                Err(e) => refused("env", e),
            },
            _ => Err(Error::not_found(format!("no route {route}"))),
        }
    }
}

nanogrid_sdk::export!(Reach);
