#!/usr/bin/env bash
# Deploy latency (one node and three) and density (RSS at 10 to 10,000 services) of
# `hello`, plus the Python and JavaScript components' deploy time (see benches/density.py).
# Rewrites the density section of docs/BENCHMARKS.md. ROUNDS (default 5), COUNTS
# (default 10,100,1000,10000).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p nanogrid --bin nanogrid
cargo build --release -q --target wasm32-wasip2 --workspace --manifest-path samples/Cargo.toml --target-dir samples/target
bash tests/guests-build.sh "$target/toolchain-guests" 2>/dev/null
exec python3 benches/density.py "$target/release/nanogrid" samples/target/wasm32-wasip2/release/hello.wasm \
    docs/BENCHMARKS.md "${ROUNDS:-5}" "${COUNTS:-10,100,1000,10000}" "$target/toolchain-guests"
