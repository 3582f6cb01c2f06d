# Shared by the benchmark scripts (sourced): a temp dir removed on exit with every
# background job, waiting for a line a server prints, and parsing wrk's output.
tmp=$(mktemp -d)
cleanup() { lone_end || true; kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

# One-connection rows run with the guest kernel's halt polling on. On a VM booted with
# it off (haltpoll.guest_halt_poll_ns=0, as this one is), every request of a lone client
# wakes a halted vCPU on each side of the round trip, and which server's thread lands
# where decides whether a run reads 16-35 us or 70-110 us at p50 (docs/BENCHMARKS.md,
# "Tried for hello throughput"). Halt polling for 200 us (the kernel's default) removes
# that bimodality and the wake-up from every server alike; throughput rows run on the
# machine as it is. BENCH_HALT_POLL=off leaves the setting alone; the knob is restored on
# exit. halt_poll_note says what the rows ran with.
halt_poll_knob=/sys/module/haltpoll/parameters/guest_halt_poll_ns
halt_poll_saved=""
# Set once lone_begin has turned polling on (the knob only acts with the haltpoll driver).
halt_poll_on=""
lone_begin() {
    [ "${BENCH_HALT_POLL:-on}" = off ] && return 0
    [ -w "$halt_poll_knob" ] || return 0
    [ "$(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null)" = haltpoll ] || return 0
    [ -n "$halt_poll_saved" ] || halt_poll_saved=$(cat "$halt_poll_knob")
    echo "${BENCH_HALT_POLL_NS:-200000}" >"$halt_poll_knob" && halt_poll_on=1
}
lone_end() {
    if [ -n "$halt_poll_saved" ]; then echo "$halt_poll_saved" >"$halt_poll_knob" || true; fi
    return 0
}
halt_poll_note() {
    if [ -n "$halt_poll_on" ]; then
        echo "with the guest kernel's halt polling at ${BENCH_HALT_POLL_NS:-200000} ns for those runs; this machine runs with $halt_poll_saved ns"
    elif [ -r "$halt_poll_knob" ]; then
        echo "with the guest kernel's halt polling as it is, $(cat "$halt_poll_knob") ns"
    else
        echo "on a kernel without guest halt polling"
    fi
}

wait_line() { # file prefix -> the rest of the first line starting with prefix
    for _ in $(seq 1 300); do
        local l; l=$(grep -m1 "^$2" "$1" 2>/dev/null || true)
        if [ -n "$l" ]; then echo "${l#"$2"}"; return 0; fi
        sleep 0.1
    done
    echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; return 1
}

# wait_optimized ADMIN TOKEN NAME...: until each service runs optimized code here (a new
# component serves Winch's baseline code until Cranelift's is swapped in): steady-state
# figures are measured on the code a node keeps. An https:// ADMIN is trusted through the
# CA file NANOGRID_CA names, as the CLI does.
wait_optimized() {
    local admin=$1 token=$2 svc body; shift 2
    for svc in "$@"; do
        for _ in $(seq 1 1200); do
            body=$(curl -sf ${NANOGRID_CA:+--cacert "$NANOGRID_CA"} -H "Authorization: Bearer $token" \
                "$admin/v1/services/$svc" || true)
            grep -Eq '"code": ?"optimized"' <<<"$body" && continue 2
            sleep 0.1
        done
        echo "timed out waiting for $svc to run optimized code" >&2
        return 1
    done
}

# cpu_ticks PID: the process's user + system CPU time so far, in clock ticks (the fields
# after the command name, which may hold spaces).
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }

# cpu_per_request TICKS_BEFORE TICKS_AFTER WRK_OUTPUT -> µs of CPU per request answered:
# steadier than requests/s on a shared machine. A run that got no answers fails.
cpu_per_request() {
    local n; n=$(awk '/requests in/ { print $1 }' "$3")
    [ "${n:-0}" -gt 0 ] || { echo "no answers in this wrk run:" >&2; cat "$3" >&2; return 1; }
    awk -v a="$1" -v b="$2" -v hz="$(getconf CLK_TCK)" -v n="$n" 'BEGIN { printf "%.2f\n", (b - a) / hz * 1e6 / n }'
}

