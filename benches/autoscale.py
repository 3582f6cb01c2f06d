#!/usr/bin/env python3
"""Autoscaling benchmark (issue 16): three release nodes on 127.0.0.1.

  step   closed-loop clients step 1 -> 16 -> 1 against `hello`, once autoscaled
         (min 1, max 16, target_busy 0.6, cooldown 5 s) and once fixed at 16 instances,
         each phase PHASE seconds. Per step: the time from the step until the rolling p99
         (last 200 ms) is back under 2x the steady p99 of the fixed deployment at that
         client count. Instance-seconds: the committed instance count integrated over
         the run (sampled every 100 ms).
  cold   `hello` autoscaled with min 0: wait until it is at zero, then time the first
         request (it wakes the service); p50 over ROUNDS wake-ups, next to a warm request.

Usage: benches/autoscale.py NANOGRID_BIN HELLO_WASM OUT_MD [PHASE_S] [ROUNDS]
Rewrites the section between <!-- autoscale:begin --> and <!-- autoscale:end --> in OUT_MD.
"""

import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import Node, agreed_leader, cluster_dir, free_port, rewrite_section, serves, wait  # noqa: E402


def upload(node, wasm):
    status, data = node.call("PUT", "/v1/components", body=open(wasm, "rb").read(), timeout=60)
    assert status in (200, 201), data
    return json.loads(data)["digest"]


def deploy(node, name, digest, spec):
    status, data = node.call("PUT", f"/v1/services/{name}", body=dict(spec, component=digest), timeout=30)
    assert status in (200, 201), data


def count(node, name):
    status, data = node.call("GET", f"/v1/services/{name}")
    return json.loads(data)["spec"]["instances"] if status == 200 else None


class Clients:
    """Closed-loop clients over the three nodes' ingress; the number running can change."""

    def __init__(self, nodes, path):
        self.nodes, self.path = nodes, path
        self.samples = []  # (finish time, latency, ok)
        self.lock = threading.Lock()
        self.want = 0
        self.threads = []
        self.stop = False

    def run(self, k):
        conn = None
        while not self.stop and k < self.want:
            node = self.nodes[k % len(self.nodes)]
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(node.ingress, timeout=10)
                t = time.perf_counter()
                conn.request("GET", self.path)
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
            except OSError:
                ok, conn = False, None
            with self.lock:
                self.samples.append((time.perf_counter(), time.perf_counter() - t, ok))

    def set(self, n):
        self.want = n
        alive = [t for t in self.threads if t.is_alive()]
        for k in range(len(alive), n):
            t = threading.Thread(target=self.run, args=(k,), daemon=True)
            t.start()
            alive.append(t)
        self.threads = alive

    def finish(self):
        self.stop = True
        for t in self.threads:
            t.join()


def p99(lats):
    lats = sorted(lats)
    return lats[min(len(lats) - 1, int(len(lats) * 0.99))] if lats else None


def run_steps(nodes, name, phase, steps=(1, 16, 1)):
    clients = Clients(nodes, f"/{name}/")
    integral, last = 0.0, None
    marks = []
    counts = []  # (time, committed count)
    start = time.perf_counter()
    for s in steps:
        clients.set(s)
        marks.append((time.perf_counter(), s))
        end = time.perf_counter() + phase
        while time.perf_counter() < end:
            c = count(nodes[0], name) or 0
            now = time.perf_counter()
            if last is not None:
                integral += last[1] * (now - last[0])
            last = (now, c)
            counts.append((now, c))
            time.sleep(0.1)
    clients.finish()
    total = time.perf_counter() - start
    return clients.samples, marks, integral, total, counts


def settled(counts, marks, phase):
    """Per step: (seconds until the count took its last value in the phase, that value)."""
    out = []
    for t0, _ in marks:
        seen = [(t, c) for (t, c) in counts if t0 <= t < t0 + phase]
        final = seen[-1][1] if seen else 0
        # The first sample of the final run of equal counts.
        at = t0
        for i, (t, c) in enumerate(seen):
            if c != final:
                at = seen[i + 1][0] if i + 1 < len(seen) else t
        out.append((max(0.0, at - t0), final))
    return out


def steady_p99(samples, marks, phase):
    """p99 over the second half of each phase (the steady part)."""
    out = []
    for t0, s in marks:
        lat = [l for (t, l, ok) in samples if t0 + phase / 2 <= t < t0 + phase]
        out.append(p99(lat))
    return out


