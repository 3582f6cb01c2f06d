#!/usr/bin/env python3
"""Scale in simulation (issue 20): N release nodes (default 20) on 127.0.0.1 with default
settings, each on its own data dir, one run:

  formed      all started → every node sees N live members and one agreed leader
  members     … and the Raft configuration holds all N (voters and learners)
  deploy      PUT of `hello` with N instances → the answer (it returns once every node
              serves it)
  detect      kill -9 one learner (a follower if there is none) → every other node shows
              it not live (slowest node)
  log         Raft log growth on the leader (nanogrid_raft_log_appended_bytes_total):
              forming, the deploy, the partition changes after the kill
  rss         resident memory per node, median and largest

The placement model (host/examples/placement.rs: 10,000 services on 100 nodes) is passed
in as its output line.

Usage: benches/scale.py NANOGRID_BIN HELLO_WASM OUT_MD NODES "PLACEMENT_LINE"
Rewrites the section between <!-- scale:begin --> and <!-- scale:end --> in OUT_MD.
"""

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import Node, cluster_dir, free_port, rewrite_section, serves, wait  # noqa: E402


def metric(node, name):
    status, data = node.call("GET", "/metrics", timeout=5.0)
    for line in data.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise RuntimeError(f"{node.name} has no {name}")


def rss_kib(node):
    for line in open(f"/proc/{node.proc.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def views(nodes):
    return [n.cluster() for n in nodes]


def all_see(nodes, count):
    """Every node sees `count` live nodes and the same single leader."""
    vs = views(nodes)
    if not all(vs):
        return False
    leaders = {v["leader"] for v in vs}
    live_ok = all(sum(1 for x in v["nodes"] if x["live"]) >= count for v in vs)
    return live_ok and len(leaders) == 1 and None not in leaders


def in_config(nodes, count):
    v = nodes[0].cluster()
    return v and sum(1 for x in v["nodes"] if x["role"] in ("voter", "learner")) >= count


def partition_row(count, figures):
    """One row of the partition-table model: `TABLE_US:TABLE_BYTES:DEAD_ROWS:DEAD_BYTES`."""
    try:
        us, table, rows, dead = (int(x) for x in figures.split(":"))
    except ValueError:
        return f"| {count} | ? | ? | ? | ? |"
    return f"| {count} | {us / 1000:.1f} ms | {table / 1024:.0f} KiB | {rows} | {dead / 1024:.1f} KiB |"


def main():
    binary, wasm, out = sys.argv[1:4]
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 20
    placement = sys.argv[5] if len(sys.argv) > 5 else ""
    model = dict(kv.split("=", 1) for kv in placement.split() if "=" in kv)
    root = tempfile.mkdtemp(prefix="ng-scale-bench-")
    ports = [(free_port(), free_port(socket.SOCK_DGRAM)) for _ in range(n)]
    seeds = ",".join(f"127.0.0.1:{g}" for _, g in ports[:3])
    names = [f"n{i + 1}" for i in range(n)]
    secrets = ["--cluster-dir", cluster_dir(binary, root, names)]
    nodes = [Node(binary, name, root, seeds, p, g, secrets) for name, (p, g) in zip(names, ports)]
    r = {}
    try:
        t0 = time.time()
        for node in nodes:
            node.start()
        r["started"] = time.time() - t0
        wait("every node sees every other", lambda: all_see(nodes, n), 180)
        r["formed"] = time.time() - t0
        wait("every node is in the Raft configuration", lambda: in_config(nodes, n), 180)
        r["members"] = time.time() - t0
        leader_name = nodes[0].cluster()["leader"]
        leader = next(x for x in nodes if x.name == leader_name)
        # Let the partition table settle before measuring the deploy's share of the log.
        time.sleep(5)
        r["log_formed"] = metric(leader, "nanogrid_raft_log_appended_bytes_total")
        r["entries_formed"] = metric(leader, "nanogrid_raft_log_appended_entries_total")

        status, data = leader.call("PUT", "/v1/components", open(wasm, "rb").read(), 30)
        digest = json.loads(data)["digest"]
        before = metric(leader, "nanogrid_raft_log_appended_bytes_total")
        t = time.time()
        status, data = leader.call("PUT", "/v1/services/hello", {"component": digest, "instances": n}, 60)
        r["deploy"] = time.time() - t
        assert status in (200, 201), data
        r["not_serving"] = len(json.loads(data).get("not_serving_yet", []))
        wait("every node serves hello", lambda: all(serves(x) for x in nodes), 60)
        r["log_deploy"] = metric(leader, "nanogrid_raft_log_appended_bytes_total") - before

        view = leader.cluster()
        learner = next((x for x in nodes if x.name != leader.name and any(
            m["id"] == x.name and m["role"] == "learner" for m in view["nodes"])), None)
        victim = learner or next(x for x in nodes if x.name != leader.name)
        r["victim"] = "learner" if learner else "follower (voter)"
        others = [x for x in nodes if x is not victim]
        before = metric(leader, "nanogrid_raft_log_appended_bytes_total")
        entries = metric(leader, "nanogrid_raft_log_appended_entries_total")
        t = time.time()
        victim.kill()

        def all_see_dead():
            vs = views(others)
            return all(v and any(m["id"] == victim.name and not m["live"] for m in v["nodes"]) for v in vs)

        wait("every node sees the killed one dead", all_see_dead, 120)
        r["detect"] = time.time() - t
        time.sleep(5)
        r["log_kill"] = metric(leader, "nanogrid_raft_log_appended_bytes_total") - before
        r["entries_kill"] = metric(leader, "nanogrid_raft_log_appended_entries_total") - entries
        rss = [rss_kib(x) for x in others]
        r["rss_median"], r["rss_max"] = statistics.median(rss) / 1024, max(rss) / 1024
    finally:
        for node in nodes:
            if node.proc and node.proc.poll() is None:
                node.kill()
        subprocess.run(["rm", "-rf", root])
    print(json.dumps(r), flush=True)

    kb = lambda b: f"{b / 1024:.1f}"  # noqa: E731
    lines = [
        "<!-- scale:begin -->",
        "## Scale: 20 nodes in simulation, placement on paper (issue 20)",
        "",
        f"`./dev bench scale` (benches/scale.py): {n} release nodes on 127.0.0.1 of this 2-core",
        "machine, default settings (gossip every 200 ms, phi 8, Raft heartbeat 100 ms, 3 voters,",
        "the rest learners, 256 partitions, replication 3). One run; times in seconds from the",
        "moment the processes were started (starting them took "
        f"{r['started']:.1f} s).",
        "",
        "| measure | figure |",
        "| --- | ---: |",
        f"| every node sees all {n} live and one leader (gossip converged) | {r['formed']:.1f} s |",
        f"| all {n} in the Raft configuration | {r['members']:.1f} s |",
        f"| deploy of `hello` with {n} instances → answer (every node serves) | {r['deploy'] * 1000:.0f} ms"
        f" ({r['not_serving']} not serving yet) |",
        f"| kill -9 of a {r['victim']} → every other node shows it dead | {r['detect']:.1f} s |",
        f"| Raft log appended on the leader: forming the cluster (members, partition table) | {kb(r['log_formed'])} KiB"
        f" in {r['entries_formed']:.0f} entries |",
        f"| … the deploy | {kb(r['log_deploy'])} KiB |",
        f"| … 5 s after the kill was seen (partitions re-placed, placement) | {kb(r['log_kill'])} KiB"
        f" in {r['entries_kill']:.0f} entries |",
        f"| resident memory per node, median / largest | {r['rss_median']:.0f} / {r['rss_max']:.0f} MiB |",
        "",
        "Placement on paper (`host/examples/placement.rs`, one thread): the Cluster Manager's",
        f"rule for {model.get('services', '?')} services (instances 1-32, ~8 on average) on "
        f"{model.get('nodes', '?')} nodes:",
        "",
        "| measure | figure |",
        "| --- | ---: |",
        f"| place from nothing | {model.get('place_ms', '?')} ms |",
        f"| re-place after one node died | {model.get('replace_ms', '?')} ms"
        f" ({model.get('moved_instances', '?')} instances moved) |",
        f"| the assignment: rows / JSON bytes | {model.get('assignment_rows', '?')} /"
        f" {int(model.get('assignment_bytes', 0)) // 1024} KiB |",
        "",
        f"The grid's partition table on paper (same model, {model.get('nodes', '?')} nodes, replication 3):",
        "its first table, and the rows that change when one node dies (they name it).",
        "",
        "| partitions | make the table | table JSON | rows a death changes | their JSON |",
        "| ---: | ---: | ---: | ---: | ---: |",
        *[partition_row(count, model.get(f"partitions_{count}", "")) for count in (64, 256, 1024, 4096)],
        "",
        "How each grows (from the code, checked against the figures above):",
        "",
        "| what | grows with | note |",
        "| --- | --- | --- |",
        "| gossip state per node | nodes | every node holds every node's key-values (chitchat) |",
        "| gossip convergence | log(nodes) rounds | plus phi's detection time for a death |",
        "| Raft voters | fixed (3 by default) | learners replicate the log without voting |",
        "| partition-table change in the log | partitions changed in the step | rows since GridChanges; the whole table (256 rows, 20-60 KB) before |",
        "| placement change in the log | services whose row changed | rows since AssignChanges; the whole assignment before (see its size above) |",
        "| placement time | services × nodes | see the model above |",
        "| partitions | `--partitions` (1-4096, default 256), fixed per cluster and data dir | table size and a death's changed rows grow linearly (model above); each costs every replica a lock and a log position |",
        "",
        f"Measured on: {os.cpu_count()} cores, {os.uname().machine}, kernel {os.uname().release}, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}.",
        "<!-- scale:end -->",
    ]
    rewrite_section(out, "scale", lines)


if __name__ == "__main__":
    main()
