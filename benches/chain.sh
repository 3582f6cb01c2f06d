#!/usr/bin/env bash
# Composition benchmark: what a chain of five services costs, served four ways, against
# one service doing one stage's work. Everything through nanogrid's ingress on 127.0.0.1:
#   single  chain-5 alone (its handler does one stage's work)
#   fused   chain-1 -> ... -> chain-5 through typed imports, fused into one component
#   single_r, fused_r  the same two with "reuse": {"requests": REUSE} (an instance serves
#           REUSE requests in sequence; opt-in, see docs/SECURITY.md)
#   fused_t the fused chain on a second node started with --trace-fused-parts 1: every
#           request runs the timed composition (a timing shim on each call, issue 17)
#   linked  the same five components, "fuse": false (one instance each, host-mediated)
#   invoke  five chain-invoke services calling each other with invoke.call
#   http    five HTTP hops through ingress (http-fetch forwarding, then chain-5)
# Each is measured at 1 connection (latency) and at CONNS connections (throughput), in
# alternating rounds. Rewrites the composition section of docs/BENCHMARKS.md (OUT=...
# writes elsewhere).
# Settings (environment): DURATION (s per run, default 5), CONNS (default 32),
# ROUNDS (default 4), NODES (processes of the main node taking rounds in turn, default 2), INSTANCES (default 64), REUSE (default 1000), BIN (a nanogrid
# binary to measure instead of building the release one: the test suite's smoke).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-4}
INSTANCES=${INSTANCES:-64}
REUSE=${REUSE:-1000}
target=${CARGO_TARGET_DIR:-target}
BIN=${BIN:-}
built="\`$BIN\`"
if [ -z "$BIN" ]; then
    cargo build --release -q -p nanogrid --bin nanogrid
    BIN="$target/release/nanogrid"
    built="release build"
fi
cargo build --release -q --target wasm32-wasip2 --workspace --manifest-path samples/Cargo.toml --target-dir samples/target
wasm=samples/target/wasm32-wasip2/release

. benches/lib.sh
clamp_nodes

# The main node runs in NODES processes (sets), taking rounds in turn; the node with
# every fused part timed (no target) is one process.
declare -A admin_of ingress_of
for p in $(seq 1 "$NODES"); do
    start_node "node$p" "$BIN"
    ingress_of[$p]=$node_ingress admin_of[$p]=$node_admin
done
start_node tnode "$BIN" --trace-fused-parts 1
tingress=$node_ingress tadmin=$node_admin

upload() { curl -sf -H 'Authorization: Bearer bench' --data-binary "@$wasm/$1.wasm" "$at/v1/components" |
    python3 -c 'import sys, json; print(json.load(sys.stdin)["digest"])'; }
deploy() { # name component-file extra-json-fields (on the node at $at)
    local digest; digest=$(upload "$2")
    curl -sf -X PUT -H 'Authorization: Bearer bench' "$at/v1/services/$1" \
        -d "{\"component\": \"$digest\", \"instances\": $INSTANCES $3}" >/dev/null ||
        { echo "deploying $1 failed" >&2; exit 1; }
}
for i in 5 4 3 2 1; do
    bind=""; [ "$i" -lt 5 ] && bind=", \"bindings\": {\"bench:chain/stage\": \"chain-$((i + 1))\"}"
    at=$tadmin deploy "chain-$i" "chain_$i" "$bind"
