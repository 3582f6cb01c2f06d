#!/usr/bin/env bash
# Tracing overhead (issue 17): the `hello` nanoservice through ingress on release nodes,
# each setting against tracing off *in the same process*, switched between runs with
# `PUT /v1/tracing` (two identical node processes differ by several percent, which a
# process per setting would read as tracing's cost):
#   off       sample 0 (contexts still travel; no span is recorded)
#   ring      sample 1, spans kept in the node's ring only (the default)
#   otlp 1%   sample 0.01 on a node with --otlp-endpoint to a local OTLP/HTTP receiver
#   otlp 100% sample 1 on that node: export of every span
# PROCS plain nodes (off, ring) and PROCS export nodes (off, otlp 1%, otlp 100%). In each
# round every node runs each of its settings once (wrk -t1 -cCONNS, DURATION s), nodes in
# an order that rotates and reverses, a node's settings in one that rotates; each run starts once the receiver
# has gone quiet. A setting's loss in a round is against off on the same node in the same
# round (paired: drift between rounds and between processes cancels); the verdict is on
# the median of those losses, shown with their quartiles and a bootstrap 95 % interval of
# the median: met when the whole interval is within the target, not met when it is all
# beyond, else undecided (a pair varies by about +-10 % on a shared 2-core VM, so a run
# of 32 pairs can rarely decide a few percent). Targets: <= 5 % throughput loss with the
# ring, <= 10 % with export at 1 %.
# Rewrites the tracing section of docs/BENCHMARKS.md (OUT=... writes elsewhere).
#
# Settings: DURATION (s, default 3), CONNS (32), ROUNDS (16), PROCS (2 of each kind),
# INSTANCES (64), PIN (1: the nodes on CPU 0 and wrk on CPU 1; 0: off), RING (the plain
# nodes' --trace-ring; default the node's).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-3}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-16}
INSTANCES=${INSTANCES:-64}
BIN=${BIN:-}
PIN=${PIN:-0}
PROCS=${PROCS:-2}
RING=${RING:-}
node_cpu=(); load_cpu=()
if [ "$PIN" = 1 ]; then node_cpu=(taskset -c 0); load_cpu=(taskset -c 1); fi
target=${CARGO_TARGET_DIR:-target}
if [ -z "$BIN" ]; then
    cargo build --release -q -p nanogrid --bin nanogrid
    BIN="$target/release/nanogrid"
fi
cargo build --release -q --target wasm32-wasip2 --manifest-path samples/Cargo.toml --target-dir samples/target
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

declare -A ingress admin pid
start() { # node extra-args...
    local name=$1; shift
    "${node_cpu[@]}" "$BIN" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$tmp/$name" \
        --admin-token bench --trace-sample 0 "$@" >"$tmp/$name.out" 2>"$tmp/$name.log" &
    pid[$name]=$!
    ingress[$name]=$(wait_line "$tmp/$name.out" "ingress listening on ")
    admin[$name]=$(wait_line "$tmp/$name.out" "admin listening on ")
    "$BIN" deploy "$hello_wasm" --name hello --instances "$INSTANCES" --admin "${admin[$name]}" --token bench >/dev/null
    wait_optimized "${admin[$name]}" bench hello
    curl -sf "${ingress[$name]}/hello/world" >/dev/null
}
sample() { # node share
    curl -sf -X PUT -H "authorization: Bearer bench" -H "content-type: application/json" \
        -d "{\"sample\": $2}" "${admin[$1]}/v1/tracing" >/dev/null
}
nodes=()
for p in $(seq 1 "$PROCS"); do
    start "plain$p" ${RING:+--trace-ring "$RING"}; nodes+=("plain$p")
    start "export$p" --otlp-endpoint "$sink"; nodes+=("export$p")
done
declare -A share=([off]=0 [ring]=1 [otlp1]=0.01 [otlp100]=1)
settings_of() { case $1 in plain*) echo off ring ;; *) echo off otlp1 otlp100 ;; esac; }

