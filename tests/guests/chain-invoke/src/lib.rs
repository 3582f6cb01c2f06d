//! One stage of the benchmark chain done with name-based `invoke.call` instead of typed
//! imports. Config: `stage` (its number) and `next` (the service to call, if any). The
//! first stage takes the request body as `input`; later stages get the fields as JSON.

use nanogrid_sdk::{Error, Request, Response, Service, config, invoke};
use serde_json::{Map, Value};

struct Stage;

impl Service for Stage {
    fn handle(req: Request) -> Result<Response, Error> {
        let stage = config::get_or("stage", "1");
        let mut fields: Map<String, Value> = if stage == "1" {
            let mut m = Map::new();
            m.insert("input".into(), String::from_utf8_lossy(&req.body).into_owned().into());
            m
        } else {
            req.json()?
        };
        fields.insert(format!("stage-{stage}"), "ok".into());
        match config::get("next") {
            Some(next) => invoke::post_json(&next, "/", &fields),
            None => Response::json(200, &fields),
        }
    }
}

nanogrid_sdk::export!(Stage);
