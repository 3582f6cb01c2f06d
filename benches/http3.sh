#!/usr/bin/env bash
# A WASI 0.3 wasi:http guest (issue 20): the unmodified `http3-stream` sample (`GET /world`
# answers a one-line greeting whose body a task of the guest's writes after `handle` has
# returned the head) through nanogrid's ingress, fresh per request and deployed with
# `"reuse": {"requests": REUSE}`, against a native hyper server answering a one-line
# greeting (host/examples/native_hello.rs) and against `wasmtime serve` of the node's
# wasmtime with the pooling allocator as the node: fresh (reuse count 1), reusing an
# instance for REUSE requests one at a time (as the node does), and with wasmtime's own
# 0.3 default of up to 16 requests at once in an instance (reported: the node never
# gives an instance two requests at once).
# `wrk -t1 -cCONNS -dDURATION`; each round runs every server once, on one of NODES sets of
# server processes in turn (benches/lib.sh, "proc_of"), the order reversed every other
# round of a set. Rewrites the http3 section of docs/BENCHMARKS.md (OUT=FILE writes
# it there instead). Run it with `./dev bench http3`.
#
# Settings (environment): DURATION (s, default 10), CONNS (32), ROUNDS (4), NODES (2),
# INSTANCES (64),
# REUSE (1000), WARMUP (s per server before the rounds, 2).
# The test suite's smoke: PROFILE=debug (the test build's binaries) and WASMTIME=skip (no
# wasmtime-cli to build: the node's own services stand in for `wasmtime serve`, so every
# path of the script runs but those rows compare the node with itself).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-4}
INSTANCES=${INSTANCES:-64}
REUSE=${REUSE:-1000}
WARMUP=${WARMUP:-2}
PROFILE=${PROFILE:-release}
WASMTIME=${WASMTIME:-install}
WASMTIME_VERSION=48.0.8
target=${CARGO_TARGET_DIR:-target}

case $PROFILE in
    release) cargo build --release -q -p nanogrid --bin nanogrid --example native_hello ;;
    debug) cargo build -q -p nanogrid --bin nanogrid --example native_hello ;;
    *) echo "PROFILE must be release or debug, not $PROFILE" >&2; exit 2 ;;
esac
bin="$target/$PROFILE"
cargo build --release -q --target wasm32-wasip2 --manifest-path samples/Cargo.toml --target-dir samples/target
h3_wasm=samples/target/wasm32-wasip2/release/http3_stream.wasm

. benches/lib.sh
clamp_nodes
[ "$WASMTIME" = skip ] || wasmtime=$(wasmtime_cli "$WASMTIME_VERSION")

# wt_serve P NAME EXTRA_ARGS...: `wasmtime serve` of the sample with WASI 0.3 on and the
# pooling allocator as the node, in server set P, as url[NAME.P] and pid[NAME.P].
wt_serve() {
    local p=$1 name=$2 port; shift 2
    port=$(free_port)
    "$wasmtime" serve -Scli -Sp3 -Wcomponent-model-async -O "$WT_POOL" "$@" --addr "127.0.0.1:$port" "$h3_wasm" \
        >"$tmp/$name$p.out" 2>&1 &
    pid[$name.$p]=$! url[$name.$p]="http://127.0.0.1:$port/world"
    serve_until_up "${url[$name.$p]}" "$tmp/$name$p.out" "wasmtime serve $*"
}
# start_set P: server set P (native hyper, a node serving the sample fresh and reused,
# and unless skipped the three `wasmtime serve`s).
declare -A url pid
start_set() {
    local p=$1 ingress admin
    start_native "$p" "$bin/examples/native_hello"
    start_node "node$p" "$bin/nanogrid"
    pid[fresh.$p]=$node_pid pid[reused.$p]=$node_pid ingress=$node_ingress admin=$node_admin
    "$bin/nanogrid" deploy "$h3_wasm" --name h3 --instances "$INSTANCES" --admin "$admin" --token bench >/dev/null
    "$bin/nanogrid" deploy "$h3_wasm" --name h3-reuse --instances "$INSTANCES" --reuse "$REUSE" \
        --admin "$admin" --token bench >/dev/null
    wait_optimized "$admin" bench h3 h3-reuse
    url[fresh.$p]="$ingress/h3/world" url[reused.$p]="$ingress/h3-reuse/world"
    curl -sf "${url[fresh.$p]}" >/dev/null
    curl -sf "${url[reused.$p]}" >/dev/null
    if [ "$WASMTIME" = skip ]; then
        url[wt.$p]=${url[fresh.$p]} url[wtr.$p]=${url[reused.$p]} url[wtc.$p]=${url[reused.$p]}
        pid[wt.$p]=${pid[fresh.$p]} pid[wtr.$p]=${pid[fresh.$p]} pid[wtc.$p]=${pid[fresh.$p]}
        return 0
    fi
    wt_serve "$p" wt --max-instance-reuse-count 1 --max-instance-concurrent-reuse-count 1
    wt_serve "$p" wtr --max-instance-reuse-count "$REUSE" --max-instance-concurrent-reuse-count 1
    wt_serve "$p" wtc --max-instance-reuse-count "$REUSE" --max-instance-concurrent-reuse-count 16
}
WT_POOL="(skipped: WASMTIME=skip)"
[ "$WASMTIME" = skip ] || WT_POOL=$(wasmtime_pool_opts)

servers=("native|native hyper"
    "fresh|nanogrid, fresh instance per request"
    "reused|nanogrid, reuse $REUSE"
    "wt|\`wasmtime serve\`, fresh (reuse count 1)"
    "wtr|\`wasmtime serve\`, reuse $REUSE, one request at a time"
    "wtc|\`wasmtime serve\`, reuse $REUSE, up to 16 at a time (its 0.3 default)")
