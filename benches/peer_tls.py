#!/usr/bin/env python3
"""What the cluster's security costs (issue 13): two clusters of three release nodes on
127.0.0.1, one as every cluster runs (mutual TLS between nodes, sealed gossip) and one
with cleartext peer RPC (`--insecure-plaintext-peers`, loopback only; gossip is sealed in
both), measured side by side in interleaved rounds (the order alternates per round):

  forwarded  p50 of sequential GET /solo/ sent to n2 while solo's only instance is on n1:
             one hop over the peer transport (and GET /solo/ on n1, no hop, for scale)
  quorum     p50 of sequential PUT /kv/{key}?consistency=quorum sent to n1 (kvstore, an
             instance on every node; keys spread over all partitions, so a write usually
             goes to another node's primary, and every write is replicated to a majority)

The target: TLS adds at most 15 % to either p50. Also reports seal + open of one gossip
packet (`cargo bench -p nanogrid-wire --bench seal`).

Usage: benches/peer_tls.py NANOGRID_BIN HELLO_WASM KVSTORE_WASM OUT_MD [ROUNDS] [SEAL_US]
Rewrites the section between <!-- tls:begin --> and <!-- tls:end --> in OUT_MD.
"""

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Node, agreed_leader, cluster_dir, free_port, p50_of, rewrite_section, serves, wait  # noqa: E402

N = 1000


def start(binary, root, extra):
    ports = [(free_port(), free_port(socket.SOCK_DGRAM)) for _ in range(3)]
    seeds = ",".join(f"127.0.0.1:{g}" for _, g in ports)
    names = [f"n{i + 1}" for i in range(3)]
    args = ["--cluster-dir", cluster_dir(binary, root, names)] + extra
    nodes = [Node(binary, n, root, seeds, p, g, args) for n, (p, g) in zip(names, ports)]
    for n in nodes:
        n.start()
    wait("the cluster forms", lambda: agreed_leader(nodes), 60)
    return nodes


def deploy(nodes, hello, kvstore):
    n1 = nodes[0]
    for name, wasm, spec in [("solo", hello, {"instances": 1, "placement": ["n1"]}),
                             ("kv", kvstore, {"instances": 3})]:
        status, data = n1.call("PUT", "/v1/components", open(wasm, "rb").read(), 15)
        assert status in (200, 201), data
        spec["component"] = json.loads(data)["digest"]
        status, data = n1.call("PUT", f"/v1/services/{name}", spec, 15)
        assert status in (200, 201), data
    wait("solo serves through n2", lambda: serves(nodes[1], "/solo/") and serves(n1, "/solo/"))
    wait("kv serves on n1", lambda: serves(n1, "/kv/"))

    def settled():
        status, data = n1.call("GET", "/v1/grid")
        g = json.loads(data) if status == 200 else {}
        return g.get("partitions") == 256 and g.get("under_replicated") == 0
    wait("every partition has three in-sync replicas", settled, 60)


