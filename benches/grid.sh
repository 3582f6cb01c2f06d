#!/usr/bin/env bash
# Data grid benchmark: kv at each consistency level on three in-process nodes, against raw
# RocksDB and one loopback RPC round trip (see benches/grid.rs). Rewrites the grid section
# of docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --target wasm32-wasip2 --workspace --manifest-path samples/Cargo.toml --target-dir samples/target
exec cargo bench -q -p nanogrid --bench grid -- "$PWD/samples/target/wasm32-wasip2/release/kvstore.wasm" "$PWD/docs/BENCHMARKS.md"