for p in $(seq 1 "$NODES"); do
    start_set "$p"
    for s in "${servers[@]}"; do wrk -t1 -c"$CONNS" -d"${WARMUP}s" "${url[${s%%|*}.$p]}" >/dev/null; done
done

# ratio A B -> A / B to two places
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
declare -A res
rows=""
for r in $(seq 1 "$ROUNDS"); do
    p=$(proc_of "$r")
    order=("${servers[@]}")
    is_reversed "$r" && for ((i = 0, j = ${#servers[@]} - 1; i < ${#servers[@]}; i++, j--)); do order[i]=${servers[j]}; done
    for s in "${order[@]}"; do
        name=${s%%|*}
        res[$name]=$(wrk_run "$name" "${url[$name.$p]}" "$r" "${pid[$name.$p]}")
    done
    for s in "${servers[@]}"; do
        read -r rps p50 p99 cpu <<<"${res[${s%%|*}]}"
        rows+="| $r | $p | ${s#*|} | $rps | $p50 | $p99 | $cpu |"$'\n'
    done
    read -r n_rps _ _ _ <<<"${res[native]}"
    read -r f_rps _ f_p99 _ <<<"${res[fresh]}"
    read -r u_rps _ u_p99 _ <<<"${res[reused]}"
    read -r w_rps _ w_p99 _ <<<"${res[wt]}"
    read -r wr_rps _ wr_p99 _ <<<"${res[wtr]}"
    read -r wc_rps _ _ _ <<<"${res[wtc]}"
    fig_add fresh_native "$(ratio "$f_rps" "$n_rps")" "$p"
    fig_add reused_native "$(ratio "$u_rps" "$n_rps")" "$p"
    fig_add fresh_wt "$(ratio "$f_rps" "$w_rps")" "$p"
    fig_add p99_fresh_wt "$(ratio "$f_p99" "$w_p99")" "$p"
    fig_add reused_wtr "$(ratio "$u_rps" "$wr_rps")" "$p"
    fig_add p99_reused_wtr "$(ratio "$u_p99" "$wr_p99")" "$p"
    fig_add reused_wtc "$(ratio "$u_rps" "$wc_rps")" "$p"
    echo "round $r (set $p): native $n_rps, fresh $f_rps, reused $u_rps, wasmtime fresh $w_rps, reuse $wr_rps, concurrent reuse $wc_rps req/s" >&2
done

section="$tmp/http3.md"
cat >"$section" <<MD
<!-- http3:begin -->
## A WASI 0.3 wasi:http guest: fresh, reused, native hyper, \`wasmtime serve\`

\`benches/http3.sh\` (\`./dev bench http3\`): the unmodified \`samples/http3-stream\` component
(\`wasi:http/handler@0.3\`; \`GET /world\` answers a one-line greeting whose body a task of
the guest writes after \`handle\` has returned the head) under nanogrid (instances =
$INSTANCES, $PROFILE build), fresh per request and deployed with \`"reuse": {"requests": $REUSE}\`
(an instance serves one request at a time and is kept only if no task of the guest's is
left shortly after its response ended: docs/SECURITY.md), against a native hyper server
answering a one-line greeting (\`host/examples/native_hello.rs\`) and
\`wasmtime serve -Scli -Sp3 -Wcomponent-model-async\` $WASMTIME_VERSION with the pooling
allocator as the node (\`-O $WT_POOL\`): fresh, reusing an instance for $REUSE requests
one at a time (like for like with the node), and with up to 16 requests at once in an
instance (wasmtime's 0.3 default; reported, no target). \`wrk -t1 -c$CONNS -d${DURATION}s
--latency\` on 127.0.0.1, $ROUNDS rounds. $(sets_note) CPU/req is the server process's own
CPU time per request answered.
$([ "$WASMTIME" = skip ] && echo $'\n'"**A smoke run (WASMTIME=skip): the \`wasmtime serve\` rows below are the node's own services.**")

| round | set | server | requests/s | p50 (µs) | p99 (µs) | CPU/req (µs) |
| --- | ---: | --- | ---: | ---: | ---: | ---: |
$rows
Means of the per-round ratios:
- nanogrid / native hyper, throughput: fresh $(fig_show fresh_native) (issue 20's target
  ≥ 0.5: $(fig_verdict fresh_native ge 0.5)), with reuse $(fig_show reused_native) (issue 20's target ≥ 0.5:
  $(fig_verdict reused_native ge 0.5)).
- nanogrid / \`wasmtime serve\`, fresh: throughput $(fig_show fresh_wt) × (target ≥ 1.0:
  $(fig_verdict fresh_wt ge 1.0)), p99 $(fig_show p99_fresh_wt) × (target ≤ 1.1: $(fig_verdict p99_fresh_wt le 1.1)).
- nanogrid / \`wasmtime serve\`, both reusing one request at a time: throughput
  $(fig_show reused_wtr) × (target ≥ 1.0: $(fig_verdict reused_wtr ge 1.0)), p99 $(fig_show p99_reused_wtr) × (target ≤ 1.1:
  $(fig_verdict p99_reused_wtr le 1.1)).
- nanogrid reused / \`wasmtime serve\` with up to 16 requests at once in an instance:
  $(fig_show reused_wtc) × (no target: the node does not share an instance between requests at once).

Measured on: $(nproc) cores, $(uname -m), kernel $(uname -r), $(date -u +%Y-%m-%d).
<!-- http3:end -->
MD
if [ -n "${OUT:-}" ]; then cp "$section" "$OUT"; exit 0; fi
write_section http3 "$section"
echo "updated docs/BENCHMARKS.md (0.3 guest / native: fresh $(fig_mean fresh_native), reused $(fig_mean reused_native))" >&2
