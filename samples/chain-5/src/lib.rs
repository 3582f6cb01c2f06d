//! `chain-5`: the last stage of the benchmark chain: adds `stage-5` and returns. It also
//! exports the nanoservice handler (the same work as a whole service), which the
//! benchmark uses as the single pass-through baseline.

use nanogrid_sdk::{Error, Request, Response, Service};

mod typed {
    wit_bindgen::generate!({ world: "last", path: "../wit/chain" });
}
use typed::exports::bench::chain::stage::{Field, Guest};

struct Last;

impl Guest for Last {
    fn run(mut fields: Vec<Field>) -> Vec<Field> {
        fields.push(Field { name: "stage-5".into(), value: "ok".into() });
        fields
    }
}

impl Service for Last {
    fn handle(req: Request) -> Result<Response, Error> {
        let input = String::from_utf8_lossy(&req.body).into_owned();
        let fields = <Last as Guest>::run(vec![Field { name: "input".into(), value: input }]);
        let out: serde_json::Map<String, serde_json::Value> =
            fields.into_iter().map(|f| (f.name, f.value.into())).collect();
        Response::json(200, &out)
    }
}

typed::export!(Last with_types_in typed);
nanogrid_sdk::export!(Last);
