#!/usr/bin/env bash
# Tracing overhead (issue 17): the `hello` nanoservice through ingress on four release
# nodes side by side, each with a different tracing setting:
#   off      --trace-sample 0 (contexts still travel; no span is recorded)
#   ring     --trace-sample 1, spans kept in the node's ring only (the default)
#   otlp 1%  --trace-sample 0.01 and --otlp-endpoint to a local OTLP/HTTP receiver
#   otlp 100% --trace-sample 1 and export of every span
# Rounds are interleaved (wrk -t1 -cCONNS, DURATION s each), each round starting with the
# next setting. Each round gives every setting's loss against `off` in that same round
# (paired: the machine's drift between rounds cancels); the verdict is on the median of
# those per-round losses, shown with their quartiles. Targets: <= 5 % throughput loss
# with the ring, <= 10 % with export at 1 %.
# Rewrites the tracing section of docs/BENCHMARKS.md (OUT=... writes elsewhere).
#
# Settings: DURATION (s, default 3), CONNS (32), ROUNDS (25), INSTANCES (64), PIN (1: the
# nodes on CPU 0 and wrk on CPU 1, so the two do not trade cores between rounds; 0: off).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-3}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-25}
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
declare -A ingress pid
# A process's CPU time so far, in clock ticks (user + system).
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
start() { # name extra-args...
    local name=$1; shift
    "${node_cpu[@]}" "$BIN" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$tmp/$name" \
        --admin-token bench "$@" >"$tmp/$name.out" 2>"$tmp/$name.log" &
    pid[$name]=$!
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
# The export nodes go on sending spans after their run; the next run starts once the
# receiver has had nothing new for half a second (else it would pay for their export).
quiet() {
    local last now
    last=$(curl -sf "$sink/")
    while :; do
        sleep 0.5
        now=$(curl -sf "$sink/")
        [ "$now" = "$last" ] && return
        last=$now
    done
}
for r in $(seq 1 "$ROUNDS"); do
    # Each round starts with a different setting, and every other round runs them in the
    # opposite order, so none always runs first, last, or right after the same other.
    k=$(( (r - 1) % ${#names[@]} ))
    order=("${names[@]:$k}" "${names[@]:0:$k}")
    if [ $((r % 2)) = 0 ]; then mapfile -t order < <(printf '%s\n' "${order[@]}" | tac); fi
    for n in "${order[@]}"; do
        quiet
        before=$(cpu_ticks "${pid[$n]}")
        "${load_cpu[@]}" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "${ingress[$n]}/hello/world" >"$tmp/$n.$r.wrk"
        # The node's CPU time per request, in µs (its own cost, whatever else the machine does).
        awk -v t="$(( $(cpu_ticks "${pid[$n]}") - before ))" -v hz="$(getconf CLK_TCK)" \
            -v n="$(awk '/requests in/ { print $1 }' "$tmp/$n.$r.wrk")" 'BEGIN { printf "%.2f\n", t / hz * 1e6 / n }' \
            >"$tmp/$n.$r.cpu"
        echo "round $r $n: $(parse "$tmp/$n.$r.wrk") cpu/req $(cat "$tmp/$n.$r.cpu") us" >&2
    done
done
exported=$(curl -sf "$sink/")

median() { sort -n | awk '{a[NR]=$1} END { print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2 }'; }
# quantile Q: nearest-rank quantile of the numbers on stdin.
quantile() { sort -n | awk -v q="$1" '{a[NR]=$1} END { k = int(NR * q + 0.999999); if (k < 1) k = 1; print a[k] }'; }
rate() { parse "$tmp/$1.$2.wrk" | cut -d' ' -f1; }
declare -A rps p99 losses cpu extra
for n in "${names[@]}"; do
    cpu[$n]=$(for r in $(seq 1 "$ROUNDS"); do cat "$tmp/$n.$r.cpu"; done | median | xargs printf '%.1f')
    # The node's CPU per request against off's in the same round, in percent.
    extra[$n]=$(for r in $(seq 1 "$ROUNDS"); do
        awk -v a="$(cat "$tmp/$n.$r.cpu")" -v b="$(cat "$tmp/off.$r.cpu")" 'BEGIN { printf "%.2f\n", (a / b - 1) * 100 }'
    done | median | xargs printf '%.1f')
    rps[$n]=$(for r in $(seq 1 "$ROUNDS"); do rate "$n" "$r"; done | median)
    p99[$n]=$(for r in $(seq 1 "$ROUNDS"); do parse "$tmp/$n.$r.wrk" | cut -d' ' -f3; done | median)
    # This setting's loss against off in each round, in percent.
    losses[$n]=$(for r in $(seq 1 "$ROUNDS"); do
        awk -v a="$(rate "$n" "$r")" -v b="$(rate off "$r")" 'BEGIN { printf "%.2f\n", (1 - a / b) * 100 }'
    done)
done
row() { # label name target
    local l q1 q3 v="–"
    l=$(echo "${losses[$2]}" | median | xargs printf '%.1f')
    q1=$(echo "${losses[$2]}" | quantile 0.25 | xargs printf '%.1f')
    q3=$(echo "${losses[$2]}" | quantile 0.75 | xargs printf '%.1f')
    [ -n "$3" ] && v=$(verdict "$l" le "$3")
    printf '| %s | %s | %s | %s %% (%s … %s) | %s (%+.1f %%) | %s | %s |\n' "$1" "${rps[$2]}" "${p99[$2]}" "$l" "$q1" "$q3" \
        "${cpu[$2]}" "${extra[$2]}" "${3:+≤ $3 %}" "$v"
}
out="$tmp/section.md"
{
    echo "<!-- tracing:begin -->"
    echo "## Tracing overhead"
    echo
    echo "\`./dev bench tracing\` ($(date -u +%Y-%m-%d), $(git rev-parse --short HEAD)): \`hello\` through ingress on"
    echo "four release nodes side by side$([ "$PIN" = 1 ] && echo " (on CPU 0, wrk on CPU 1)"), $ROUNDS interleaved rounds (each starting with the next setting, every other one in reverse order, each run once the OTLP receiver is idle) of wrk -t1 -c$CONNS -d${DURATION}s each;"
    echo "req/s and p99 are medians over the rounds; loss is the median of each round's loss against \`off\` in that same"
    echo "round (paired, so the machine's drift between rounds cancels), with the quartiles of those per-round losses."
    echo "CPU/req is the node's own CPU time (user + system, from /proc) per request answered, median over the rounds, and"
    echo "in brackets the median of each round's difference to \`off\`: what tracing costs the node, whatever else the machine does."
    echo "OTLP export goes to a local OTLP/HTTP receiver (a Python server that reads and discards;"
    echo "it took $(echo "$exported" | cut -d' ' -f1) requests, $(echo "$exported" | cut -d' ' -f2) bytes of protobuf in all)."
    echo
    echo "| tracing | req/s | p99 µs | throughput loss (quartiles) | CPU/req µs (vs off) | target | verdict |"
    echo "| --- | --- | --- | --- | --- | --- | --- |"
    row "off (sample 0: ids travel, no spans)" off ""
    row "ring only, every request" ring 5
    row "ring + OTLP export, 1 % sampled" otlp1 10
    row "ring + OTLP export, every request" otlp100 ""
    echo "<!-- tracing:end -->"
} >"$out"
if [ -n "${OUT:-}" ]; then cp "$out" "$OUT"; else write_section tracing "$out"; fi
cat "$out"