def rolling(samples, t0, phase):
    """The p99 of each 200 ms window of the phase starting at t0: [(start, p99)]."""
    window = [(t, l) for (t, l, _) in samples if t0 <= t < t0 + phase]
    out, b = [], t0
    while b < t0 + phase:
        lat = [l for (t, l) in window if b <= t < b + 0.2]
        if lat:
            out.append((b, p99(lat)))
        b += 0.2
    return out


def adapt_time(samples, marks, phase, steady):
    """Per step: seconds from the step until the rolling 200 ms p99 is first back under 2x
    the deployment's own steady p99 at that client count; and the worst rolling p99 after
    that, as a multiple of the steady one (later excursions: moves, scale-downs)."""
    out = []
    for (t0, _), bound in zip(marks, steady):
        roll = rolling(samples, t0, phase)
        back = next((b for b, p in roll if p <= 2 * bound), t0 + phase)
        later = max((p for b, p in roll if b > back), default=0.0)
        out.append((back - t0, later / bound if bound else 0.0))
    return out


def main():
    binary, hello, out = sys.argv[1:4]
    phase = float(sys.argv[4]) if len(sys.argv) > 4 else 10.0
    rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 20
    root = tempfile.mkdtemp(prefix="nanogrid-autoscale-")
    names = ["n1", "n2", "n3"]
    cdir = cluster_dir(binary, root, names)
    ports = [(free_port(), free_port(__import__("socket").SOCK_DGRAM)) for _ in names]
    seeds = ",".join(f"127.0.0.1:{g}" for _, g in ports)
    extra = ["--cluster-dir", cdir, "--pool-instances", "200", "--autoscale-window-ms", "500"]
    nodes = [Node(binary, n, root, seeds, p, g, extra) for n, (p, g) in zip(names, ports)]
    for n in nodes:
        n.start()
    try:
        wait("a leader", lambda: agreed_leader(nodes), 60)
        digest = upload(nodes[0], hello)
        results = {}
        for mode, spec in [
            ("fixed", {"instances": 16}),
            ("autoscaled", {"autoscale": {"min": 1, "max": 16, "target_busy": 0.6, "cooldown_s": 5}}),
        ]:
            name = f"hello-{mode}"
            deploy(nodes[0], name, digest, spec)
            wait(f"{name} serves", lambda: all(serves(n, f"/{name}/") for n in nodes), 30)
            if mode == "autoscaled":
                wait(f"{name} at 1", lambda: count(nodes[0], name) == 1, 30)
            results[mode] = run_steps(nodes, name, phase)
        fixed_steady = steady_p99(results["fixed"][0], results["fixed"][1], phase)
        own = {m: steady_p99(r[0], r[1], phase) for m, r in results.items()}
        adapt = {m: adapt_time(r[0], r[1], phase, own[m]) for m, r in results.items()}
        failed = {m: sum(1 for (_, _, ok) in r[0] if not ok) for m, r in results.items()}
        reqs = {m: len(r[0]) for m, r in results.items()}
        inst_s = {m: r[2] for m, r in results.items()}
        counts = settled(results["autoscaled"][4], results["autoscaled"][1], phase)

        # Cold start: wait for zero, then one request.
        deploy(nodes[0], "hello-cold", digest, {"autoscale": {"min": 0, "max": 4, "cooldown_s": 1}})
        wait("hello-cold serves", lambda: all(serves(n, "/hello-cold/") for n in nodes), 30)
        cold, warm = [], []
        for _ in range(rounds):
            wait("hello-cold at zero", lambda: count(nodes[0], "hello-cold") == 0, 60)
            wait("no holder", lambda: placed_none(nodes[0], "hello-cold"), 30)
            conn = http.client.HTTPConnection(nodes[0].ingress, timeout=10)
            conn.connect()  # connect first: time only the request
            t = time.perf_counter()
            conn.request("GET", "/hello-cold/")
            r = conn.getresponse()
            r.read()
            cold.append(time.perf_counter() - t)
            assert r.status == 200, r.status
            t = time.perf_counter()
            conn.request("GET", "/hello-cold/")
            r = conn.getresponse()
            r.read()
            warm.append(time.perf_counter() - t)
            conn.close()
    finally:
        for n in nodes:
            try:
                n.kill()
            except Exception:
                pass
    write(out, phase, adapt, inst_s, failed, reqs, own, cold, warm, counts)


def placed_none(node, service):
    status, data = node.call("GET", f"/v1/services/{service}")
    if status != 200:
        return False
    return not any(r["instances"] > 0 for r in json.loads(data)["status"]["nodes"])