done
order=(single fused fused_t single_r fused_r linked invoke http)
declare -A url
for p in $(seq 1 "$NODES"); do
    at=${admin_of[$p]} ingress=${ingress_of[$p]} hostport=${ingress_of[$p]#http://}
    for i in 5 4 3 2 1; do
        bind=""; [ "$i" -lt 5 ] && bind=", \"bindings\": {\"bench:chain/stage\": \"chain-$((i + 1))\"}"
        deploy "chain-$i" "chain_$i" "$bind"
        lbind=""; [ "$i" -lt 5 ] && lbind=", \"bindings\": {\"bench:chain/stage\": \"lchain-$((i + 1))\"}"
        deploy "lchain-$i" "chain_$i" "$lbind, \"fuse\": false"
        rbind=""; [ "$i" -lt 5 ] && rbind=", \"bindings\": {\"bench:chain/stage\": \"rchain-$((i + 1))\"}"
        deploy "rchain-$i" "chain_$i" "$rbind, \"reuse\": {\"requests\": $REUSE}"
        next=""; [ "$i" -lt 5 ] && next=", \"next\": \"inv-$((i + 1))\""
        deploy "inv-$i" chain_invoke ", \"config\": {\"stage\": \"$i\"$next}"
        deploy "hop-$i" http_fetch ", \"grants\": {\"outbound_http\": [\"$hostport\"]}"
    done
    hops="/hop-1/fetch/$hostport/hop-2/fetch/$hostport/hop-3/fetch/$hostport/hop-4/fetch/$hostport/chain-5/"
    url[single.$p]="$ingress/chain-5/" url[fused.$p]="$ingress/chain-1/" url[fused_t.$p]="$tingress/chain-1/"
    url[single_r.$p]="$ingress/rchain-5/" url[fused_r.$p]="$ingress/rchain-1/"
    url[linked.$p]="$ingress/lchain-1/" url[invoke.$p]="$ingress/inv-1/" url[http.$p]="$ingress$hops"
    # What requests enter (a chain's providers have no code of their own to report).
    wait_optimized "$at" bench chain-1 chain-5 lchain-1 rchain-1 rchain-5
    for i in 1 2 3 4 5; do wait_optimized "$at" bench "inv-$i" "hop-$i"; done
done
wait_optimized "$tadmin" bench chain-1
# The timed composition's optimized code is compiled after the plain one's.
for _ in $(seq 1 600); do
    grep -q 'optimized code swapped in.*+timed' "$tmp/tnode.log" && break
    sleep 0.1
done
for p in $(seq 1 "$NODES"); do
    for k in "${order[@]}"; do
        out=$(curl -sf "${url[$k.$p]}") || { echo "$k: ${url[$k.$p]} failed" >&2; exit 1; }
        echo "$k (set $p): $out" >&2
        wrk -t1 -c"$CONNS" -d2s "${url[$k.$p]}" >/dev/null
    done
done

# sum[KEY.CONNS.MEASURE] over all rounds, sum[...@SET] over a set's rounds.
declare -A sum
declare -A per_round per_round_r
for r in $(seq 1 "$ROUNDS"); do
    p=$(proc_of "$r")
    for c in 1 "$CONNS"; do
        if [ "$c" = 1 ]; then lone_begin; else lone_end; fi
        for k in "${order[@]}"; do
            wrk -t1 -c"$c" -d"${DURATION}s" --latency "${url[$k.$p]}" >"$tmp/$k.$c.$r.wrk"
            read -r rps p50 p99 < <(parse "$tmp/$k.$c.$r.wrk")
            echo "round $r (set $p) c$c $k: $rps req/s p50 ${p50}us p99 ${p99}us" >&2
            for m in rps p50 p99; do
                for key in "$k.$c.$m" "$k.$c.$m@$p"; do
                    sum[$key]=$(awk -v s="${sum[$key]:-0}" -v x="${!m}" 'BEGIN { print s + x }')
                done
            done
        done
    done
    read -r _ s50 _ < <(parse "$tmp/single.1.$r.wrk")
    read -r _ f50 _ < <(parse "$tmp/fused.1.$r.wrk")
    f=$(awk -v a="$f50" -v b="$s50" 'BEGIN { printf "%.2f", a / b }')
    for key in all "$p"; do per_round[$key]+="${per_round[$key]:+, }$f"; done
    read -r _ s50 _ < <(parse "$tmp/single_r.1.$r.wrk")
    read -r _ f50 _ < <(parse "$tmp/fused_r.1.$r.wrk")
    f=$(awk -v a="$f50" -v b="$s50" 'BEGIN { printf "%.2f", a / b }')
    for key in all "$p"; do per_round_r[$key]+="${per_round_r[$key]:+, }$f"; done
done
lone_end
# The median of per-round ratios: a median of ratios measured seconds apart is not
# swayed by one odd round.
median() { tr -d ' ' <<<"$1" | tr ',' '\n' | sort -g | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2f", m }'; }
# mean KEY[@SET]: the mean of its rounds (a set has every NODES-th round).
mean() {
    local n=$ROUNDS
    [[ $1 == *@* ]] && n=$(( (ROUNDS - ${1#*@}) / NODES + 1 ))
    awk -v s="${sum[$1]}" -v n="$n" 'BEGIN { printf "%.0f", s / n }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
label() { case $1 in
    single) echo "single service (\`chain-5\` alone)" ;;
    fused) echo "chain of 5, fused (one component)" ;;
    fused_t) echo "chain of 5, fused, every part timed (\`--trace-fused-parts 1\`)" ;;
    single_r) echo "single service, reuse $REUSE" ;;
    fused_r) echo "chain of 5, fused, reuse $REUSE" ;;
    linked) echo "chain of 5, linked (\`fuse: false\`, one Store)" ;;
    invoke) echo "5 services via \`invoke.call\`" ;;
    http) echo "5 HTTP hops through ingress" ;;
    esac; }
