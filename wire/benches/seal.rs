//! Sealing and opening one gossip packet (`cargo bench -p nanogrid-wire --bench seal`):
//! prints microseconds per packet, the figure `./dev bench tls` reports.

use std::time::Instant;

use nanogrid_wire::seal::{GossipKey, Opener, seal};

fn main() {
    let key = GossipKey::from_bytes([7; 32]);
    let payload = vec![0x42u8; 300];
    let n: u64 = 100_000;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let mut opener = Opener::new(key.clone(), "ng-bench", 10_000);
        let start = Instant::now();
        for i in 0..n {
            let now = 1_000_000 + i / 100;
            let p = seal(&key, "ng-bench", now, &payload).expect("seal");
            let opened = opener.open(&p, now).expect("open");
            assert_eq!(opened.len(), payload.len());
        }
        best = best.min(start.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
    println!("seal+open: {best:.2} us per packet");
}