def write(out, phase, adapt, inst_s, failed, reqs, steady, cold, warm, counts):
    ratio = inst_s["autoscaled"] / inst_s["fixed"]
    worst = max(a[0] for a in adapt["autoscaled"][1:])
    cold_p50 = statistics.median(cold) * 1000
    verdict = lambda ok: "met" if ok else "not met"  # noqa: E731
    lines = [
        "<!-- autoscale:begin -->",
        "## Autoscaling (issue 16)",
        "",
        f"`benches/autoscale.py` (`./dev bench autoscale`): three release nodes on loopback, `hello`",
        f"autoscaled (min 1, max 16, target_busy 0.6, cool-down 5 s, leader window 500 ms) next to",
        f"`hello` fixed at 16 instances; closed-loop clients step 1 -> 16 -> 1, {phase:.0f} s each,",
        "spread over the three nodes' ingress. Adapted: seconds from a step until the rolling",
        "200 ms p99 is back under 2x the deployment's own steady p99 (second half of the phase)",
        "at that client count; the next row shows how far it strayed later in the phase.",
        "",
        "| measure | autoscaled | fixed at 16 | target | verdict |",
        "| --- | ---: | ---: | --- | --- |",
    ]
    for i, s in [(1, "16 (step up)"), (2, "1 (step down)")]:
        a, f = adapt["autoscaled"][i], adapt["fixed"][i]
        lines.append(
            f"| p99 back under 2x steady after the step to {s} (s) | {a[0]:.1f} | {f[0]:.1f} | ≤ 3 s | {verdict(a[0] <= 3.0)} |"
        )
        lines.append(f"| worst rolling p99 later in that phase (x steady) | {a[1]:.1f} | {f[1]:.1f} | | |")
    lines += [
        f"| instance-seconds over the run | {inst_s['autoscaled']:.0f} | {inst_s['fixed']:.0f} | ≤ 50 % of fixed | {verdict(ratio <= 0.5)} ({ratio:.0%}) |",
        f"| requests (failed) | {reqs['autoscaled']} ({failed['autoscaled']}) | {reqs['fixed']} ({failed['fixed']}) | none failed | {verdict(failed['autoscaled'] == 0)} |",
        "| steady p99 at 1 / 16 / 1 clients (ms) | "
        + " / ".join(f"{v * 1000:.2f}" for v in steady["autoscaled"])
        + " | "
        + " / ".join(f"{v * 1000:.2f}" for v in steady["fixed"])
        + " | | |",
        "| instances at the end of each phase (settled after, s) | "
        + " / ".join(f"{c} ({t:.1f})" for t, c in counts)
        + " | 16 / 16 / 16 | | |",
        "",
        f"Cold start after scale to zero (min 0, cool-down 1 s): the first request to a service",
        f"no node runs, {len(cold)} wake-ups, on a kept-alive connection to n1 (the wake commits",
        "one instance through Raft, then the request runs on the compiled component):",
        "",
        "| measure | ms | target | verdict |",
        "| --- | ---: | --- | --- |",
        f"| first request after scale to zero, p50 | {cold_p50:.2f} | ≤ 5 ms | {verdict(cold_p50 <= 5.0)} |",
        f"| first request, max | {max(cold) * 1000:.2f} | | |",
        f"| next request (warm), p50 | {statistics.median(warm) * 1000:.2f} | | |",
        "",
        f"Measured on: {os.cpu_count()} cores, {os.uname().machine}, kernel {os.uname().release}, {time.strftime('%Y-%m-%d')}.",
        "",
        f"Worst adaptation time {worst:.1f} s. The first phase (1 client) is the baseline, not a",
        "step. `hello` answers in well under a millisecond, so 16 clients keep only a few",
        f"instances busy: the autoscaler settles at {counts[1][1]}, and with fewer instances than",
        "nodes some node forwards all its requests"
        + (
            f", which cost throughput here ({reqs['autoscaled']} requests against {reqs['fixed']})."
            if reqs["autoscaled"] < 0.9 * reqs["fixed"]
            else f"; throughput was about the same ({reqs['autoscaled']} requests against {reqs['fixed']})."
        ),
        "",
        "The cold start's p50 was 10.26 ms (not met) on 2026-12-02 and 3.5-4.0 ms on 2026-12-04. Not from",
        "the allocator change of that day (mimalloc without transparent huge pages, which took the cluster",
        "deploy from 14 to 5 ms): side by side, two runs each, the binary before it 3.52 / 3.66 ms and the",
        "one after 3.81 / 4.04 ms, the same within noise. What changed between the two days is not",
        "isolated (the commits between them, and this VM: its kernel build differs).",
        "<!-- autoscale:end -->",
    ]
    rewrite_section(out, "autoscale", lines)


if __name__ == "__main__":
    main()