rows=""
for k in "${order[@]}"; do
    p50=$(mean "$k.1.p50"); p99=$(mean "$k.1.p99"); rps=$(mean "$k.$CONNS.rps"); tp99=$(mean "$k.$CONNS.p99")
    rows+="| $(label "$k") | $p50 | $p99 | $rps | $tp99 | $(ratio "$p50" "$(mean single.1.p50)") |"$'\n'
done
# The headline figures over all rounds, then (fig_set) for each set's rounds alone.
for p in all $(seq 1 "$NODES"); do
    at=""; [ "$p" = all ] || at="@$p"
    one=""; [ "$p" = all ] || one=$p
    fig_set fused_p50 "$(median "${per_round[$p]}")" $one
    fig_set fused_r_p50 "$(median "${per_round_r[$p]}")" $one
    fig_set linked_p50 "$(ratio "$(mean "linked.1.p50$at")" "$(mean "fused.1.p50$at")")" $one
    fig_set fused_tp "$(ratio "$(mean "fused.$CONNS.rps$at")" "$(mean "single.$CONNS.rps$at")")" $one
    fig_set fused_r_tp "$(ratio "$(mean "fused_r.$CONNS.rps$at")" "$(mean "single_r.$CONNS.rps$at")")" $one
done
fused_vs_single_mean=$(ratio "$(mean fused.1.p50)" "$(mean single.1.p50)")
fused_r_vs_fresh=$(ratio "$(mean fused_r.$CONNS.rps)" "$(mean single.$CONNS.rps)")
timed_tp=$(ratio "$(mean fused_t.$CONNS.rps)" "$(mean fused.$CONNS.rps)")
timed_p50=$(ratio "$(mean fused_t.1.p50)" "$(mean fused.1.p50)")

section="$tmp/section.md"
cat >"$section" <<MD
<!-- chain:begin -->
## Composition: a chain of five services

