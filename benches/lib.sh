# Shared by the benchmark scripts (sourced): a temp dir removed on exit with every
# background job, waiting for a line a server prints, and parsing wrk's output.
tmp=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

wait_line() { # file prefix -> the rest of the first line starting with prefix
    for _ in $(seq 1 300); do
        local l; l=$(grep -m1 "^$2" "$1" 2>/dev/null || true)
        if [ -n "$l" ]; then echo "${l#"$2"}"; return 0; fi
        sleep 0.1
    done
    echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; return 1
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