# wrk output -> "rps p50_us p99_us"
parse() {
    awk '
    function us(v) { if (v ~ /us$/) return v+0; if (v ~ /ms$/) return (v+0)*1000; if (v ~ /s$/) return (v+0)*1e6; return v }
    /Requests\/sec:/ { rps=$2 }
    $1=="50%" { p50=us($2) }
    $1=="99%" { p99=us($2) }
    END { printf "%.0f %.0f %.0f\n", rps, p50, p99 }' "$1"
}


# verdict VALUE OP TARGET -> "met" or "not met" (OP: le or ge)
verdict() {
    awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { ok = (op == "le") ? (v <= t) : (v >= t); print (ok ? "met" : "not met") }'
}

# write_section NAME FILE: replace the section between <!-- NAME:begin --> and
# <!-- NAME:end --> in docs/BENCHMARKS.md with FILE (which carries the markers), or add
# it at the end; every other section stays as it is.
write_section() {
    python3 - "$1" "$2" <<'PY'
import re, sys
name, section = sys.argv[1], open(sys.argv[2]).read()
path = "docs/BENCHMARKS.md"
try:
    doc = open(path).read()
except FileNotFoundError:
    doc = "# Benchmarks\n"
pattern = re.compile(r"<!-- %s:begin -->.*?<!-- %s:end -->\n?" % (name, name), re.S)
doc = pattern.sub(lambda _: section, doc) if pattern.search(doc) else doc.rstrip("\n") + "\n\n" + section
open(path, "w").write(doc)
PY
}

# wasmtime_cli VERSION: the path of wasmtime-cli VERSION's binary, installed into
# ~/.cache/nanogrid on first use (~15 min), for `wasmtime serve` baselines.
wasmtime_cli() {
    local root="$HOME/.cache/nanogrid/wasmtime-cli-$1"
    if [ ! -x "$root/bin/wasmtime" ]; then
        echo "installing wasmtime-cli $1 into $root (one time, ~15 min)" >&2
        cargo install -q wasmtime-cli --version "$1" --locked --root "$root" >&2
    fi
    echo "$root/bin/wasmtime"
}

# wasmtime_pool_opts: `wasmtime serve -O` settings like for like with the node's engine
# (host/src/runtime/engine.rs): the pooling allocator, linear memory kept resident (16 MiB
# with PAGEMAP_SCAN, Linux 6.7+, else 1 MiB), 64 KiB of tables, 1 GiB reservations with
# 32 MiB guards.
wasmtime_pool_opts() {
    local keep scan
    if python3 -c 'import os,sys; k=tuple(int(x) for x in os.uname().release.split("-")[0].split(".")[:2]); sys.exit(0 if k >= (6, 7) else 1)'; then
        keep=$((16 << 20)) scan=y
    else
        keep=$((1 << 20)) scan=n
    fi
    echo "pooling-allocator=y,pooling-memory-keep-resident=$keep,pooling-table-keep-resident=65536,pooling-pagemap-scan=$scan,pooling-max-memory-size=$((1 << 30)),memory-reservation=$((1 << 30)),memory-guard-size=$((32 << 20))"
}

# free_port: a free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# serve_until_up URL OUTFILE WHAT: wait (10 s at most) until URL answers 2xx, else print
# OUTFILE and fail.
serve_until_up() {
    for _ in $(seq 1 100); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done
    echo "$3 did not serve $1:" >&2; cat "$2" >&2; return 1
}

# wrk_run NAME URL ROUND PID -> "rps p50_us p99_us cpu_us" of `wrk -t1 -c$CONNS` for
# $DURATION s: cpu_us is the server's own user + system CPU time per request answered
# (from /proc): steadier than requests/s on a shared machine, where what the kernel's
# loopback costs varies from day to day.
wrk_run() {
    local t0 t1 cpu
    t0=$(cpu_ticks "$4")
    wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$2" >"$tmp/$1.$3.wrk"
    t1=$(cpu_ticks "$4")
    cpu=$(cpu_per_request "$t0" "$t1" "$tmp/$1.$3.wrk")
    echo "$(parse "$tmp/$1.$3.wrk") $(printf '%.1f' "$cpu")"
}

