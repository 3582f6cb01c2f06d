#!/usr/bin/env bash
# Benchmarks, all on 127.0.0.1 with the same load generator (wrk) in one run:
#  1. the `hello` nanoservice through nanogrid's ingress vs a native hyper server answering
#     the same greeting, with keep-alive connections, one client, and a new connection per
#     request;
#  2. the standard wasi:http `http-hello` component under nanogrid vs under `wasmtime serve`
#     of the same wasmtime version (installed by this script into ~/.cache/nanogrid), with
#     its defaults and with the pooling allocator and the node's resident-memory settings;
#  3. over TLS (rustls, the node's --tls-cert/--tls-key): native hyper with the same
#     rustls configuration against the node's reused `hello`, with keep-alive connections
#     and with a new connection (a new handshake) per request;
#  4. per-request instantiation time inside the node.
# Rewrites docs/BENCHMARKS.md. Run it with `./dev bench` (which installs wrk).
#
# Settings (environment): DURATION (s per run, default 10), CONNS (default 32),
# ROUNDS (rounds of every server, the order reversed every other round of a set; default 4),
# NODES (sets of server processes, the same binaries side by side, taking rounds in turn;
# default 2: benches/lib.sh, "proc_of"), INSTANCES (default 64),
# DURATION1 (s per one-client run, default 5), DURATION_CLOSE (s per run with a new
# connection per request, default 5), WARMUP (s per server before the rounds,
# default 2), INSTANTIATE_RUNS (default 20000).
# The test suite's smoke: PROFILE=debug (the test build's binaries), WASMTIME=skip (no
# wasmtime-cli to build: the node's own wasi:http services stand in for the three
# `wasmtime serve` servers, so every path of the script runs but those rows compare the
# node with itself), OUT=FILE (write the section there, not into docs/BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
DURATION1=${DURATION1:-5}
DURATION_CLOSE=${DURATION_CLOSE:-5}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-4}
INSTANCES=${INSTANCES:-64}
REUSE=${REUSE:-1000}
WARMUP=${WARMUP:-2}
INSTANTIATE_RUNS=${INSTANTIATE_RUNS:-20000}
PROFILE=${PROFILE:-release}
WASMTIME=${WASMTIME:-install}
target=${CARGO_TARGET_DIR:-target}

case $PROFILE in
    release) cargo build --release -q -p nanogrid --bin nanogrid --example native_hello --example instantiate ;;
    debug) cargo build -q -p nanogrid --bin nanogrid --example native_hello --example instantiate ;;
    *) echo "PROFILE must be release or debug, not $PROFILE" >&2; exit 2 ;;
esac
bin="$target/$PROFILE"
cargo build --release -q --target wasm32-wasip2 --manifest-path samples/Cargo.toml --target-dir samples/target
hello_wasm=samples/target/wasm32-wasip2/release/hello.wasm
http_hello_wasm=samples/target/wasm32-wasip2/release/http_hello.wasm

WASMTIME_VERSION=48.0.8
. benches/lib.sh
clamp_nodes
[ "$WASMTIME" = skip ] || wasmtime=$(wasmtime_cli "$WASMTIME_VERSION")

