#!/usr/bin/env bash
# Tracing overhead (issue 17): the `hello` nanoservice through ingress on four release
# nodes side by side, each with a different tracing setting:
#   off      --trace-sample 0 (contexts still travel; no span is recorded)
#   ring     --trace-sample 1, spans kept in the node's ring only (the default)
#   otlp 1%  --trace-sample 0.01 and --otlp-endpoint to a local OTLP/HTTP receiver
#   otlp 100% --trace-sample 1 and export of every span
# Rounds are interleaved (wrk -t1 -cCONNS, DURATION s each), each round starting with the
# next setting; the medians are compared with `off`. Targets: <= 5 % throughput loss with the ring, <= 10 % with export at 1 %.
# Rewrites the tracing section of docs/BENCHMARKS.md (OUT=... writes elsewhere).
#
# Settings: DURATION (s, default 10), CONNS (32), ROUNDS (7), INSTANCES (64), PIN (1: the
# nodes on CPU 0 and wrk on CPU 1, so the two do not trade cores between rounds; 0: off).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-7}
INSTANCES=${INSTANCES:-64}
BIN=${BIN:-}
PIN=${PIN:-0}
node_cpu=(); load_cpu=()
if [ "$PIN" = 1 ]; then node_cpu=(taskset -c 0); load_cpu=(taskset -c 1); fi
target=${CARGO_TARGET_DIR:-target}
if [ -z "$BIN" ]; then
    cargo build --release -q -p nanogrid --bin nanogrid
    BIN="$target/release/nanogrid"
fi
cargo build --release -q --target wasm32-wasip2 --manifest-path samples/Cargo.toml
hello_wasm=samples/target/wasm32-wasip2/release/hello.wasm

. benches/lib.sh

# A local OTLP/HTTP receiver: accepts every POST /v1/traces, counts bytes and requests.
cat >"$tmp/sink.py" <<'PY'
import http.server, sys, threading
counts = {"posts": 0, "bytes": 0}
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        n = int(self.headers.get("content-length", 0)); self.rfile.read(n)
        counts["posts"] += 1; counts["bytes"] += n
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def do_GET(self):
        body = f"{counts['posts']} {counts['bytes']}".encode()
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(f"sink listening on http://127.0.0.1:{s.server_address[1]}", flush=True)
s.serve_forever()
PY
python3 "$tmp/sink.py" >"$tmp/sink.out" 2>&1 &
sink=$(wait_line "$tmp/sink.out" "sink listening on ")

names=(off ring otlp1 otlp100)
declare -A ingress
start() { # name extra-args...
    local name=$1; shift
    "${node_cpu[@]}" "$BIN" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$tmp/$name" \
        --admin-token bench "$@" >"$tmp/$name.out" 2>"$tmp/$name.log" &
    ingress[$name]=$(wait_line "$tmp/$name.out" "ingress listening on ")
    local admin; admin=$(wait_line "$tmp/$name.out" "admin listening on ")
    "$BIN" deploy "$hello_wasm" --name hello --instances "$INSTANCES" --admin "$admin" --token bench >/dev/null
    curl -sf "${ingress[$name]}/hello/world" >/dev/null
}
start off --trace-sample 0
start ring --trace-sample 1
start otlp1 --trace-sample 0.01 --otlp-endpoint "$sink"
start otlp100 --trace-sample 1 --otlp-endpoint "$sink"

for n in "${names[@]}"; do wrk -t1 -c"$CONNS" -d3s "${ingress[$n]}/hello/world" >/dev/null; done
for r in $(seq 1 "$ROUNDS"); do
    # Each round starts with a different setting, so none always runs first or last.
    k=$(( (r - 1) % ${#names[@]} ))
    for n in "${names[@]:$k}" "${names[@]:0:$k}"; do
        "${load_cpu[@]}" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "${ingress[$n]}/hello/world" >"$tmp/$n.$r.wrk"
        echo "round $r $n: $(parse "$tmp/$n.$r.wrk")" >&2
    done
done
exported=$(curl -sf "$sink/")

median() { sort -n | awk '{a[NR]=$1} END { print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2 }'; }
declare -A rps p99
for n in "${names[@]}"; do
    rps[$n]=$(for r in $(seq 1 "$ROUNDS"); do parse "$tmp/$n.$r.wrk" | cut -d' ' -f1; done | median)
    p99[$n]=$(for r in $(seq 1 "$ROUNDS"); do parse "$tmp/$n.$r.wrk" | cut -d' ' -f3; done | median)
done
loss() { awk -v a="$1" -v b="${rps[off]}" 'BEGIN { printf "%.1f", (1 - a / b) * 100 }'; }
row() { # label name target
    local l; l=$(loss "${rps[$2]}")
    local v="–"
    [ -n "$3" ] && v=$(verdict "$l" le "$3")
    printf '| %s | %s | %s | %s %% | %s | %s |\n' "$1" "${rps[$2]}" "${p99[$2]}" "$l" "${3:+≤ $3 %}" "$v"
}
out="$tmp/section.md"
{
    echo "<!-- tracing:begin -->"
    echo "## Tracing overhead"
    echo
    echo "\`./dev bench tracing\` ($(date -u +%Y-%m-%d), $(git rev-parse --short HEAD)): \`hello\` through ingress on"
    echo "four release nodes side by side$([ "$PIN" = 1 ] && echo " (on CPU 0, wrk on CPU 1)"), $ROUNDS interleaved rounds (each starting with the next setting) of wrk -t1 -c$CONNS -d${DURATION}s each, medians;"
    echo "OTLP export goes to a local OTLP/HTTP receiver (a Python server that reads and discards;"
    echo "it took $(echo "$exported" | cut -d' ' -f1) requests, $(echo "$exported" | cut -d' ' -f2) bytes of protobuf in all)."
    echo "Loss is throughput lost against tracing off on the same machine in the same run."
    echo
    echo "| tracing | req/s | p99 µs | throughput loss | target | verdict |"
    echo "| --- | --- | --- | --- | --- | --- |"
    row "off (sample 0: ids travel, no spans)" off ""
    row "ring only, every request" ring 5
    row "ring + OTLP export, 1 % sampled" otlp1 10
    row "ring + OTLP export, every request" otlp100 ""
    echo "<!-- tracing:end -->"
} >"$out"
if [ -n "${OUT:-}" ]; then cp "$out" "$OUT"; else write_section tracing "$out"; fi
cat "$out"
