//! The admin API's JSON: any body as a service request (then every check of it), a scale
//! request, or a stored spec: an answer or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nanogrid_wire::spec::{ScaleRequest, ServiceRequest, ServiceSpec, check_request, parse_instances, parse_queue};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<ServiceRequest>(data) {
        if let Ok(checked) = check_request("fuzzed", &req) {
            assert!(checked.instances <= nanogrid_wire::spec::MAX_INSTANCES);
        }
    }
    if let Ok(req) = serde_json::from_slice::<ScaleRequest>(data) {
        let _ = parse_instances(&req.instances);
        if let Some(q) = &req.max_queue {
            let _ = parse_queue(q);
        }
    }
    if let Ok(spec) = serde_json::from_slice::<ServiceSpec>(data) {
        let again = serde_json::to_vec(&spec).expect("a spec serialises");
        assert_eq!(serde_json::from_slice::<ServiceSpec>(&again).expect("and reads back"), spec);
    }
});