# start_set P: server set P (native hyper, a node with the four services and, unless
# skipped, the three `wasmtime serve`s); url[NAME.P] and pid[NAME.P] name its servers.
declare -A url pid
start_set() {
    local p=$1 ingress admin svc port
    start_native "$p" "$bin/examples/native_hello"
    start_node "node$p" "$bin/nanogrid"
    pid[node.$p]=$node_pid ingress=$node_ingress admin=$node_admin
    "$bin/nanogrid" deploy "$hello_wasm" --name hello --instances "$INSTANCES" \
        --admin "$admin" --token bench >/dev/null
    "$bin/nanogrid" deploy "$hello_wasm" --name hello-reuse --instances "$INSTANCES" \
        --reuse "$REUSE" --admin "$admin" --token bench >/dev/null
    "$bin/nanogrid" deploy "$http_hello_wasm" --name web --instances "$INSTANCES" \
        --admin "$admin" --token bench >/dev/null
    "$bin/nanogrid" deploy "$http_hello_wasm" --name web-reuse --instances "$INSTANCES" \
        --reuse "$REUSE" --admin "$admin" --token bench >/dev/null
    wait_optimized "$admin" bench hello hello-reuse web web-reuse
    for svc in hello hello-reuse web web-reuse; do curl -sf "$ingress/$svc/world" >/dev/null; done
    start_tls_pair "$p"
    url[nanogrid.$p]="$ingress/hello/world" url[reuse.$p]="$ingress/hello-reuse/world"
    url[nanohttp.$p]="$ingress/web/world" url[nanohttp-reuse.$p]="$ingress/web-reuse/world"
    for svc in nanogrid reuse nanohttp nanohttp-reuse; do pid[$svc.$p]=${pid[node.$p]}; done
    if [ "$WASMTIME" = skip ]; then
        # The smoke: the node's own wasi:http services stand in (see the settings above).
        url[wasmtime.$p]="$ingress/web/world" url[wasmtime-pool.$p]="$ingress/web/world"
        url[wasmtime-reuse.$p]="$ingress/web-reuse/world"
        for svc in wasmtime wasmtime-pool wasmtime-reuse; do pid[$svc.$p]=${pid[node.$p]}; done
        return 0
    fi
    port=$(free_port)
    "$wasmtime" serve -Scli --addr "127.0.0.1:$port" "$http_hello_wasm" >"$tmp/wt$p.out" 2>&1 &
    pid[wasmtime.$p]=$! url[wasmtime.$p]="http://127.0.0.1:$port/world"
    serve_until_up "${url[wasmtime.$p]}" "$tmp/wt$p.out" "wasmtime serve"
    # Like for like: the pooling allocator with the settings the node's engine uses.
    port=$(free_port)
    "$wasmtime" serve -Scli -O "$WT_POOL" --addr "127.0.0.1:$port" "$http_hello_wasm" >"$tmp/wtp$p.out" 2>&1 &
    pid[wasmtime-pool.$p]=$! url[wasmtime-pool.$p]="http://127.0.0.1:$port/world"
    serve_until_up "${url[wasmtime-pool.$p]}" "$tmp/wtp$p.out" "wasmtime serve -O $WT_POOL"
    # The same with instance reuse, like the node's web-reuse.
    port=$(free_port)
    "$wasmtime" serve -Scli -O "$WT_POOL" --max-instance-reuse-count "$REUSE" --addr "127.0.0.1:$port" \
        "$http_hello_wasm" >"$tmp/wtr$p.out" 2>&1 &
    pid[wasmtime-reuse.$p]=$! url[wasmtime-reuse.$p]="http://127.0.0.1:$port/world"
    serve_until_up "${url[wasmtime-reuse.$p]}" "$tmp/wtr$p.out" "wasmtime serve with reuse"
}
# The TLS pair's certificate: a cluster CA's (`nanogrid cluster init`) for the name
# localhost, an ECDSA P-256 key; the CLI and curl trust the CA, wrk checks nothing.
tls_dir="$tmp/tls"
"$bin/nanogrid" cluster init "$tls_dir" --nodes localhost >/dev/null
tls_cert="$tls_dir/nodes/localhost/node.pem" tls_key="$tls_dir/nodes/localhost/node.key"
# start_tls_pair SET: native hyper over TLS (url[native-tls.SET]) and a node with the same
# certificate serving `hello` with reuse (url[reuse-tls.SET]).
start_tls_pair() {
    local p=$1 admin
    "$bin/examples/native_hello" 127.0.0.1:0 shared "$tls_cert" "$tls_key" >"$tmp/native-tls$p.out" &
    pid[native-tls.$p]=$!
    url[native-tls.$p]="$(wait_line "$tmp/native-tls$p.out" "listening on ")/hello/world"
    start_node "tls$p" "$bin/nanogrid" --tls-cert "$tls_cert" --tls-key "$tls_key"
    pid[reuse-tls.$p]=$node_pid admin=${node_admin/127.0.0.1/localhost}
    NANOGRID_CA="$tls_dir/ca.pem" "$bin/nanogrid" deploy "$hello_wasm" --name hello-reuse \
        --instances "$INSTANCES" --reuse "$REUSE" --admin "$admin" --token bench >/dev/null
    NANOGRID_CA="$tls_dir/ca.pem" wait_optimized "$admin" bench hello-reuse
    url[reuse-tls.$p]="$node_ingress/hello-reuse/world"
    curl -sf --cacert "$tls_dir/ca.pem" "${url[reuse-tls.$p]/127.0.0.1/localhost}" >/dev/null
}
WT_POOL="(skipped: WASMTIME=skip)"
[ "$WASMTIME" = skip ] || WT_POOL=$(wasmtime_pool_opts)
names=(native nanogrid reuse nanohttp nanohttp-reuse wasmtime wasmtime-pool wasmtime-reuse)
for p in $(seq 1 "$NODES"); do
    start_set "$p"
    for name in "${names[@]}" native-tls reuse-tls; do wrk -t1 -c"$CONNS" -d"${WARMUP}s" "${url[$name.$p]}" >/dev/null; done
