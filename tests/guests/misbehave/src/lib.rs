//! Test fixture: misbehaves in the way the path asks.
//!
//! - `/trap`: panics (a wasm trap)
//! - `/sleep/{ms}`: sleeps, then answers (holds an instance slot)
//! - `/loop`: spins forever
//! - `/alloc/{mib}`: allocates and touches that much memory
//! - `/kv-trap`: writes a key, then traps
//! - `/recurse`: calls itself through `invoke` until the platform refuses
//! - anything else: 200 "ok"

use nanogrid_sdk::{Error, Request, Response, Service, context, invoke, kv};

struct Misbehave;

impl Service for Misbehave {
    fn handle(req: Request) -> Result<Response, Error> {
        let route = req.route().to_string();
        let mut parts = route.trim_matches('/').split('/');
        match (parts.next(), parts.next()) {
            (Some("trap"), _) => panic!("misbehave was asked to trap"),
            (Some("sleep"), Some(ms)) => {
                let ms: u64 = ms.parse().map_err(|_| Error::invalid("sleep/{ms}"))?;
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Ok(Response::text(200, format!("slept {ms}ms")))
            }
            (Some("loop"), _) => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            (Some("alloc"), Some(mib)) => {
                let mib: usize = mib.parse().map_err(|_| Error::invalid("alloc/{mib}"))?;
                let mut v: Vec<u8> = Vec::new();
                v.try_reserve_exact(mib << 20).map_err(|e| Error::internal(format!("allocation failed: {e}")))?;
                v.resize(mib << 20, 1);
                Ok(Response::text(200, format!("allocated {} bytes", v.len())))
            }
            (Some("kv-trap"), _) => {
                kv::set("before-trap", b"written")?;
                panic!("trapped after a kv write");
            }
            (Some("recurse"), _) => {
                // The callee's answer (or the platform's refusal) is passed back up as is.
                invoke::get(&context::service_name(), "/recurse")
            }
            _ => Ok(Response::text(200, "ok")),
        }
    }
}

nanogrid_sdk::export!(Misbehave);
