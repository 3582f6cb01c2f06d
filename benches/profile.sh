#!/usr/bin/env bash
# `./dev profile [SAMPLE | FILE.wasm]`: where one request's CPU goes on a node serving a
# sample or your own component under load. Starts a node (release build unless BIN is
# given), deploys the sample (`hello`, `http-hello`, `chain-5` alone, or `chain`: `chain-1`
# bound to `chain-2` ... `chain-5`, fused) or the component (named after its file, GETs to
# REQUEST_PATH, default `/`; samples get `/world`); REUSE=N deploys each with
# `"reuse": {"requests": N}`. Drives it with `wrk -t1 -c$CONNS`, records the node with
# `perf record --call-graph dwarf` for DURATION seconds and prints a table: buckets
# (instantiation, teardown, guest code, host calls, spans, the kernel's loopback, ...) in
# microseconds of CPU per request, then the guest code's hottest functions
# (benches/profile.py). Nothing is written to docs/BENCHMARKS.md: this is for looking
# before optimising. The node runs with NANOGRID_PERF_MAP=1 (unless the environment says
# 0): it writes /tmp/perf-PID.map, by which perf names guest functions; the map is removed
# at the end unless PERF_DATA=FILE keeps the recording (for `perf report -i FILE`, which
# needs the map too).
set -euo pipefail
SAMPLE=${1:-hello}
own=""
case $SAMPLE in
    *.wasm)
        [ -f "$SAMPLE" ] || { echo "no such component file: $SAMPLE" >&2; exit 2; }
        own=$(realpath "$SAMPLE")
        # A service name from the file name: lowercase letters, digits and '-'.
        SAMPLE=$(basename "$own" .wasm | tr 'A-Z_.' 'a-z--' | tr -cd 'a-z0-9-')
        [ -n "$SAMPLE" ] || { echo "cannot make a service name from $own; rename the file" >&2; exit 2; } ;;
esac
cd "$(dirname "$0")/.."
. benches/lib.sh

PROFILE=${PROFILE:-release}
DURATION=${DURATION:-4}
FREQ=${FREQ:-500}
CONNS=${CONNS:-32}
INSTANCES=${INSTANCES:-64}
if [ -n "$own" ]; then
    stages=("$SAMPLE")
else
    case $SAMPLE in
        hello | http-hello | chain-5) stages=("$SAMPLE") ;;
        chain) stages=(chain-5 chain-4 chain-3 chain-2 chain-1) ;;
        *) echo "unknown sample '$SAMPLE' (hello, http-hello, chain-5, chain, or a .wasm file)" >&2; exit 2 ;;
    esac
fi
command -v perf >/dev/null || { echo "perf is not installed (Debian: linux-perf; ./dev profile installs it)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is not installed (./dev profile installs it)" >&2; exit 1; }

if [ -z "${BIN:-}" ]; then
    case $PROFILE in
        release) cargo build --release -q -p nanogrid --bin nanogrid ;;
        debug) cargo build -q -p nanogrid --bin nanogrid ;;
    esac
    BIN="${CARGO_TARGET_DIR:-target}/$PROFILE/nanogrid"
fi
[ -n "$own" ] || cargo build --release -q --target wasm32-wasip2 --manifest-path samples/Cargo.toml \
    --target-dir samples/target "${stages[@]/#/-p=}"

NANOGRID_PERF_MAP=${NANOGRID_PERF_MAP:-1} "$BIN" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$tmp/node" \
    --admin-token profile >"$tmp/node.out" 2>"$tmp/node.log" &
pid=$!
# The node's perf map goes with it, unless PERF_DATA keeps the recording it names.
trap 'cleanup; [ -n "${PERF_DATA:-}" ] || rm -f "/tmp/perf-$pid.map"' EXIT
ingress=$(wait_line "$tmp/node.out" "ingress listening on ")
admin=$(wait_line "$tmp/node.out" "admin listening on ")
next=""
for stage in "${stages[@]}"; do # the last stage first, so each binds to the one after it
    "$BIN" deploy "${own:-samples/target/wasm32-wasip2/release/${stage//-/_}.wasm}" --name "$stage" \
        --instances "$INSTANCES" ${REUSE:+--reuse "$REUSE"} ${next:+--bind "bench:chain/stage=$next"} \
        --admin "$admin" --token profile >/dev/null
    next=$stage
done
wait_optimized "$admin" profile "$next"
path=${REQUEST_PATH:-$([ -n "$own" ] && echo / || echo /world)}
url="$ingress/$next$path"
code=$(curl -s -o /dev/null -w '%{http_code}' "$url") || true
[ "${code:0:1}" = 2 ] ||
    { echo "GET $path answered ${code:-nothing}, not 2xx: set REQUEST_PATH to a path the service answers" >&2; exit 1; }
wrk -t1 -c"$CONNS" -d1s "$url" >/dev/null

# CPU per request over the same load perf samples: the node's user + system ticks around
# a run of wrk as long as the recording, started together.
t0=$(cpu_ticks "$pid")
wrk -t1 -c"$CONNS" -d"${DURATION}s" "$url" >"$tmp/wrk" &
wrk_pid=$!
perf record -q -F "$FREQ" --call-graph dwarf,32768 -p "$pid" -o "$tmp/perf.data" -- sleep "$DURATION" \
    >/dev/null 2>"$tmp/perf.log" || { cat "$tmp/perf.log" >&2; exit 1; }
wait "$wrk_pid"
t1=$(cpu_ticks "$pid")
cpu_us=$(cpu_per_request "$t0" "$t1" "$tmp/wrk")

echo "## $SAMPLE${REUSE:+, reuse $REUSE}: $(awk '/Requests\/sec/ { print $2 }' "$tmp/wrk") requests/s at $CONNS connections ($PROFILE build)"
echo
[ -z "${PERF_DATA:-}" ] || cp "$tmp/perf.data" "$PERF_DATA"
# Without inlined frames: resolving them runs addr2line per address (minutes, against a
# second), and the buckets name functions that are not inlined.
perf script --no-inline -i "$tmp/perf.data" 2>/dev/null | python3 benches/profile.py "$cpu_us"