def quorum_p50(node, n=N, round_=0):
    conn = http.client.HTTPConnection(node.ingress, timeout=5.0)
    times = []
    for i in range(n):
        t = time.perf_counter()
        conn.request("PUT", f"/kv/r{round_}-{i}?consistency=quorum", body=b"v" * 100)
        r = conn.getresponse()
        r.read()
        assert r.status == 200, r.status
        times.append(time.perf_counter() - t)
    conn.close()
    return statistics.median(times[n // 10:])


def gossip_packets(node):
    """(in + out) sealed gossip packets of `node` so far, from /metrics."""
    status, data = node.call("GET", "/metrics")
    total = 0
    for line in data.decode().splitlines():
        if line.startswith("nanogrid_gossip_packets_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def measure(nodes, round_):
    return dict(local=p50_of(nodes[0], "/solo/", N), forwarded=p50_of(nodes[1], "/solo/", N),
                quorum=quorum_p50(nodes[0], N, round_))


def main():
    binary, hello, kvstore, out = sys.argv[1:5]
    rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 5
    seal_us = sys.argv[6] if len(sys.argv) > 6 else None
    root = tempfile.mkdtemp(prefix="ng-tls-bench-")
    clusters = {}
    try:
        clusters["tls"] = start(binary, os.path.join(root, "tls"), [])
        clusters["plain"] = start(binary, os.path.join(root, "plain"), ["--insecure-plaintext-peers"])
        for nodes in clusters.values():
            deploy(nodes, hello, kvstore)
        results = {"tls": [], "plain": []}
        packets0, t0 = gossip_packets(clusters["tls"][0]), time.time()
        for r in range(rounds):
            order = ["tls", "plain"] if r % 2 == 0 else ["plain", "tls"]
            for name in order:
                m = measure(clusters[name], r)
                results[name].append(m)
                print(f"round {r + 1} {name}: " + ", ".join(f"{k} {v * 1e6:.0f} µs" for k, v in m.items()), flush=True)
        gossip_rate = (gossip_packets(clusters["tls"][0]) - packets0) / (time.time() - t0)
    finally:
        for nodes in clusters.values():
            for n in nodes:
                if n.proc and n.proc.poll() is None:
                    n.kill()
        subprocess.run(["rm", "-rf", root])

    def med(name, k):
        return statistics.median(m[k] for m in results[name])

    rows = []
    verdicts = []
    for k, what in [("forwarded", "forwarded request p50 (n2 → n1)"), ("quorum", "quorum write p50 (kvstore PUT via n1)")]:
        tls, plain = med("tls", k), med("plain", k)
        ratio = tls / plain
        ok = ratio <= 1.15
        verdicts.append(ok)
        rows.append(f"| {what} | {tls * 1e6:.0f} | {plain * 1e6:.0f} | **{ratio:.2f}** | {'met' if ok else 'not met'} |")
    rows.append(f"| local request p50 on n1 (no peer hop; for scale) | {med('tls', 'local') * 1e6:.0f} | "
                f"{med('plain', 'local') * 1e6:.0f} | {med('tls', 'local') / med('plain', 'local'):.2f} | |")
    lines = [
        "<!-- tls:begin -->",
        "## Cluster security: what mutual TLS and sealed gossip cost (issue 13)",
        "",
        f"`./dev bench tls` (benches/peer_tls.py): two clusters of three release nodes on 127.0.0.1 running side by",
        f"side, one with mutual TLS between nodes (as every cluster runs) and one with cleartext peer RPC",
        f"(`--insecure-plaintext-peers`, loopback only); both seal gossip. {rounds} interleaved rounds of {N}",
        f"sequential keep-alive requests per measure (first 10 % dropped); medians of the rounds' p50s, in µs.",
        f"Measured {time.strftime('%Y-%m-%d')}. **Target: TLS adds ≤ 15 %** (ratio ≤ 1.15).",
        "",
        "| measure | TLS | cleartext | TLS / cleartext | target ≤ 1.15 |",
        "| --- | ---: | ---: | ---: | --- |",
        *rows,
        "",
    ]
    if seal_us:
        lines += [f"Sealing and opening one gossip packet (XChaCha20-Poly1305, 300-byte payload, replay check): "
                  f"{seal_us} µs per packet (`cargo bench -p nanogrid-wire --bench seal`); n1 of the TLS cluster "
                  f"sealed or opened {gossip_rate:.0f} packets a second during the run (default gossip interval 200 ms), "
                  f"about {float(seal_us) * gossip_rate / 1e4:.3f} % of one core.", ""]
    lines += [f"Per-round figures: " + "; ".join(
        f"{name} " + "/".join(f"{m['forwarded'] * 1e6:.0f}" for m in results[name]) + " (forwarded), "
        + "/".join(f"{m['quorum'] * 1e6:.0f}" for m in results[name]) + " (quorum)" for name in ("tls", "plain")) + ".",
        "<!-- tls:end -->"]
    rewrite_section(out, "tls", lines)
    if not all(verdicts):
        print("note: a target was not met (reported in the file)", file=sys.stderr)


if __name__ == "__main__":
    main()
