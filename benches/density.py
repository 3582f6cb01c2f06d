#!/usr/bin/env python3
"""Deploy latency and density (issue 20), release nodes on 127.0.0.1.

  deploy   deploy -> first 200 on one node, for a new component (the `hello` sample,
           about 106 KB: the target names 128 KB, so the verdict scales a smaller one's time
           up by its size; with a unique custom section, so its digest is new; on a fresh node, so
           nothing of it was compiled before), for the same code under a new digest on a
           node that compiled it before (Cranelift's function cache hits), and for a known digest (a new service name, a component already stored):
           the time from the upload (new) or the PUT (known) until GET answers 200,
           median of ROUNDS. The Python and JavaScript test components (13-19 MB, when
           tests/guests-build.sh has built them) are timed from upload to PUT returning.
  cluster  three nodes: a known digest deployed through n1, then GET through n2 at once:
           the time from the PUT until n2 answers 200, and the answers other than 200
           seen after the PUT returned (the issue: "503 for 100-300 ms").
  density  one node: COUNTS services of `hello` deployed (instances = 1 each), the node's
           RSS after each count is reached, and again after every service has served
           one request.

Usage: benches/density.py NANOGRID_BIN HELLO_WASM OUT_MD [ROUNDS] [COUNTS] [TOOLCHAIN_DIR]
COUNTS is comma separated (default 10,100,1000). Rewrites the section between
<!-- density:begin --> and <!-- density:end --> in OUT_MD.
"""

import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import TOKEN, Node, agreed_leader, cluster_dir, free_port, optimized, rewrite_section, wait  # noqa: E402


class Single:
    """One node, no cluster: `nanogrid serve` on free ports."""

    def __init__(self, binary, root):
        self.dir = os.path.join(root, "single")
        out = open(self.dir + ".out", "w")
        self.proc = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
             "--data-dir", self.dir, "--admin-token", TOKEN],
            stdout=out, stderr=open(self.dir + ".log", "w"))
        text = wait("the node listens", lambda: self._listening(), 60)
        self.ingress, self.admin = text

    def _listening(self):
        text = open(self.dir + ".out").read()
        i = re.search(r"ingress listening on http://(\S+)", text)
        a = re.search(r"admin listening on http://(\S+)", text)
        return (i.group(1), a.group(1)) if i and a else None

    call = Node.call

    def rss_mib(self):
        fields = dict(line.split(":", 1) for line in open(f"/proc/{self.proc.pid}/status") if ":" in line)
        return int(fields["VmRSS"].split()[0]) / 1024

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(os.path.dirname(self.dir), ignore_errors=True)


def with_nonce(wasm, nonce):
    """The component with a custom section appended: a new digest, the same code."""
    name, payload = b"nanogrid-bench", nonce.encode()
    body = bytes([len(name)]) + name + payload
    return wasm + b"\x00" + leb(len(body)) + body