for n in "${nodes[@]}"; do wrk -t1 -c"$CONNS" -d2s "${ingress[$n]}/hello/world" >/dev/null; done
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
# rotate K REVERSE WORDS...: the words from the K-th on (mod their number), reversed when
# REVERSE is 1 and K is odd (a node's two settings must not be reversed: rotating two
# words and reversing every other round would keep one order).
rotate() {
    local k=$1 rev=$2; shift 2
    local w=("$@") out=() i
    for i in $(seq 0 $((${#w[@]} - 1))); do out+=("${w[$(( (i + k) % ${#w[@]} ))]}"); done
    if [ "$rev" = 1 ] && [ $((k % 2)) = 1 ]; then printf '%s\n' "${out[@]}" | tac; else printf '%s\n' "${out[@]}"; fi
}
for r in $(seq 1 "$ROUNDS"); do
    for n in $(rotate "$r" 1 "${nodes[@]}"); do
        # shellcheck disable=SC2046
        for s in $(rotate "$r" 0 $(settings_of "$n")); do
            sample "$n" "${share[$s]}"
            quiet
            f="$tmp/$n.$s.$r"
            before=$(cpu_ticks "${pid[$n]}")
            "${load_cpu[@]}" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "${ingress[$n]}/hello/world" >"$f.wrk"
            # The node's CPU time per request, in µs.
            cpu_per_request "$before" "$(cpu_ticks "${pid[$n]}")" "$f.wrk" >"$f.cpu"
            echo "round $r $n $s: $(parse "$f.wrk") cpu/req $(cat "$f.cpu") us" >&2
        done
    done
done
exported=$(curl -sf "$sink/")

median() { sort -n | awk '{a[NR]=$1} END { print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2 }'; }
# quantile Q: nearest-rank quantile of the numbers on stdin.
quantile() { sort -n | awk -v q="$1" '{a[NR]=$1} END { k = int(NR * q + 0.999999); if (k < 1) k = 1; print a[k] }'; }
# runs SETTING: the (node, round) pairs that ran it.
runs() { for n in "${nodes[@]}"; do for r in $(seq 1 "$ROUNDS"); do if [ -f "$tmp/$n.$1.$r.wrk" ]; then echo "$n $r"; fi; done; done; }
field() { parse "$tmp/$1.wrk" | cut -d' ' -f"$2"; }
# boot_median: "LOW HIGH", a 95 % percentile-bootstrap interval of the median of the
# numbers on stdin (2,000 resamples, fixed seed).
boot_median() {
    python3 -c '
import random, statistics, sys
xs = [float(x) for x in sys.stdin.read().split()]
rng = random.Random(1)
m = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(2000))
print(f"{m[50]:.1f} {m[1949]:.1f}")'
}
# interval_verdict LOW HIGH TARGET: met when the interval is within TARGET, not met when
# it is all beyond it, else undecided.
interval_verdict() {
    awk -v lo="$1" -v hi="$2" -v t="$3" 'BEGIN { print (hi <= t) ? "met" : (lo > t) ? "not met" : "undecided (the interval spans the target)" }'
}
row() { # label setting target
    local losses extra l q1 q3 v="–" rps p99 cpu lo hi
    losses=$(runs "$2" | while read -r n r; do
        awk -v a="$(field "$n.$2.$r" 1)" -v b="$(field "$n.off.$r" 1)" 'BEGIN { printf "%.2f\n", (1 - a / b) * 100 }'
    done)
    extra=$(runs "$2" | while read -r n r; do
        awk -v a="$(cat "$tmp/$n.$2.$r.cpu")" -v b="$(cat "$tmp/$n.off.$r.cpu")" 'BEGIN { printf "%.2f\n", (a / b - 1) * 100 }'
    done | median)
    l=$(echo "$losses" | median | xargs printf '%.1f')
    q1=$(echo "$losses" | quantile 0.25 | xargs printf '%.1f')
    q3=$(echo "$losses" | quantile 0.75 | xargs printf '%.1f')
    rps=$(runs "$2" | while read -r n r; do field "$n.$2.$r" 1; done | median | xargs printf '%.0f')
    p99=$(runs "$2" | while read -r n r; do field "$n.$2.$r" 3; done | median | xargs printf '%.0f')
    cpu=$(runs "$2" | while read -r n r; do cat "$tmp/$n.$2.$r.cpu"; done | median | xargs printf '%.1f')
    read -r lo hi < <(echo "$losses" | boot_median)
    [ -n "$3" ] && v=$(interval_verdict "$lo" "$hi" "$3")
    printf '| %s | %s | %s | %s %% (%s … %s; %s … %s) | %s (%+.1f %%) | %s | %s |\n' "$1" "$rps" "$p99" "$l" "$q1" "$q3" \
        "$lo" "$hi" "$cpu" "$extra" "${3:+≤ $3 %}" "$v"
}
out="$tmp/section.md"
{
    echo "<!-- tracing:begin -->"
    echo "## Tracing overhead"
    echo
    echo "\`./dev bench tracing\` ($(date -u +%Y-%m-%d), $(git rev-parse --short HEAD)): \`hello\` through ingress on"
    echo "$PROCS plain and $PROCS export release nodes$([ "$PIN" = 1 ] && echo " (on CPU 0, wrk on CPU 1)"), each setting switched on in the"
    echo "same process with \`PUT /v1/tracing\` and compared with that process's own \`off\` run in the same round"
    echo "($ROUNDS rounds; each node runs each of its settings once per round, each setting first on a node as often as the others;"
    echo "wrk -t1 -c$CONNS -d${DURATION}s per run, each once the OTLP receiver is idle). Two identical processes differ by"
    echo "several percent on this machine, so a process per setting would measure which process ran faster."
    echo "Loss: the median over (node, round) of the loss against \`off\` on that node in that round, with the quartiles"
    echo "and a bootstrap 95 % interval of the median. Verdict: met when that interval lies within the target, not met"
    echo "when it lies beyond, else undecided."
    echo "req/s, p99 and CPU/req (the node's own user + system CPU time per request answered, from /proc) are medians;"
    echo "in brackets the median CPU/req difference to \`off\` on the same node in the same round."
    echo "OTLP export goes to a local OTLP/HTTP receiver (a Python server that reads and discards;"
    echo "it took $(echo "$exported" | cut -d' ' -f1) requests, $(echo "$exported" | cut -d' ' -f2) bytes of protobuf in all)."
    echo
    echo "| tracing | req/s | p99 µs | throughput loss (quartiles; 95 % interval of the median) | CPU/req µs (vs off) | target | verdict |"
    echo "| --- | --- | --- | --- | --- | --- | --- |"
    row "off (sample 0: ids travel, no spans)" off ""
    row "ring only, every request" ring 5
    row "ring + OTLP export, 1 % sampled" otlp1 10
    row "ring + OTLP export, every request" otlp100 ""
    echo "<!-- tracing:end -->"
} >"$out"
if [ -n "${OUT:-}" ]; then cp "$out" "$OUT"; else write_section tracing "$out"; fi
cat "$out"