# Two processes of one binary differ by 5-20 % in CPU per request on this machine
# (docs/BENCHMARKS.md, "Two process sets per benchmark"), so a script that compares
# servers can start NODES sets of them (the same binaries, side by side) and give each
# round to one set in turn. Each figure then has a mean over all rounds and one per set,
# and each verdict is given for each set too: a verdict whose sets disagree is inside
# that spread.
# proc_of ROUND -> the set the round runs on (1-based); is_reversed ROUND: whether the
# round runs its servers in reverse order (each set gets both orders in turn).
proc_of() { echo $(( ($1 - 1) % NODES + 1 )); }
is_reversed() { (( (($1 - 1) / NODES) % 2 == 1 )); }
# clamp_nodes: at most one set per round (a set with no round has no figures).
clamp_nodes() { NODES=${NODES:-2}; [ "$NODES" -ge 1 ] || NODES=1; [ "$NODES" -le "$ROUNDS" ] || NODES=$ROUNDS; }
declare -A fig_sum fig_n
# fig_add KEY VALUE SET: one round's value of a figure, for its means.
fig_add() {
    local k
    for k in "$1" "$1@$3"; do
        fig_sum[$k]=$(awk -v s="${fig_sum[$k]:-0}" -v x="$2" 'BEGIN { print s + x }')
        fig_n[$k]=$(( ${fig_n[$k]:-0} + 1 ))
    done
}
# fig_set KEY VALUE [SET]: a figure computed whole (a ratio of means, a median), over all
# rounds or for one set, for fig_show and fig_verdict.
fig_set() { local k=$1${3:+@$3}; fig_sum[$k]=$2; fig_n[$k]=1; }
# fig_mean KEY[@SET] -> the mean of its rounds, to two places.
fig_mean() { awk -v s="${fig_sum[$1]:-0}" -v n="${fig_n[$1]:-0}" 'BEGIN { printf "%.2f", (n > 0 ? s / n : 0) }'; }
# fig_show KEY -> "**mean**", and each set's mean when there are several.
fig_show() {
    local p per=""
    if [ "$NODES" -gt 1 ]; then
        for p in $(seq 1 "$NODES"); do per+="${per:+, }$(fig_mean "$1@$p")"; done
    fi
    echo "**$(fig_mean "$1")**${per:+ (sets: $per)}"
}
# fig_verdict KEY OP TARGET -> the verdict on the mean, and each set's when there are several.
fig_verdict() {
    local v p per=""
    v=$(verdict "$(fig_mean "$1")" "$2" "$3")
    if [ "$NODES" -gt 1 ]; then
        for p in $(seq 1 "$NODES"); do per+="${per:+, }$(verdict "$(fig_mean "$1@$p")" "$2" "$3")"; done
    fi
    echo "$v${per:+ (sets: $per)}"
}
# sets_note -> a sentence on how rounds and process sets were run, for a section's text.
sets_note() {
    if [ "$NODES" -gt 1 ]; then
        echo "Each round runs every server once, on one of $NODES sets of server processes (the same binaries, started side by side) in turn, each set's order reversed every other round it runs; each figure is the mean over all $ROUNDS rounds with each set's mean after it, and each verdict is on the mean with each set's after it (two processes of one binary differ by 5-20 % here)."
    else
        echo "Each round runs every server once, the order reversed every other round."
    fi
}

# start_node NAME BIN [ARGS...]: `BIN serve` on free loopback ports (data in $tmp/NAME,
# admin token "bench"); sets node_pid, node_ingress and node_admin.
start_node() {
    local name=$1 bin=$2; shift 2
    "$bin" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$tmp/$name" \
        --admin-token bench "$@" >"$tmp/$name.out" 2>"$tmp/$name.log" &
    node_pid=$!
    node_ingress=$(wait_line "$tmp/$name.out" "ingress listening on ")
    node_admin=$(wait_line "$tmp/$name.out" "admin listening on ")
}
# start_native SET BIN: native hyper (host/examples/native_hello) as url[native.SET] and
# pid[native.SET] (the caller's arrays).
start_native() {
    "$2" >"$tmp/native$1.out" &
    pid[native.$1]=$!
    url[native.$1]="$(wait_line "$tmp/native$1.out" "listening on ")/hello/world"
}