def leb(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def upload(node, data):
    status, body = node.call("PUT", "/v1/components", body=data, timeout=300)
    assert status in (200, 201), body
    return json.loads(body)["digest"]


def deploy(node, name, digest, spec=None):
    status, body = node.call("PUT", f"/v1/services/{name}", body=dict(spec or {"instances": 1}, component=digest),
                             timeout=300)
    assert status in (200, 201), body


def get(ingress, path):
    """The status of GET path (0 when the connection fails)."""
    try:
        c = http.client.HTTPConnection(ingress, timeout=5)
        c.request("GET", path)
        status = c.getresponse().status
        c.close()
        return status
    except OSError:
        return 0


def first_200(ingress, path, within=30.0):
    """Poll until GET answers 200; the statuses seen before it."""
    seen = []
    deadline = time.time() + within
    while time.time() < deadline:
        s = get(ingress, path)
        if s == 200:
            return seen
        seen.append(s)
    raise RuntimeError(f"{path} did not answer 200 within {within} s (saw {seen[-5:]})")


def new_component(binary, hello, nonce):
    """Upload -> first 200 of a component nothing was compiled for: a fresh node (empty
    compile caches). The total and its parts (upload and compile, PUT, first 200), and
    upload -> its optimized code swapped in."""
    node = Single(binary, tempfile.mkdtemp(prefix="ng-density-"))
    try:
        t0 = time.perf_counter()
        digest = upload(node, with_nonce(hello, nonce))
        t1 = time.perf_counter()
        deploy(node, "new", digest)
        t2 = time.perf_counter()
        first_200(node.ingress, "/new/x")
        t3 = time.perf_counter()
        optimized(node, "new")
        t4 = time.perf_counter()
        return (t3 - t0) * 1000, ((t1 - t0) * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000, (t4 - t0) * 1000)
    finally:
        node.stop()


def deploy_latency(binary, node, hello, rounds, toolchain):
    new, rebuilt, known, split = [], [], [], []
    base = upload(node, hello)
    for r in range(rounds):
        total, parts = new_component(binary, hello, f"new-{r}-{time.time()}")
        new.append(total)
        split.append(parts)
        # The same code under a new digest (a rebuild that changed data only, or another
        # build of the same functions): its functions are in the node's cache.
        t0 = time.perf_counter()
        digest = upload(node, with_nonce(hello, f"rebuilt-{r}-{time.time()}"))
        deploy(node, f"rebuilt-{r}", digest)
        first_200(node.ingress, f"/rebuilt-{r}/x")
        rebuilt.append((time.perf_counter() - t0) * 1000)
        # Not measured: the background compile of what was just deployed ends first.
        optimized(node, f"rebuilt-{r}")
        t0 = time.perf_counter()
        deploy(node, f"known-{r}", base)
        first_200(node.ingress, f"/known-{r}/x")
        known.append((time.perf_counter() - t0) * 1000)
    big = {}
    for lang, file in (("Python", "reach-py.wasm"), ("JavaScript", "reach-js.wasm")):
        path = os.path.join(toolchain or "", file)
        if not toolchain or not os.path.exists(path):
            continue
        data = with_nonce(open(path, "rb").read(), f"{lang}-{time.time()}")
        t0 = time.perf_counter()
        digest = upload(node, data)
        deploy(node, f"big-{lang.lower()}", digest)
        deployed = (time.perf_counter() - t0) * 1000
        optimized(node, f"big-{lang.lower()}")
        big[lang] = (len(data), deployed, (time.perf_counter() - t0) * 1000)
    return new, rebuilt, known, split, big


def cluster_deploy(binary, hello, rounds):
    root = tempfile.mkdtemp(prefix="ng-density-")
    ports = [(free_port(), free_port(socket.SOCK_DGRAM)) for _ in range(3)]
    seeds = ",".join(f"127.0.0.1:{g}" for _, g in ports)
    names = [f"n{i + 1}" for i in range(3)]
    secrets = ["--cluster-dir", cluster_dir(binary, root, names)]
    nodes = [Node(binary, n, root, seeds, p, g, secrets) for n, (p, g) in zip(names, ports)]
    try:
        for n in nodes:
            n.start()
        wait("the cluster forms", lambda: agreed_leader(nodes), 60)
        digest = upload(nodes[0], hello)
        took, refused = [], []
        # Round 0 is the digest's first deploy in the cluster: n2 and n3 fetch the
        # component from n1 and compile it. It is reported apart from the others.
        for r in range(rounds + 1):
            t0 = time.perf_counter()
            deploy(nodes[0], f"c-{r}", digest, {"instances": 3})
            seen = first_200(nodes[1].ingress, f"/c-{r}/x")
            took.append((time.perf_counter() - t0) * 1000)
            refused.append(len(seen))
            for n in nodes:
                optimized(n, f"c-{r}")
        return took, refused
    finally:
        for n in nodes:
            n.kill()
        shutil.rmtree(root, ignore_errors=True)


def density(binary, hello, counts):
    root = tempfile.mkdtemp(prefix="ng-density-")
    node = Single(binary, root)
    try:
        digest = upload(node, hello)
        # The first service waits for its optimized code: the compiler's heap is then in
        # the RSS before, not in whichever row the background compile ends in.
        deploy(node, "s-0", digest)
        optimized(node, "s-0")
        rows, done = [], 1
        base = node.rss_mib()
        for target in counts:
            t0 = time.perf_counter()
            while done < target:
                deploy(node, f"s-{done}", digest)
                done += 1
            deploy_ms = (time.perf_counter() - t0) * 1000 / max(1, target - (rows[-1][0] if rows else 0))
            idle = node.rss_mib()
            for i in range(done):
                assert get(node.ingress, f"/s-{i}/x") == 200, f"s-{i} does not serve"
            rows.append((target, idle, node.rss_mib(), deploy_ms))
        return base, rows
    finally:
        node.stop()


def main():
    binary, hello_path, out = sys.argv[1:4]
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    counts = [int(c) for c in (sys.argv[5] if len(sys.argv) > 5 else "10,100,1000").split(",")]
    toolchain = sys.argv[6] if len(sys.argv) > 6 else None
    hello = open(hello_path, "rb").read()

    root = tempfile.mkdtemp(prefix="ng-density-")
    node = Single(binary, root)
    try:
        new, rebuilt, known, split, big = deploy_latency(binary, node, hello, rounds, toolchain)
    finally:
        node.stop()
    c_all, c_refused = cluster_deploy(binary, hello, rounds)
    c_first, c_took = c_all[0], c_all[1:]
    base, rows = density(binary, hello, counts)

    med = statistics.median

    def verdict(v, target):
        return "met" if v <= target else "not met"

    up, put, serve, swapped = (med(s[i] for s in split) for i in range(4))
    # The target names a 128 KB component: a smaller `hello` is judged as if its time grew
    # with its size.
    size_kb = os.path.getsize(hello_path) / 1000
    lines = [
        "<!-- density:begin -->",
        "## Deploy latency and density (issue 20)",
        "",
        f"{time.strftime('%Y-%m-%d', time.gmtime())}, `benches/density.py` ({os.path.basename(binary)}), "
        f"nodes on 127.0.0.1; medians of {rounds} deploys.",
        "",
        "| what | figure | target | verdict |",
        "| --- | ---: | --- | --- |",
        f"| new {size_kb:.0f} KB component (`hello`, new digest, fresh node: nothing compiled before): upload → first "
        f"200 (ms) | {med(new):.0f} | ≤ 100 ms (for 128 KB) | {verdict(med(new) * max(1.0, 128 / size_kb), 100)} |",
        f"| … of which upload and compile / PUT / PUT returned → first 200 (ms) | {up:.0f} / {put:.0f} / {serve:.0f} | "
        "| reported |",
        f"| … upload → its optimized code swapped in (Cranelift, in the background) (ms) | {swapped:.0f} | | reported |",
        f"| the same code under a new digest (its functions compiled before): upload → first 200 (ms) "
        f"| {med(rebuilt):.0f} | | reported |",
        f"| known digest: PUT → first 200, one node (ms) | {med(known):.1f} | ≤ 10 ms | {verdict(med(known), 10)} |",
        f"| known digest, three nodes: PUT via n1 → first 200 via n2 (ms) | {med(c_took):.1f} | ≤ 10 ms | "
        f"{verdict(med(c_took), 10)} |",
        f"| … the digest's first deploy in the cluster (n2 and n3 fetch and compile it) (ms) | {c_first:.0f} | "
        "| reported |",
        f"| … answers other than 200 from n2 after the PUT returned (max of {rounds + 1}) | {max(c_refused)} | 0 | "
        f"{verdict(max(c_refused), 0)} |",
    ]
    for lang, (size, ms, swapped) in big.items():
        lines.append(f"| {lang} component ({size / 1e6:.1f} MB, new digest, first on the node): upload → deployed (ms) | {ms:.0f} | "
                     "| reported |")
        lines.append(f"| … upload → its optimized code swapped in (ms) | {swapped:.0f} | | reported |")
    lines += [
        "",
        f"Density: `hello` deployed as N services (instances = 1 each) on one node; RSS {base:.0f} MiB with the first one deployed and its optimized code compiled.",
        "",
        "| services | RSS deployed (MiB) | RSS after one request each (MiB) | deploy each (ms) | target | verdict |",
        "| ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for n, idle, used, ms in rows:
        target, v = ("≤ 300 MiB", verdict(used, 300)) if n == 1000 else (
            ("deployable", "met") if n == 10000 else ("", "reported"))
        lines.append(f"| {n} | {idle:.0f} | {used:.0f} | {ms:.1f} | {target} | {v} |")
    if not any(n == 10000 for n, *_ in rows):
        lines.append("| 10000 | | | | deployable | not run (`COUNTS=...,10000`) |")
    (n0, _, u0, _), (n1, _, u1, _) = rows[0], rows[-1]
    if n1 > n0:
        lines += [
            "",
            f"RSS grows by **{(u1 - u0) * 1024 / (n1 - n0):.1f} KiB per service** from {n0} to {n1} services. The RSS before "
            "includes the compiler's heap after the upload, which the allocator gives back over time, so rows can "
            "move by ±10 MiB either way. Deploy time per service still grows with the count (each deploy lists the "
            "service table); it was 12.3 ms at 10,000 while every deploy copied every spec into its resolution snapshot.",
            "",
            "Before this benchmark's first run (5d61a49): every service mapped its own copy of the compiled component, "
            "about 455 KiB per service (200 services: +89 MiB); through three nodes a deploy answered after ~315 ms "
            "while n2 still answered 404 or 503 (up to 764 times) after the PUT returned. A first "
            "compile gets nothing from the function cache: runs earlier the same day measured 104-118 ms for the new "
            "component, so its verdict is within this machine's noise.",
            "",
            "Tiered compilation (dedf80b, `--compile tiered`, the default): a component nothing was compiled for "
            "serves code from Winch, wasmtime's baseline compiler, while Cranelift compiles it on the node's "
            "tier-up thread; the optimized code is swapped in under live requests (the rows \"optimized code "
            "swapped in\"). With `--compile optimized`, as before it, on 2026-12-03: the new `hello` 121 ms "
            "(not met; 117 ms of it the upload's Cranelift compile), the digest's first deploy in three nodes "
            "361 ms, the Python component 9022 ms and the JavaScript one 13777 ms from upload to deployed. "
            "Compile alone, `wasmtime compile` 48.0.8 on this machine: hello 50-60 ms with Cranelift, 20 ms "
            "with Winch (process start included); the Python component 4.6 s / 1.4 s; JavaScript 5.2 s / 1.1 s. "
            "Since 63c55d2 Cranelift runs on the tier-up thread alone at nice 10 (in 1cd3f62 on both cores): the "
            "swap comes later (hello 94 -> ~200 ms, Python 7.7 -> ~13.8 s, JavaScript 10.2 -> ~18.5 s) and "
            "requests and other components' baseline compiles do not wait behind it.",
            "",
            "The leader places a new service as soon as it has loaded it (36887ac: only then, not after every "
            "Service Manager pass, which disturbed count trials). Side by side on 2026-12-03, 3 clusters x 5 "
            "deploys each, interleaved: waking at every pass 40.3 ms median, waking only for an unplaced "
            "service 30.9 ms (ratio 0.77), 0 answers other than 200 for both. The same day's earlier run measured "
            "8.0 ms (1.1 ms on one node); three later runs on a fresh VM measured 9.2-21.7 ms (1.8-3.8 ms on "
            "one node), so the three-node verdict moves with the machine. Both arms include each cluster's first "
            "deploy of the digest (about 0.6 s then). On 2026-12-04 one binary (7dbad12) measured 11.5-23.5 ms in "
            "six runs of this benchmark within half an hour (8.1 ms twice earlier that day).",
            "",
            "A new service's spec and its first placement as one Raft entry (b88f887, `Several`), side by side "
            "with the binary before it (453e1b2) on 2026-12-04: 9 three-node clusters each, interleaved, 5 known-"
            "digest deploys per cluster after its first: median 18.5 ms before, 15.6 ms after (ratio 0.84); a "
            "third of the deploys after took 4.9-10 ms (a tenth before), the rest 11-36 ms on both, so one commit"
            " fewer is not what keeps the median above 10 ms; 0 answers other than 200 on both. Not yet found: "
            "what the slow two thirds wait for (the followers' Service Manager pass, the readiness round trip, or"
            " the ingress on n2).",
            "",
            "Found on 2026-12-04: the slow deploys waited for the kernel zeroing memory. Timed (debug logs) and "
            "profiled (`perf record` of the three nodes during 150 back-to-back deploys), 43 % of the cluster's "
            "CPU was `clear_page_erms` under huge-page faults: mimalloc asked for transparent huge pages on its "
            "memory (`madvise`), gave freed pages back after 10 ms, and every page it used again was a fresh "
            "2 MiB page to zero; a Service Manager pass that read the 128 KB component to learn it was stored "
            "(up to 12 ms) and `instantiate_pre` paid most of it, on every node. Now mimalloc is built without "
            "its huge-page request (`no_thp`) and a pass asks the loaded units before the store "
            "(`has_component`). Side by side, 6 three-node clusters each, interleaved, 5 known-digest deploys "
            "per cluster after its first: median 14.2 ms before, 4.95 ms after (ratio 0.35; the slowest 37.0 "
            "and 7.2 ms); the digest's first deploy 56-325 ms before, 57-76 ms after. In a second run with the "
            "old binary under `MIMALLOC_ALLOW_THP=0` (4 clusters per arm): 17.9 ms, 5.3 ms, and 5.0 ms for the "
            "new binary, so the huge pages were most of it. `wrk -t1 -c32` on `hello` (one node, 4 instances) "
            "moved by less than its noise: 39.2-41.6k req/s with and without huge pages, 40.5-41.0k on the new "
            "binary. The CPU a deploy costs each node (from /proc, 60 deploys back to back, two runs each) fell "
            "from 3.7-10.2 ms to 1.5-2.7 ms. "
            "In this benchmark's run after the change, the first rows fell too (a new component 54 -> 29 ms, RSS "
            "with 10 services 120 -> 59 MiB, with 1,000 108 -> 62 MiB); the background Cranelift compiles of the "
            "Python and JavaScript components took about a tenth longer (13.8 -> 15.2 s, 18.5 -> 20.8 s: the "
            "compiler's large heap no longer on huge pages), a trade taken for the deploys and the memory.",
        ]
    lines.append("<!-- density:end -->")
    rewrite_section(out, "density", lines)


if __name__ == "__main__":
    main()
