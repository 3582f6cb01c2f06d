//! The gossip packet opener and the chitchat check behind it: whatever a datagram holds,
//! neither panics, and only packets sealed with the key open (once).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nanogrid_wire::{chitchat, seal};

const NOW: u64 = 1_800_000_000_000;

fuzz_target!(|data: &[u8]| {
    let key = seal::GossipKey::from_bytes([7; 32]);
    let mut opener = seal::Opener::new(key.clone(), "fuzz-cluster", 10_000);
    // A datagram from anyone: without the key nothing opens.
    if let Ok(plain) = opener.open(data, NOW) {
        panic!("an unsealed datagram opened: {plain:?}");
    }
    // What a key holder could send: any plaintext, sealed, reaches the chitchat check.
    let packet = seal::seal(&key, "fuzz-cluster", NOW, data).expect("sealing");
    assert_eq!(opener.open(&packet, NOW).as_deref(), Ok(data));
    assert_eq!(opener.open(&packet, NOW + 1).unwrap_err().reason(), "replay");
    let _ = chitchat::check(data);
    // A packet cut short or changed anywhere does not open.
    if !data.is_empty() {
        let cut = data[0] as usize % packet.len();
        assert!(opener.open(&packet[..cut], NOW).is_err());
        let mut flipped = packet.clone();
        let at = 4 + (data[data.len() - 1] as usize % (packet.len() - 4));
        flipped[at] ^= 1;
        assert!(opener.open(&flipped, NOW).is_err());
    }
});
