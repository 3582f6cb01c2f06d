#!/usr/bin/env bash
# Scale in simulation and on paper (see benches/scale.py): NODES (default 20) release
# nodes on this machine, and the placement rule for SERVICES (default 10,000) on
# MODEL_NODES (default 100) nodes. Rewrites the scale section of docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p nanogrid --bin nanogrid --example placement
cargo build --release -q --target wasm32-wasip2 --workspace --manifest-path samples/Cargo.toml --target-dir samples/target
model=$("$target/release/examples/placement" "${SERVICES:-10000}" "${MODEL_NODES:-100}")
echo "$model" >&2
exec python3 benches/scale.py "$target/release/nanogrid" samples/target/wasm32-wasip2/release/hello.wasm \
    "${OUT:-docs/BENCHMARKS.md}" "${NODES:-20}" "$model"