done
rows=""
http_rows=""
cpu_native=0 cpu_hello=0 cpu_reuse=0 cpu_wasi=0 cpu_wasi_reuse=0
# run1 NAME URL ROUND -> "rps p50_us p99_us" with one client.
run1() {
    wrk -t1 -c1 -d"${DURATION1}s" --latency "$2" >"$tmp/$1.$3.c1.wrk"
    parse "$tmp/$1.$3.c1.wrk"
}
lone_rows=""
# close_run NAME URL ROUND PID -> "rps p50_us p99_us cpu_us errors": wrk at $CONNS
# connections, each request on a new one (`Connection: close`, which the server honours by
# closing after its answer). errors: wrk's socket errors and non-2xx answers, which must
# stay 0 for the row to mean anything.
close_run() {
    local t0 t1 cpu errs f="$tmp/$1.$3.close.wrk"
    t0=$(cpu_ticks "$4")
    wrk -t1 -c"$CONNS" -d"${DURATION_CLOSE}s" --latency -H "Connection: close" "$2" >"$f"
    t1=$(cpu_ticks "$4")
    cpu=$(cpu_per_request "$t0" "$t1" "$f")
    errs=$(awk '/Socket errors:/ { gsub(",", ""); n += $4 + $6 + $8 + $10 } /Non-2xx/ { n += $NF } END { print n + 0 }' "$f")
    echo "$(parse "$f") $(printf '%.1f' "$cpu") $errs"
}
close_rows=""
tls_rows=""
declare -A close_rps
# tls_round ROUND SET: the TLS pair with keep-alive connections and with a new connection
# per request, after the round's plain runs (res[] and close_rps[] hold those): each row's
# ratio to native hyper over TLS, and to the same server without TLS in this round.
tls_round() {
    local r=$1 p=$2 k name mode rps p50 p99 cpu err plain native_rps
    for mode in keep close; do
        for k in "native hyper|native-tls|native" "nanogrid \`hello\`, reuse $REUSE|reuse-tls|reuse"; do
            IFS='|' read -r label name plain <<<"$k"
            if [ "$mode" = keep ]; then
                read -r rps p50 p99 cpu < <(wrk_run "$name" "${url[$name.$p]}" "$r" "${pid[$name.$p]}")
                err="" plain=$(cut -d' ' -f1 <<<"${res[$plain]}")
            else
                read -r rps p50 p99 cpu err < <(close_run "$name" "${url[$name.$p]}" "$r" "${pid[$name.$p]}")
                plain=${close_rps[$plain]}
            fi
            [ "$name" = native-tls ] && native_rps=$rps
            local to_native="" to_plain
            to_plain=$(ratio "$rps" "$plain")
            fig_add "tls_${mode}_plain_$name" "$to_plain" "$p"
            if [ "$name" != native-tls ]; then
                to_native="**$(ratio "$rps" "$native_rps")**"
                fig_add "tls_$mode" "$(ratio "$rps" "$native_rps")" "$p"
            fi
            tls_rows+="| $r | $p | $label | $mode | $rps | $p50 | $p99 | $cpu | ${err:-} | $to_native | $to_plain |"$'\n'
        done
    done
}
# ratio A B -> A / B to two places
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a/b }'; }
declare -A res
for r in $(seq 1 "$ROUNDS"); do
    p=$(proc_of "$r")
    # One client first: what a lone caller waits (no target; see the table's notes).
    lone_begin
    for k in "native hyper|native" "nanogrid \`hello\`|nanogrid" \
        "nanogrid \`hello\`, reuse $REUSE|reuse" \
        "nanogrid wasi:http \`http-hello\`|nanohttp" \
        "nanogrid wasi:http \`http-hello\`, reuse $REUSE|nanohttp-reuse" \
        "\`wasmtime serve\` $WASMTIME_VERSION, pooling as the node|wasmtime-pool"; do
        read -r o_rps o_p50 o_p99 < <(run1 lone "${url[${k#*|}.$p]}" "$r")
        lone_rows+="| $r | $p | ${k%%|*} | $o_rps | $o_p50 | $o_p99 |"$'\n'
    done
    lone_end
    # A new connection per request: the accept path's cost (no target; see the notes).
    for k in "native hyper|native" "nanogrid \`hello\`|nanogrid" \
        "nanogrid \`hello\`, reuse $REUSE|reuse" \
        "nanogrid wasi:http \`http-hello\`, reuse $REUSE|nanohttp-reuse" \
        "\`wasmtime serve\` $WASMTIME_VERSION, pooling, reuse $REUSE|wasmtime-reuse"; do
        name=${k#*|}
        read -r c_rps c_p50 c_p99 c_cpu c_err < <(close_run "$name" "${url[$name.$p]}" "$r" "${pid[$name.$p]}")
        [ "$name" = native ] && c_native=$c_rps c_ratio="" || c_ratio="**$(ratio "$c_rps" "$c_native")**"
        [ "$name" = native ] || fig_add "close_$name" "$(ratio "$c_rps" "$c_native")" "$p"
        close_rps[$name]=$c_rps
        close_rows+="| $r | $p | ${k%%|*} | $c_rps | $c_p50 | $c_p99 | $c_cpu | $c_err | $c_ratio |"$'\n'
    done
    # The throughput runs, in reverse order every other round of a set: with a fixed order
    # the later of two servers compared read about 3 % lower in every round, whichever it
    # was (docs/BENCHMARKS.md, "Tried for hello throughput").
    order=("${names[@]}")
    is_reversed "$r" && for ((i = 0, j = ${#names[@]} - 1; i < ${#names[@]}; i++, j--)); do order[i]=${names[j]}; done
    for name in "${order[@]}"; do
        res[$name]=$(wrk_run "$name" "${url[$name.$p]}" "$r" "${pid[$name.$p]}")
    done
    tls_round "$r" "$p"
    read -r w_rps w_p50 w_p99 w_cpu <<<"${res[wasmtime]}"
    read -r wp_rps wp_p50 wp_p99 wp_cpu <<<"${res[wasmtime-pool]}"
    read -r h_rps h_p50 h_p99 h_cpu <<<"${res[nanohttp]}"
    read -r wr_rps wr_p50 wr_p99 wr_cpu <<<"${res[wasmtime-reuse]}"
    read -r hr_rps hr_p50 hr_p99 hr_cpu <<<"${res[nanohttp-reuse]}"
    trr=$(ratio "$hr_rps" "$wr_rps") prr=$(ratio "$hr_p99" "$wr_p99")
    tr=$(ratio "$h_rps" "$w_rps") pr=$(ratio "$h_p99" "$w_p99")
    tpr=$(ratio "$h_rps" "$wp_rps") ppr=$(ratio "$h_p99" "$wp_p99")
    http_rows+="| $r | $p | \`wasmtime serve\` $WASMTIME_VERSION, defaults | $w_rps | $w_p50 | $w_p99 | $w_cpu | | |"$'\n'
    http_rows+="| $r | $p | \`wasmtime serve\` $WASMTIME_VERSION, pooling as the node | $wp_rps | $wp_p50 | $wp_p99 | $wp_cpu | | |"$'\n'
    http_rows+="| $r | $p | nanogrid vs defaults | $h_rps | $h_p50 | $h_p99 | $h_cpu | **$tr** | **$pr** |"$'\n'
    http_rows+="| $r | $p | nanogrid vs pooling | $h_rps | $h_p50 | $h_p99 | $h_cpu | **$tpr** | **$ppr** |"$'\n'
    http_rows+="| $r | $p | \`wasmtime serve\` $WASMTIME_VERSION, pooling, reuse $REUSE | $wr_rps | $wr_p50 | $wr_p99 | $wr_cpu | | |"$'\n'
    http_rows+="| $r | $p | nanogrid reuse $REUSE vs pooling reuse $REUSE | $hr_rps | $hr_p50 | $hr_p99 | $hr_cpu | **$trr** | **$prr** |"$'\n'
    fig_add http_reuse "$trr" "$p"; fig_add p99_reuse "$prr" "$p"
    fig_add http "$tr" "$p"; fig_add p99 "$pr" "$p"
    fig_add http_pool "$tpr" "$p"; fig_add p99_pool "$ppr" "$p"
    echo "round $r (set $p): wasmtime serve with pooling $wp_rps req/s (p99 ${wp_p99}us): nanogrid throughput x$tpr, p99 x$ppr" >&2
    echo "round $r (set $p): wasmtime serve $w_rps req/s (p99 ${w_p99}us), nanogrid wasi:http $h_rps req/s (p99 ${h_p99}us): throughput x$tr, p99 x$pr" >&2
    read -r n_rps n_p50 n_p99 n_cpu <<<"${res[native]}"
    read -r g_rps g_p50 g_p99 g_cpu <<<"${res[nanogrid]}"
    read -r u_rps u_p50 u_p99 u_cpu <<<"${res[reuse]}"
    ratio=$(ratio "$g_rps" "$n_rps") u_ratio=$(ratio "$u_rps" "$n_rps")
    # The wasi:http guest of this round against this round's native server.
    hn=$(ratio "$h_rps" "$n_rps") hrn=$(ratio "$hr_rps" "$n_rps")
    rows+="| $r | $p | native hyper | $n_rps | $n_p50 | $n_p99 | $n_cpu | |"$'\n'
    rows+="| $r | $p | nanogrid \`hello\` | $g_rps | $g_p50 | $g_p99 | $g_cpu | **$ratio** |"$'\n'
    rows+="| $r | $p | nanogrid \`hello\`, reuse $REUSE | $u_rps | $u_p50 | $u_p99 | $u_cpu | **$u_ratio** |"$'\n'
    rows+="| $r | $p | nanogrid wasi:http \`http-hello\` | $h_rps | $h_p50 | $h_p99 | $h_cpu | **$hn** |"$'\n'
    rows+="| $r | $p | nanogrid wasi:http \`http-hello\`, reuse $REUSE | $hr_rps | $hr_p50 | $hr_p99 | $hr_cpu | **$hrn** |"$'\n'
    fig_add hello "$ratio" "$p"; fig_add reuse "$u_ratio" "$p"
    fig_add wasi "$hn" "$p"; fig_add wasi_reuse "$hrn" "$p"
    cpu_wasi_reuse=$(awk -v s="$cpu_wasi_reuse" -v x="$hr_cpu" 'BEGIN { print s+x }')
    cpu_native=$(awk -v s="$cpu_native" -v x="$n_cpu" 'BEGIN { print s+x }')
    cpu_hello=$(awk -v s="$cpu_hello" -v x="$g_cpu" 'BEGIN { print s+x }')
    cpu_reuse=$(awk -v s="$cpu_reuse" -v x="$u_cpu" 'BEGIN { print s+x }')
    cpu_wasi=$(awk -v s="$cpu_wasi" -v x="$h_cpu" 'BEGIN { print s+x }')
    echo "round $r (set $p): native $n_rps req/s (p50 ${n_p50}us p99 ${n_p99}us), nanogrid $g_rps req/s (p50 ${g_p50}us p99 ${g_p99}us), ratio $ratio; with reuse $u_rps req/s (p99 ${u_p99}us), ratio $u_ratio" >&2
done
# Native's CPU per request over each server's (summed over the rounds): the share of a
# native request's CPU each costs, the throughput ratio it would give if the load
# generator took nothing.
cpu_of() { awk -v a="$cpu_native" -v b="$1" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
inst=$("$bin/examples/instantiate" "$hello_wasm" "$INSTANTIATE_RUNS")
echo "$inst" >&2
inst_us=$(echo "$inst" | sed -n 's/.*instantiate_us=\([0-9.]*\).*/\1/p')
req_us=$(echo "$inst" | sed -n 's/.*request_us=\([0-9.]*\).*/\1/p')

mkdir -p docs
# Only this script's section is replaced; the others (chain, cluster, barrier, tls, grid)
# stay as their scripts last wrote them.
section="$tmp/core.md"
cat >"$section" <<MD
<!-- core:begin -->
## Hello world through ingress vs native hyper

\`wrk -t1 -c$CONNS -d${DURATION}s --latency\` against \`GET /hello/world\` on 127.0.0.1:
nanogrid (its defaults: ingress connections on a runtime per core, each thread pinned to its CPU) serving the \`hello\` sample (instances = $INSTANCES, $PROFILE build) with a fresh
instance per request (the default), the same component deployed with
\`"reuse": {"requests": $REUSE}\` (an instance serves $REUSE requests in sequence, then is
recycled: opt-in, see docs/SECURITY.md), the standard wasi:http \`http-hello\` component
(fresh instance per request, and deployed with the same reuse; measured in the wasmtime
comparison below, within the same round), and a native hyper server (\`host/examples/native_hello.rs\`, same accept loop, on the shared multi-threaded runtime: its faster setting)
returning the same greeting. $(sets_note) CPU/req is the server
process's own user + system CPU time per request answered (from /proc; wrk shares the
same 2 cores): it moves less from day to day than requests/s, which on this VM follow
what the kernel's loopback costs that day (see the notes at the end of this file).

| round | set | server | requests/s | p50 (µs) | p99 (µs) | CPU/req (µs) | nanogrid / native |
| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |
$rows
Mean throughput ratio nanogrid / native, fresh instance per request: $(fig_show hello) (target
for the foundation: ≥ 0.3: $(fig_verdict hello ge 0.3); issue 20's target ≥ 0.5: $(fig_verdict hello ge 0.5)).
With instance reuse: $(fig_show reuse) (issue 20's target ≥ 0.5: $(fig_verdict reuse ge 0.5)).
The wasi:http guest, fresh instance per request: $(fig_show wasi) (issue 20's target ≥ 0.5: $(fig_verdict wasi ge 0.5));
with instance reuse: $(fig_show wasi_reuse) (issue 20's target ≥ 0.5: $(fig_verdict wasi_reuse ge 0.5)).
Native's CPU per request over nanogrid's (no target; what the ratios would be if wrk
cost nothing): \`hello\` $(cpu_of "$cpu_hello"), with reuse $(cpu_of "$cpu_reuse"), wasi:http $(cpu_of "$cpu_wasi"), wasi:http with reuse $(cpu_of "$cpu_wasi_reuse").
wrk's own share of the 2 cores lifts the throughput ratios above these, the more so
the more the kernel's loopback costs it that day.

One client (\`wrk -t1 -c1 -d${DURATION1}s --latency\`, the same servers, at the start of each
round, $(halt_poll_note); no target: what a lone caller waits):

| round | set | server | requests/s | p50 (µs) | p99 (µs) |
| --- | ---: | --- | ---: | ---: | ---: |
$lone_rows
A new connection for every request (\`wrk -t1 -c$CONNS -d${DURATION_CLOSE}s --latency -H
"Connection: close"\`, the same servers, after the one-client runs of each round; no
target: what clients that do not keep connections open get; errors: wrk's socket errors
and non-2xx answers):

| round | set | server | requests/s | p50 (µs) | p99 (µs) | CPU/req (µs) | errors | / native |
| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |
$close_rows
Mean throughput ratio to native hyper with a new connection per request: \`hello\`
$(fig_show close_nanogrid), with reuse $(fig_show close_reuse), wasi:http with reuse
$(fig_show close_nanohttp-reuse); \`wasmtime serve\` with pooling and reuse $(fig_show close_wasmtime-reuse).
Each of the node's connection threads accepts on its own \`SO_REUSEPORT\` socket and keeps
what it accepts unless another thread has fewer open (\`host/src/cores.rs\`; before
2026-12-07 one accept loop handed every connection to a thread, which these rows showed:
"Kept, 2026-12-07 (thirteenth session): each connection thread accepts its own
connections").

A fresh instance of a request with no company (over HTTP/1, alone on its service and on
the node) is torn down after its answer is written (\`Teardown::AfterAnswer\`), a
nanoservice's as a wasi:http guest's; with company, in place. With this VM's
halt polling off, as it boots, a server's p50 at one connection is bimodal between runs
(each a new connection): steady within a run, either about 16-35 µs or 70-110 µs, native
hyper's as well; that is the wake-up of a halted vCPU, which is why these rows run with
halt polling on where the script can turn it on (what they ran with is said above; see
"Tried for hello throughput" below).

Over TLS (rustls with the ring provider, TLS 1.3, the same ECDSA P-256 certificate for
both; the node with \`--tls-cert\`/\`--tls-key\`, native hyper with the same rustls
configuration through the same accept loop): native hyper and the node's \`hello\` with
reuse $REUSE, \`wrk -t1 -c$CONNS\` with keep-alive connections (${DURATION} s) and with a new
connection, and so a full handshake, per request (${DURATION_CLOSE} s), after each round's plain runs;
no target. "/ without TLS": the same server's plain run of the same round (the tables above).

| round | set | server | connections | requests/s | p50 (µs) | p99 (µs) | CPU/req (µs) | errors | / native over TLS | / without TLS |
| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
$tls_rows
Mean throughput ratio to native hyper over TLS: keep-alive $(fig_show tls_keep), a new
connection per request $(fig_show tls_close). What TLS leaves of each server's plain
throughput: keep-alive, native hyper $(fig_show tls_keep_plain_native-tls), the node
$(fig_show tls_keep_plain_reuse-tls); a new connection per request, native hyper
$(fig_show tls_close_plain_native-tls), the node $(fig_show tls_close_plain_reuse-tls).
A handshake of a connection on a connection thread runs on the node's multi-threaded
runtime, the session then served on the connection thread (\`listener_tls::handshake\`;
before 2026-12-07 it ran on the accepting thread: "Kept, 2026-12-07 (fourteenth session):
TLS handshakes on the shared runtime").

## A standard wasi:http component: nanogrid vs \`wasmtime serve\`

The same \`samples/http-hello\` component (built with the \`wasi\` crate, no nanogrid SDK)
under \`wasmtime serve -Scli\` $WASMTIME_VERSION (\`cargo install wasmtime-cli --version
$WASMTIME_VERSION --locked\`) and under nanogrid (instances = $INSTANCES), \`GET /world\` with
\`wrk -t1 -c$CONNS -d${DURATION}s --latency\`. \`wasmtime serve\` runs twice: with its defaults
(on-demand allocation) and, like for like, with the pooling allocator and the node's
resident-memory settings (\`-O $WT_POOL\`), and a third time with those and
\`--max-instance-reuse-count $REUSE\`, against the node's \`web-reuse\` (the same component with
\`"reuse": {"requests": $REUSE}\`). Rounds and process sets as above.
$([ "$WASMTIME" = skip ] && echo $'\n'"**A smoke run (WASMTIME=skip): the \`wasmtime serve\` rows below are the node's own wasi:http services.**")

| round | set | server | requests/s | p50 (µs) | p99 (µs) | CPU/req (µs) | throughput nanogrid / wasmtime | p99 nanogrid / wasmtime |
| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |
$http_rows
Mean against \`wasmtime serve\` with pooling as the node (like for like): throughput
$(fig_show http_pool) × (target ≥ 1.0: $(fig_verdict http_pool ge 1.0)), p99 $(fig_show p99_pool) × (target ≤ 1.1: $(fig_verdict p99_pool le 1.1)).
Against its defaults: throughput $(fig_show http) × (target ≥ 1.0: $(fig_verdict http ge 1.0)), p99 $(fig_show p99) × (target ≤ 1.1: $(fig_verdict p99 le 1.1)).
Both reusing instances, against pooling: throughput $(fig_show http_reuse) × (target ≥ 1.0: $(fig_verdict http_reuse ge 1.0)), p99 $(fig_show p99_reuse) × (target ≤ 1.1: $(fig_verdict p99_reuse le 1.1)).

## Per-request cost inside the node

\`host/examples/instantiate.rs\`, 20 000 sequential runs each, no HTTP:

| what | µs per request |
| --- | ---: |
| instantiate \`hello\` from its \`InstancePre\` (pooling allocator, memory kept resident) | $inst_us |
| whole request: admission, instantiate, call \`handle\`, response | $req_us |

No target is set for these two figures; they explain the throughput above.

What sets this cost is resetting a used instance slot. On Linux 6.7+ the node turns on
wasmtime's \`PAGEMAP_SCAN\`-based reset (only pages the guest dirtied are reset) with a
16 MiB resident window; measured with this example, a whole request went from 35.5 µs
(memset-or-madvise reset, 2 MiB resident) to about 13 µs. Older kernels get the plain
reset with 1 MiB resident.

Measured on: $(nproc) cores, $(uname -m), kernel $(uname -r), $(date -u +%Y-%m-%d).
<!-- core:end -->
MD
if [ -n "${OUT:-}" ]; then cp "$section" "$OUT"; exit 0; fi
write_section core "$section"
echo "updated docs/BENCHMARKS.md (mean ratio $(fig_mean hello), with reuse $(fig_mean reuse))" >&2
