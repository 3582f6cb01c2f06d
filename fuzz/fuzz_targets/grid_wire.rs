//! The grid's wire decoder: any bytes give a message or an error, never a panic, and a
//! decoded message encodes back to something that decodes to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nanogrid_wire::grid::{Entry, GridReply, GridRequest, decode, encode};

fn round_trip<T>(data: &[u8])
where
    T: serde::Serialize + for<'a> serde::Deserialize<'a> + PartialEq + std::fmt::Debug,
{
    if let Ok(v) = decode::<T>(data) {
        let again = encode(&v);
        assert_eq!(decode::<T>(&again).expect("re-decoding an encoded message"), v);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<GridRequest>(data);
    round_trip::<GridReply>(data);
    round_trip::<Entry>(data);
});
