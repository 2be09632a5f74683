"""The leader's status document at 5,000 to 50,000 hosts: its size, its chunks.

The document is built by the controller's own ``status.build`` from simulated
hosts whose every field varies as on a real cloud (a session id per host, its
phase's age, its heartbeat age, the agent's version and guest monitor, Nova's
record of the host), so that compression gets no easier data than a real
cloud gives it. For each size it measures:

* the JSON, and what storing it in one node took until now: one zlib
  compression of the whole (ZooKeeper refuses a node of 1 MB or more:
  ``jute.maxbuffer``, 1,048,575 bytes, bounds every request);
* what ``zk_control.split_status`` makes of it: the summary and the chunks,
  compressed, the largest node, and the CPU of building the split;
* with ``--zookeeper`` (the default): the publication on a real ZooKeeper
  (TLS, digest authentication, ACLs) by a controller and the read back by an
  operator's client, compared with the document published, the time each
  took, the transactions it cost, and ``instanceha coordination check``'s
  walk of the tree (no node wider than the model).

    python benchmarks/status_bench.py [--hosts 5000,10000,50000] [--names sim|fqdn]
        [--no-zookeeper] [--json FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import sys
import tempfile
import time
import zlib

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "tools"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import targets  # noqa: E402  (benchmarks/targets.py, beside this file)

from instanceha.controller import status  # noqa: E402
from instanceha.coordination import base, zk_control  # noqa: E402
from instanceha.coordination.zk_codec import dumps  # noqa: E402
from instanceha.engine.guard import GuardState  # noqa: E402
from instanceha.engine.model import HostView, Phase  # noqa: E402

NODE_LIMIT = 1_048_575
"""ZooKeeper's default jute.maxbuffer: no node (no request) this large or larger."""
LARGEST = 50_000

TARGETS = (
    targets.Target(f"largest_node_bytes_{LARGEST}", 1_000_000, "<=", "B",
                   what=f"the largest node of the status at {LARGEST} hosts (summary or "
                        "chunk, compressed), with room for the request's path and ACL"),
    targets.Target("read_back_equal", 1, "==",
                   what="every size: the document an operator read back is the one "
                        "published (--zookeeper)"),
    targets.Target("tree_findings", 0, "==",
                   what="nodes wider than the ACL model after the publications "
                        "(coordination check)"),
)


def host_name(i: int, names: str) -> str:
    if names == "sim":
        return f"sim{i // 2500}-{i % 2500:05d}"
    return f"compute-r{i // 40:04d}-u{i % 40:02d}.az{i % 3 + 1}.dc1.example.net"


def document(n: int, names: str, rng: random.Random) -> tuple[dict, float]:
    """The status the leader builds with ``n`` hosts, every one of them
    different where a real cloud's are, and the CPU seconds ``build`` took."""
    wall, now = time.time(), time.monotonic()
    views, members, beats = {}, {}, {}
    nova = {}
    for i in range(n):
        h = host_name(i, names)
        sid = rng.getrandbits(63)
        views[h] = HostView(host=h, phase=Phase.HEALTHY, since=now - rng.uniform(0, 86400 * 30),
                            reason="member; its session is alive and every watched service "
                                   "is up", rule="healthy", incarnation=sid)
        members[h] = base.MemberRecord(member_id=h, incarnation=sid, capabilities={
            "version": f"1.{rng.randrange(4)}.{rng.randrange(20)}",
            "started_at": datetime.datetime.fromtimestamp(
                wall - rng.uniform(0, 86400 * 30), datetime.timezone.utc).isoformat(),
            "boot_id": f"{rng.getrandbits(128):032x}",
            "pid": rng.randrange(1000, 4_000_000),
            "services": {"nova-compute": True, "libvirtd": True},
            "guest_monitor": {"state": "connected", "error": None, "losses": rng.randrange(3),
                              "since": round(wall - rng.uniform(0, 86400 * 30), 3)},
        })
        beats[h] = now - rng.uniform(0, 0.4)
        nova[h] = {"state": "up", "status": "enabled", "forced_down": False, "marker": None,
                   "recovery": None}
    snap = base.ClusterSnapshot(taken_at=now, state=base.ConnectionState.CONNECTED,
                                connected_since=now - 600, watching_since=now - 600,
                                hosts={}, members=members, heartbeats=beats)
    t0 = time.process_time()
    doc = status.build("controller-1", 42, views, snap, GuardState(), now, wall, nova=nova,
                       guard_report={"rules": [], "aggregates": {"known": True, "age": 3.0}},
                       guests={"pending": 0, "recent": []})
    return doc, time.process_time() - t0


