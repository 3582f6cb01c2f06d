#!/usr/bin/env bash
# Autoscaling benchmark: a step load against an autoscaled and a fixed `hello`, and the
# cold start after scale to zero, on three local release nodes (see benches/autoscale.py).
# Rewrites the autoscale section of docs/BENCHMARKS.md. PHASE_S (default 10), ROUNDS (20).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p nanogrid --bin nanogrid
cargo build --release -q --target wasm32-wasip2 --workspace --manifest-path samples/Cargo.toml --target-dir samples/target
exec python3 benches/autoscale.py "$target/release/nanogrid" samples/target/wasm32-wasip2/release/hello.wasm \
    docs/BENCHMARKS.md "${PHASE_S:-10}" "${ROUNDS:-20}"
