//! `chain-4`: a middle stage of the benchmark chain: adds `stage-4` and calls the
//! next stage through `bench:chain/stage` (bind it to `chain-5`).

wit_bindgen::generate!({ world: "middle", path: "../wit/chain" });

use bench::chain::stage::{Field as Next, run};
use exports::bench::chain::stage::{Field, Guest};

struct Stage;

impl Guest for Stage {
    fn run(mut fields: Vec<Field>) -> Vec<Field> {
        fields.push(Field { name: "stage-4".into(), value: "ok".into() });
        // The imported and exported interfaces have distinct (equal) record types.
        let next: Vec<Next> = fields.into_iter().map(|f| Next { name: f.name, value: f.value }).collect();
        run(&next).into_iter().map(|f| Field { name: f.name, value: f.value }).collect()
    }
}

export!(Stage);
