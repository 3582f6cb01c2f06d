#!/usr/bin/env bash
# What cluster security costs: forwarded-request and quorum-write p50 with mutual TLS
# between nodes and without, side by side (benches/peer_tls.py), and sealing one gossip
# packet. Rewrites the tls section of docs/BENCHMARKS.md. ROUNDS (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p nanogrid --bin nanogrid
cargo build --release -q --target wasm32-wasip2 --workspace --manifest-path samples/Cargo.toml --target-dir samples/target
seal=$(cargo bench -q -p nanogrid-wire --bench seal 2>/dev/null | sed -n 's/^seal+open: \([0-9.]*\) us.*/\1/p')
wasm=samples/target/wasm32-wasip2/release
exec python3 benches/peer_tls.py "$target/release/nanogrid" "$wasm/hello.wasm" "$wasm/kvstore.wasm" \
    docs/BENCHMARKS.md "${ROUNDS:-5}" "$seal"
