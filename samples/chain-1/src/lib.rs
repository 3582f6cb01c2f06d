//! `chain-1`: the entry point of the five-stage benchmark chain. Its handler starts a
//! field list with the request body, adds `stage-1`, and passes it to the next stage
//! through the typed import `bench:chain/stage` (bind it to `chain-2`). Answers the final
//! list as a JSON object.

use nanogrid_sdk::{Error, Request, Response, Service};

mod typed {
    wit_bindgen::generate!({ world: "entry", path: "../wit/chain" });
}
use typed::bench::chain::stage::{Field, run};

struct Entry;

impl Service for Entry {
    fn handle(req: Request) -> Result<Response, Error> {
        let input = String::from_utf8_lossy(&req.body).into_owned();
        let fields = vec![
            Field { name: "input".into(), value: input },
            Field { name: "stage-1".into(), value: "ok".into() },
        ];
        let out: serde_json::Map<String, serde_json::Value> =
            run(&fields).into_iter().map(|f| (f.name, f.value.into())).collect();
        Response::json(200, &out)
    }
}

nanogrid_sdk::export!(Entry);
