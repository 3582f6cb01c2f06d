//! The first checks of an uploaded component: any bytes are accepted or refused with a
//! reason, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = nanogrid_wire::upload::check(data);
    // The same bytes behind a component header reach the structural validation.
    let mut component = b"\0asm\x0d\0\x01\0".to_vec();
    component.extend_from_slice(data);
    let _ = nanogrid_wire::upload::check(&component);
    // The initial-memory scan reads whatever parses, valid or not.
    let _ = nanogrid_wire::upload::min_memory_bytes(data);
    let _ = nanogrid_wire::upload::min_memory_bytes(&component);
});