def measure_size(doc: dict) -> dict:
    t0 = time.process_time()
    raw = dumps(doc)
    single = zlib.compress(raw)
    one_node_cpu = time.process_time() - t0
    t0 = time.process_time()
    summary, chunks = zk_control.split_status(doc, zk_control.CHUNK_BYTES)
    packed = [zlib.compress(c) for c in chunks]
    head = zlib.compress(dumps(dict(summary, **{zk_control.CHUNKS: [
        f"hosts-00000000-{i:04d}" for i in range(len(chunks))]})))
    split_cpu = time.process_time() - t0
    return {
        "json_bytes": len(raw),
        "json_bytes_per_host": len(raw) / max(1, len(doc["hosts"])),
        "one_node_compressed_bytes": len(single),
        "one_node_fits": len(single) < NODE_LIMIT,
        "one_node_cpu_s": round(one_node_cpu, 3),
        "chunks": len(chunks),
        "chunk_json_bytes_max": max(len(c) for c in chunks),
        "chunk_compressed_bytes_max": max(len(c) for c in packed),
        "summary_compressed_bytes": len(head),
        "largest_node_bytes": max([len(head)] + [len(c) for c in packed]),
        "total_compressed_bytes": len(head) + sum(len(c) for c in packed),
        "split_cpu_s": round(split_cpu, 3),
    }


def on_zookeeper(docs: dict[int, dict], work: str) -> dict:
    from harness.zookeeper import ZooKeeperServer

    from instanceha.coordination import zk_audit

    zk = ZooKeeperServer(os.path.join(work, "zk"), tick_ms=500, heap_mb=1024).start()
    out: dict = {}
    try:
        root = "/status-bench"
        ctl = zk.coordinator("controller", root_path=root)
        ctl.start()
        reader = zk.coordinator("operator", root_path=root)
        reader.start()
        try:
            for n, doc in docs.items():
                zx0 = zk.zxid()
                t0 = time.monotonic()
                ctl.publish_status(doc)
                published = time.monotonic() - t0
                zx1 = zk.zxid()
                t0 = time.monotonic()
                back = reader.read_status()
                read = time.monotonic() - t0
                out[n] = {"publish_s": round(published, 3), "read_s": round(read, 3),
                          "transactions": zx1 - zx0, "equal": back == doc,
                          "nodes_under_status": len(ctl.client.get_children(
                              ctl.session.path("status")))}
            findings, walked = zk_audit.audit_tree(ctl)
            out["tree"] = {"nodes": walked, "findings": [list(f) for f in findings]}
        finally:
            reader.stop()
            ctl.stop()
    finally:
        zk.stop()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", default="5000,10000,50000")
    p.add_argument("--names", choices=("sim", "fqdn"), default="fqdn",
                   help="host names as the detection benchmark's simulated agents "
                        "(sim0-00001) or as a data centre's (compute-r0001-u01.az1...)")
    p.add_argument("--no-zookeeper", dest="zookeeper", action="store_false")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    sizes = [int(x) for x in args.hosts.split(",")]
    rng = random.Random(args.seed)
    result: dict = {"date": datetime.date.today().isoformat(), "argv": sys.argv[1:],
                    "chunk_json_bytes": zk_control.CHUNK_BYTES, "node_limit": NODE_LIMIT,
                    "sizes": {}}
    docs = {}
    for n in sizes:
        doc, build_cpu = document(n, args.names, rng)
        docs[n] = doc
        m = result["sizes"][n] = dict(measure_size(doc), build_cpu_s=round(build_cpu, 3))
        print(f"{n} hosts ({args.names} names): JSON {m['json_bytes'] / 1e6:.2f} MB "
              f"({m['json_bytes_per_host']:.0f} B/host); one node, compressed: "
              f"{m['one_node_compressed_bytes'] / 1e3:.0f} KB "
              f"({'fits' if m['one_node_fits'] else 'DOES NOT FIT'} in a node; "
              f"{m['one_node_cpu_s'] * 1000:.0f} ms CPU); split: {m['chunks']} chunk(s), "
              f"largest node {m['largest_node_bytes'] / 1e3:.0f} KB, summary "
              f"{m['summary_compressed_bytes']} B, total {m['total_compressed_bytes'] / 1e3:.0f}"
              f" KB ({m['split_cpu_s'] * 1000:.0f} ms CPU); status.build "
              f"{m['build_cpu_s'] * 1000:.0f} ms CPU", flush=True)
    measured: dict = {}
    if LARGEST in result["sizes"]:
        measured[f"largest_node_bytes_{LARGEST}"] = result["sizes"][LARGEST]["largest_node_bytes"]
    if args.zookeeper:
        with tempfile.TemporaryDirectory(prefix="ih-status-bench-") as work:
            zk = result["zookeeper"] = on_zookeeper(docs, work)
        for n in sizes:
            z = zk[n]
            print(f"{n} hosts on ZooKeeper (TLS, auth, ACLs): published in {z['publish_s']:.2f} s"
                  f" ({z['transactions']} transactions), read back in {z['read_s']:.2f} s, "
                  f"{'the same document' if z['equal'] else 'A DIFFERENT DOCUMENT'}; "
                  f"{z['nodes_under_status']} chunk node(s) under status", flush=True)
        print(f"coordination check: {zk['tree']['nodes']} nodes walked, "
              f"{len(zk['tree']['findings'])} wider than the model", flush=True)
        measured["read_back_equal"] = float(all(zk[n]["equal"] for n in sizes))
        measured["tree_findings"] = len(zk["tree"]["findings"])
    # without --zookeeper, only what the sizes can judge
    declared = TARGETS if args.zookeeper else TARGETS[:1]
    code = targets.report(declared, measured, out=result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return code


if __name__ == "__main__":
    sys.exit(main())
