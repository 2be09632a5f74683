"""Guest-failure benchmark: a QEMU killed -> notification / restart requested.

On the mini-cloud: ``--events`` fake-driver servers on compute1, each with a
libvirt domain of the same UUID in a private libvirtd (real QEMU, TCG),
started paused (no guest boot needed for a QEMU to die). Half the servers
have ``instanceha:guest=notify``, half ``restart``. One at a time, a domain's
QEMU is SIGKILLed; measured from the agent's own time stamp of the libvirt
event (the failure's ``at``), for each kind of server:

* notify:  the leader's log line of its decision, and the
  ``instanceha.instance.failed`` notification received by a consumer
  (``instanceha listen``) on the mini-cloud's RabbitMQ;
* restart: the hard reboot requested from Nova (the controller's log line,
  written right after Nova accepted the reboot), and its notification.

Also from the kill: the libvirt event's arrival at the agent (QEMU exit and
libvirtd's part). The first ``--warmup`` failures (notify) are printed apart:
they include the controller's first calls to Nova and RabbitMQ. Then the
agent idles for ``--idle`` seconds with its monitor connected and the domains
defined: its CPU (utime+stime from /proc) and RSS.

Real: ZooKeeper, Nova (fake virt driver), RabbitMQ, libvirtd, QEMU,
instanceha's agent, controller and ``instanceha listen``. Prints p50/p99,
then a verdict per target (``TARGETS``, ``benchmarks/targets.py``); exits 1
when one is missed. Asserts nothing about time in tests.

    python benchmarks/guest_bench.py [--events 20] [--idle 60] [--run-dir DIR]
                                     [--json FILE]

``--run-dir``: use the mini-cloud already up in DIR (tools/minicloud/up.sh; its
servers made here are deleted at the end) instead of starting one.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "tools"))

import yaml  # noqa: E402
from harness import daemons, libvirtd, procs  # noqa: E402
from harness.minicloud import MiniCloud  # noqa: E402
from harness.zookeeper import ZooKeeperServer  # noqa: E402
from targets import Target, report  # noqa: E402

BIN = os.path.dirname(sys.executable)
HOST = "compute1"

TARGETS = (
    Target("notify_to_consumer_p50_s", 1.0, "<=", "s",
           what="instance.failed at the consumer, notify servers: within 1 s of the libvirt "
           "event, as the host path"),
    Target("restart_to_consumer_p50_s", 1.0, "<=", "s",
           what="instance.failed at the consumer, restart servers (after Nova accepted the "
           "reboot): within 1 s of the event"),
)


def pct(values, p):
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def log_epoch(d: daemons.Daemon, pattern: str, after: int) -> float:
    m = d.wait_log(r"(?m)^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) .*" + pattern, timeout=60,
                   after=after)
    return datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=20, help="per policy (notify, restart)")
    p.add_argument("--idle", type=float, default=60.0)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--json", help="write the figures and the verdicts to this file")
    p.add_argument("--run-dir", help="a mini-cloud already up (tools/minicloud/up.sh)")
    p.add_argument("--warmup", type=int, default=2,
                   help="notify-policy failures first, printed apart (the controller's "
                   "first Nova and RabbitMQ calls), not in the percentiles")
    args = p.parse_args(argv)
    import libvirt

    work = tempfile.mkdtemp(prefix="ih-guest-bench-")
    started = []
    zk = cloud = listener = hv = conn = None
    ids = {}
    try:
        zk = ZooKeeperServer(os.path.join(work, "zk"), tick_ms=500).start()
        if args.run_dir:
            cloud = MiniCloud.attach(args.run_dir)
        else:
            MiniCloud.install()
            cloud = MiniCloud.in_run_dir(prefix="bench-", computes=1).up()
        hv = libvirtd.LibvirtDaemon().start()
        ep = cloud.endpoints
        conn = cloud.connection()
        image = conn.image.find_image(ep["image"])
        flavor = conn.compute.find_flavor(ep["flavor"])
        for policy, count in (("warmup", args.warmup), ("notify", args.events),
                              ("restart", args.events)):
            made = [conn.compute.create_server(
                name=f"gb-{policy}-{i}", image_id=image.id, flavor_id=flavor.id,
                networks="none", availability_zone=f"nova:{HOST}",
                metadata={"instanceha:guest": "notify" if policy == "warmup" else policy})
                for i in range(count)]
            for s in made:
                conn.compute.wait_for_server(s, status="ACTIVE", wait=300)
            ids[policy] = [s.id for s in made]
        guests = {sid: hv.guest(f"gb-{sid[:8]}", uuid=sid, start=False)
                  for sids in ids.values() for sid in sids}
        lv = hv.connect()
        for sid in guests:
            lv.lookupByUUIDString(sid).createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        inv = {"hosts": {HOST: {"driver": "fake", "address": "fake"}}}
        inv_path = os.path.join(work, "inventory.yaml")
        with open(inv_path, "w") as f:
            yaml.safe_dump(inv, f)
        os.chmod(inv_path, 0o600)
        base = {"coordination": zk.section("controller"),
                "telemetry": {"controller_port": 0, "agent_port": 0}}
        bus = {"DEFAULT": {"transport_url": ep["transport_url"]},
               "oslo_messaging_notifications": {"driver": "messagingv2"}}
        zk.provision("/instanceha", [HOST])
        agent = daemons.Daemon.instanceha("instanceha-agent", work, "agent", dict(
            base, coordination=zk.section("agent", HOST), DEFAULT={"host": HOST},
            agent={"watched_processes": "nova-compute:nova-compute1.conf"},
            guest={"monitor": "true", "libvirt_uri": hv.uri})).start()
        started.append(agent)
        agent.wait_log(r"libvirt \S+ connected", timeout=60)
        sections = dict(base, **bus)
        sections.update(DEFAULT=dict(bus["DEFAULT"], host="ctl"),
                        fencing={"inventory_file": inv_path, "test_only_allow_fake_driver": True},
                        nova=dict(cloud.nova_options(), timeout=30),
                        guest={"max_restarts": 100, "coalesce": 0})
        ctl = daemons.Daemon.instanceha("instanceha-controller", work, "ctl",
                                        sections).start()
        started.append(ctl)
        ctl.wait_log("leadership gained", timeout=60)
        ctl.wait_log(rf"host={HOST} phase=\w+->HEALTHY", timeout=120)
        received = {}
        listener = subprocess.Popen(
            [os.path.join(BIN, "instanceha"), "--config-file",
             daemons.write_conf(os.path.join(work, "listen.conf"), bus), "listen",
             "--format", "json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

        def read_bus():
            for raw in listener.stdout:
                now = time.time()
                try:
                    e = json.loads(raw)
                except ValueError:
                    continue
                if e.get("event_type") == "instanceha.instance.failed":
                    received.setdefault(e["payload"]["instance_id"], (now, e))

        threading.Thread(target=read_bus, daemon=True).start()
        time.sleep(3)  # the listener's queue is bound
        results = {k: [] for k in ("kill_to_event", "notify_to_decision", "notify_to_consumer",
                                   "restart_to_nova", "restart_to_consumer")}
        warm = []
        order = [("warmup", sid) for sid in ids["warmup"]]
        order += [(pol, sid) for pair in zip(ids["notify"], ids["restart"], strict=True)
                  for pol, sid in zip(("notify", "restart"), pair, strict=True)]
        for n, (policy, sid) in enumerate(order):
            mark = ctl.log_size()
            killed = time.time()
            guests[sid].kill_qemu()
            _, event = procs.wait_for(lambda sid=sid: received.get(sid), 60,
                                      f"the notification of {sid}", interval=0.01)
            got_at = received[sid][0]
            seen = _seen_at(agent, sid)
            decided = log_epoch(ctl, rf"guest failure of {sid} on ", mark)
            if policy == "warmup":
                warm.append((seen - killed, decided - seen, got_at - seen))
                print(f"warm-up {n + 1}: event +{seen - killed:.3f}s after the kill, decision "
                      f"+{decided - seen:.3f}s, notification +{got_at - seen:.3f}s after the "
                      "event", flush=True)
                continue
            results["kill_to_event"].append(seen - killed)
            if policy == "notify":
                results["notify_to_decision"].append(decided - seen)
                results["notify_to_consumer"].append(got_at - seen)
            else:
                requested = log_epoch(ctl, rf"guest failure of {sid} .*requested", mark)
                results["restart_to_nova"].append(requested - seen)
                results["restart_to_consumer"].append(got_at - seen)
            print(f"{n + 1}/{len(order)} {policy}: event +{seen - killed:.3f}s after the kill,"
                  f" notification +{got_at - seen:.3f}s after the event", flush=True)
        # idle: the monitor connected, every domain defined
        pid = agent.pid
        c0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(args.idle)
        cpu = (cpu_seconds(pid) - c0) / (time.monotonic() - t0) * 100
        rss = rss_mb(pid)
        print()
        for i, (ev, dec, note) in enumerate(warm):
            print(f"warm-up failure {i + 1} (not counted): event {ev:.3f} s after the kill, "
                  f"decision {dec:.3f} s and notification {note:.3f} s after the event")
        print(f"guest failure -> action over {args.events} events per policy (seconds, from "
              "the agent's time stamp of the libvirt event unless said)")
        for k, v in results.items():
            print(f"  {k:20s} p50 {statistics.median(v):6.3f}  p99 {pct(v, 99):6.3f}  "
                  f"min {min(v):6.3f}  max {max(v):6.3f}  (n={len(v)})")
        print(f"  agent idle ({args.idle:.0f} s, monitor connected, {len(guests)} domains): "
              f"CPU {cpu:.2f}% of one core, RSS {rss:.1f} MB")
        measured = {f"{k}_p50_s": statistics.median(v) for k, v in results.items() if v}
        out = {"events": args.events, "idle_s": args.idle, "results": results,
               "warmup": warm, "agent_idle_cpu_percent": cpu, "agent_rss_mb": rss}
        rc = report(TARGETS, measured, out)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(out, f, indent=2)
        return rc
    finally:
        if listener is not None:
            listener.kill()
        for d in started:
            d.terminate()
        if hv is not None:
            hv.close()
        if cloud is not None and args.run_dir:
            for sid in (sid for sids in ids.values() for sid in sids):
                conn.compute.delete_server(sid, ignore_missing=True)
        elif cloud is not None:
            cloud.down(wipe=True)
        if zk is not None:
            zk.stop()
        if args.keep:
            print(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _seen_at(agent: daemons.Daemon, sid: str) -> float:
    """The agent's time stamp of the failure (its ``at``), from its log line."""
    m = agent.wait_log(r"(?m)^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) .*guest failure: domain "
                       rf"\S+ \({re.escape(sid)}\)", timeout=30)
    return datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()


if __name__ == "__main__":
    sys.exit(main())
