#!/usr/bin/env bash
# Durable barrier benchmark: a fan-out kept in the grid and resumed, against call-all in one
# request (see benches/barrier.rs). Rewrites the barrier section of docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --target wasm32-wasip2 --workspace --manifest-path samples/Cargo.toml --target-dir samples/target
exec cargo bench -q -p nanogrid --bench barrier -- "$PWD/samples/target/wasm32-wasip2/release/misbehave.wasm" "$PWD/docs/BENCHMARKS.md"
