#!/usr/bin/env bash
# Cluster failure benchmark: failure detection, election time and the error window after
# a leader kill, on three local release nodes (see benches/cluster.py). Rewrites the
# cluster section of docs/BENCHMARKS.md. ROUNDS (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p nanogrid --bin nanogrid
cargo build --release -q --target wasm32-wasip2 --workspace --manifest-path samples/Cargo.toml --target-dir samples/target
exec python3 benches/cluster.py "$target/release/nanogrid" samples/target/wasm32-wasip2/release/hello.wasm \
    samples/target/wasm32-wasip2/release/chain_invoke.wasm docs/BENCHMARKS.md "${ROUNDS:-5}"
