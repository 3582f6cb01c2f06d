#!/usr/bin/env bash
# Container test: the image `./dev image` built runs as the Compose cluster of
# deploy/compose.yaml (podman-compose): three nodes form, `hello` deployed from the host
# with the CLI answers through each node, one container is stopped and the other two
# still serve. Every wait is bounded; the project and its volumes are removed at the end.
#
#   tests/containers/compose.sh NANOGRID_CLI HELLO_WASM
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -eq 2 ] || { echo "usage: $0 NANOGRID_CLI HELLO_WASM" >&2; exit 2; }
cli=$1 hello=$2
image=${NANOGRID_IMAGE:-localhost/nanogrid:latest}
project=ngtest$$
export N1_HTTP=18180 N1_ADMIN=18181 N2_HTTP=18182 N2_ADMIN=18183 N3_HTTP=18184 N3_ADMIN=18185
compose=(podman-compose -p "$project" -f deploy/compose.yaml)

fail() { echo "FAIL: $*" >&2; exit 1; }
say() { echo "compose test: $*"; }

# Until "$@" succeeds, at most $1 seconds.
within() {
    local secs=$1; shift
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $end ] || return 1
        sleep 0.5
    done
}

command -v podman >/dev/null || fail "podman is not installed (./dev test installs it)"
command -v podman-compose >/dev/null || fail "podman-compose is not on PATH (./dev test installs it)"
if ! podman run --rm "$image" --version >/dev/null 2>&1; then
    export CONTAINERS_CONF=$PWD/tests/containers/containers.conf
    podman run --rm "$image" --version >/dev/null || fail "podman cannot run $image here, even with $CONTAINERS_CONF"
    say "plain podman run failed; using $CONTAINERS_CONF (runc, cgroupfs, ulimits)"
fi

# The image: non-root, a data volume, a health check.
user=$(podman image inspect "$image" --format '{{.Config.User}}')
[ "$user" = "10001:10001" ] || fail "the image runs as '$user', not 10001:10001"
podman image inspect "$image" --format '{{json .Config.Volumes}}' | grep -q '/var/lib/nanogrid' || fail "no data volume"
podman image inspect "$image" --format '{{json .HealthCheck}}' | grep -q 'nanogrid","health' \
    || fail "the image has no health check"
size=$(podman image inspect "$image" --format '{{.Size}}')
say "image $image: $((size / 1024 / 1024)) MiB, user $user"

cleanup() { "${compose[@]}" down -v -t 5 >/dev/null 2>&1 || true; }
trap cleanup EXIT
"${compose[@]}" up -d >/dev/null 2>&1 || { "${compose[@]}" logs 2>&1 | tail -40; fail "podman-compose up failed"; }
cid() { podman ps -q --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.service=$1"; }

health() { curl -fsS "http://127.0.0.1:$1/v1/health"; }
for port in $N1_ADMIN $N2_ADMIN $N3_ADMIN; do
    within 120 health "$port" || { "${compose[@]}" logs 2>&1 | tail -60; fail "the node on admin port $port never served"; }
done
say "three nodes serve: $(curl -fsS "http://127.0.0.1:$N1_ADMIN/v1/health" | tr -d '\n ')"
podman healthcheck run "$(cid n1)" >/dev/null || fail "the container's own health check fails on n1"

token=$(podman exec "$(cid n1)" /usr/local/bin/nanogrid cluster token /etc/nanogrid/cluster)
[ ${#token} -ge 32 ] || fail "no admin token from the cluster volume"
export NANOGRID_TOKEN=$token NANOGRID_ADMIN=http://127.0.0.1:$N1_ADMIN
# One cluster: n1's Raft membership has all three as voters, each serving (n1 shows
# another's mode from gossip, a round after it changed). A node of a cluster formed apart
# would show as `joining`.
three_serving() { [ "$("$cli" status | grep -cE '^n[123] +(leader|follower) +voter ')" = 3 ]; }
if ! within 30 three_serving; then
    "$cli" status || true
    "${compose[@]}" logs 2>&1 | grep -E 'bootstrap|mode changed|lookup host|ERROR' | tail -40
    fail "the cluster does not show three serving nodes"
fi
"$cli" deploy "$hello" --name hello --instances 3 >/dev/null

hello_via() { curl -fsS "http://127.0.0.1:$1/hello/x?name=compose" | grep -q "hello, compose!"; }
for port in $N1_HTTP $N2_HTTP $N3_HTTP; do
    within 30 hello_via "$port" || fail "hello is not served through port $port"
done
say "hello answers through each node"

podman stop -t 10 "$(cid n2)" >/dev/null
say "stopped n2"
for port in $N1_HTTP $N3_HTTP; do
    within 30 hello_via "$port" || fail "hello is not served through port $port with n2 stopped"
    for _ in $(seq 20); do hello_via "$port" || fail "a request through port $port failed with n2 stopped"; done
done
say "with n2 stopped, n1 and n3 answered 20 requests each"
say "ok"