\`benches/chain.sh\` (\`./dev bench chain\`): \`chain-1\` … \`chain-5\` are pass-through stages
that each add a field and call the next through the typed import \`bench:chain/stage\`.
All traffic goes through ingress on 127.0.0.1 (\`GET\`, $built, instances = $INSTANCES).
Latency is \`wrk -t1 -c1\` ($(halt_poll_note)), throughput \`wrk -t1 -c$CONNS\`, ${DURATION}s each, means of
$ROUNDS alternating rounds (the one-connection ratios below: medians of per-round ratios).
The node serving every row but the timed one runs in $NODES processes (sets) of one binary, taking
the rounds in turn; each headline figure is over all rounds with each set's after it, and each
verdict is on that figure with each set's after it (two processes of one binary differ by 5-20 % here).

| served as | p50 (µs), 1 conn | p99 (µs), 1 conn | requests/s, $CONNS conns | p99 (µs), $CONNS conns | p50 / single |
| --- | ---: | ---: | ---: | ---: | ---: |
$rows
- Fused chain p50 / single service p50, the median of the per-round ratios (${per_round[all]};
  the ratio of the mean p50s above is $fused_vs_single_mean): $(fig_show fused_p50) (issue 20's target
  ≤ 1.1: $(fig_verdict fused_p50 le 1.1); the composition issue's ≤ 1.15: $(fig_verdict fused_p50 le 1.15));
  throughput fused / single: $(fig_show fused_tp) (issue 20's target ≥ 0.8: $(fig_verdict fused_tp ge 0.8)).
- With instance reuse on both (like with like): throughput fused / single $(fig_show fused_r_tp)
  (target ≥ 0.8: $(fig_verdict fused_r_tp ge 0.8)), p50 at one connection fused / single
  $(fig_show fused_r_p50) (median of ${per_round_r[all]}; target ≤ 1.1: $(fig_verdict fused_r_p50 le 1.1)). The reused fused chain
  against the fresh single service: **$fused_r_vs_fresh** × its throughput.
- Linked (unfused) p50 / fused p50: $(fig_show linked_p50) (target ≤ 1.5: $(fig_verdict linked_p50 le 1.5)).
- Per-part spans of a fused chain (issue 17): a request that runs the timed composition
  (a generated shim on each of the four calls, reporting to the host) against the plain
  one: throughput **$timed_tp** ×, p50 at one connection **$timed_p50** × (no target:
  reported; it is why \`--trace-fused-parts\` is off by default, and the \`fused\` row runs
  with that default).
- \`invoke.call\` and HTTP hops are reported as they are: each stage there is a whole
  service call (admission, a fresh Store and instance, request/response copies; for HTTP
  also a loopback connection and HTTP parsing).
- Where the fused chain's extra cost goes (perf, 32 connections): instantiating a
  composite of five components is five core instances with five linear memories to
  reset (one \`PAGEMAP_SCAN\` ioctl each, ~9% of CPU) and their import tables
  (\`func_loc\` lookups, ~5%); guest code, including copying the field list across four
  component boundaries, is ~13%. At one connection (with halt polling on, the vCPU
  wake-ups no longer decide the figure; see below), the same costs show in latency: $(mean fused.1.p50) against
  $(mean single.1.p50) µs fresh, $(mean fused_r.1.p50) against $(mean single_r.1.p50) µs reused.
- Until 2026-12-06 the one-connection rows ran with this VM's halt polling off, and the
  fused / single p50 swung between runs (0.83 on 2026-12-04; 1.31, 1.49 and 0.73 on
  2026-12-05): a single service's p50 was steady within a run but either 26-30 µs or
  70-103 µs between runs, while the fused chain's stayed at 59-74 µs. The slow mode was
  the wake-up of a halted vCPU (native hyper has it too: 80-90 µs against 16 µs with halt
  polling; "Tried for hello throughput"), so those "met" readings said which mode the
  rounds found, not that the target held.

Measured on: $(nproc) cores, $(uname -m), kernel $(uname -r), $(date -u +%Y-%m-%d).
<!-- chain:end -->
MD
if [ -n "${OUT:-}" ]; then cp "$section" "$OUT"; exit 0; fi
write_section chain "$section"
echo "updated docs/BENCHMARKS.md: fused/single p50 $(fig_mean fused_p50), linked/fused p50 $(fig_mean linked_p50)" >&2
