"""End-to-end failover benchmark on the mini-cloud, repeated runs.

Each run: boot ``--servers`` opted-in servers on one compute, kill that
compute the way a host dies (agent and nova-compute gone, BMC still on), and
measure, from the kill: FAILED decided, fenced (power read back off), first
evacuation issued (``evacuate.start`` received on the bus), all servers ACTIVE
on other hosts (polled in Nova). Then the host is repaired (powered on,
nova-compute and agent back) and re-enabled by instanceha before the next
run. Real: ZooKeeper, Nova (fake virt driver), RabbitMQ, ipmi_sim BMCs,
instanceha's agents, controller and ``instanceha listen``.

Prints p50/p95 per step; asserts nothing about time.

    python benchmarks/e2e_bench.py [--runs 5] [--servers 4]
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
from harness import daemons, procs  # noqa: E402
from harness.bmc import IpmiSimBMC  # noqa: E402
from harness.minicloud import MiniCloud  # noqa: E402
from harness.zookeeper import ZooKeeperServer  # noqa: E402

BIN = os.path.dirname(sys.executable)
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) ")


def log_time(d: daemons.Daemon, pattern: str, after: int) -> datetime.datetime:
    m = d.wait_log(r"(?m)^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) .*" + pattern, timeout=300,
                   after=after)
    return datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")


def pct(values, p):
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--servers", type=int, default=4)
    p.add_argument("--keep", action="store_true", help="keep the logs (printed at the end)")
    args = p.parse_args(argv)
    work = tempfile.mkdtemp(prefix="ih-e2e-bench-")
    started, bmcs = [], {}
    zk = cloud = listener = None
    results = {k: [] for k in ("failed", "fenced", "first_evacuation", "all_active")}
    skipped: list[tuple[int, str, str]] = []
    try:
        MiniCloud.install()
        zk = ZooKeeperServer(os.path.join(work, "zk"), tick_ms=500).start()
        cloud = MiniCloud.in_run_dir(prefix="bench-", computes=3).up()
        ep, hosts = cloud.endpoints, cloud.hosts
        inv = {"hosts": {}}
        for h in hosts:
            bmcs[h] = IpmiSimBMC(os.path.join(work, "bmc"), name=h).start()
            inv["hosts"][h] = bmcs[h].entry(timeout=3)
        inv_path = os.path.join(work, "inventory.yaml")
        with open(inv_path, "w") as f:
            yaml.safe_dump(inv, f)
        os.chmod(inv_path, 0o600)
        base = {"coordination": {"backend_url": zk.url},
                "telemetry": {"controller_port": 0, "agent_port": 0}}
        bus = {"DEFAULT": {"transport_url": ep["transport_url"]},
               "oslo_messaging_notifications": {"driver": "messagingv2"}}

        def agent(h, tag):
            n = h[len("compute"):]
            d = daemons.Daemon.instanceha(
                "instanceha-agent", work, f"agent-{h}-{tag}",
                dict(base, DEFAULT={"host": h}, agent={
                    "watched_processes": f"nova-compute:nova-compute{n}.conf",
                    "health_check_interval": 0.5})).start()
            started.append(d)
            return d

        agents = {h: agent(h, 0) for h in hosts}
        sections = dict(base, **bus)
        sections.update(
            DEFAULT=dict(bus["DEFAULT"], host="ctl"),
            fencing={"inventory_file": inv_path, "deadline": 20, "poll_interval": 0.2},
            # every host fails again and again on purpose: no flap damping here
            controller={"flap_failures": 100},
            nova=dict(cloud.nova_options(), timeout=30, poll_interval=0.5,
                      evacuation_concurrency=8))
        ctl = daemons.Daemon.instanceha("instanceha-controller", work, "ctl",
                                        sections).start()
        started.append(ctl)
        ctl.wait_log("leadership gained", timeout=60)
        received = []
        listener = subprocess.Popen(
            [os.path.join(BIN, "instanceha"), "--config-file",
             daemons.write_conf(os.path.join(work, "listen.conf"), bus), "listen",
             "--format", "json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

        def read_bus():
            for raw in listener.stdout:
                try:
                    received.append((datetime.datetime.now(), json.loads(raw)))
                except ValueError:
                    pass

        threading.Thread(target=read_bus, daemon=True).start()
        conn = cloud.connection()
        image = conn.image.find_image(ep["image"])
        flavor = conn.compute.find_flavor(ep["flavor"])
        for run in range(args.runs):
            victim = hosts[run % len(hosts)]
            for h in hosts:
                ctl.wait_log(rf"host={h} phase=\w+->HEALTHY", timeout=120)
            # a host re-enabled moments ago may not be schedulable yet (Nova syncs its
            # COMPUTE_STATUS_DISABLED trait on the compute's next resource update):
            # boot again until it takes, for up to 3 minutes
            boot_failed, boot_deadline = None, time.monotonic() + 180
            while True:
                made = [conn.compute.create_server(
                    name=f"bench-{run}-{i}", image_id=image.id, flavor_id=flavor.id,
                    networks="none", metadata={"instanceha:recovery": "evacuate"},
                    availability_zone=f"nova:{victim}") for i in range(args.servers)]
                ids = [s.id for s in made]
                boot_failed = None
                for sid in ids:
                    try:
                        conn.compute.wait_for_server(conn.compute.get_server(sid),
                                                     status="ACTIVE", wait=300)
                    except Exception as e:  # a boot Nova refuses is reported, not measured
                        fault = getattr(conn.compute.get_server(sid), "fault", None) or {}
                        boot_failed = f"{type(e).__name__}: {fault.get('message', e)}"
                if not boot_failed or time.monotonic() > boot_deadline:
                    break
                for server in made:
                    conn.compute.delete_server(server)
                time.sleep(10)
            if boot_failed:
                skipped.append((run, victim, boot_failed))
                print(f"run {run + 1}/{args.runs} ({victim}): boot failed, run skipped: "
                      f"{boot_failed}", flush=True)
                for server in made:
                    conn.compute.delete_server(server)
                continue
            time.sleep(1.0)
            mark = ctl.log_size()
            killed = datetime.datetime.now()
            agents[victim].kill()
            cloud.kill_compute(victim)
            t_failed = log_time(ctl, rf"host={victim} phase=\w+->FAILED", mark)
            t_fenced = log_time(ctl, rf"host={victim} fenced:", mark)

            def first_evacuation(ids=ids, killed=killed):
                for at, e in list(received):
                    if at >= killed and e.get("event_type", "").endswith("evacuate.start") \
                            and e["payload"].get("instance_id") in ids:
                        return at
                return None

            t_first = procs.wait_for(first_evacuation, 300, "the first evacuation")

            def all_active(ids=ids, victim=victim):
                servers = [conn.compute.get_server(sid) for sid in ids]
                ok = all(s.status == "ACTIVE" and s.compute_host != victim and not s.task_state
                         for s in servers)
                return datetime.datetime.now() if ok else None

            t_all = procs.wait_for(all_active, 600, "every server ACTIVE elsewhere", 0.2)
            for key, t in (("failed", t_failed), ("fenced", t_fenced),
                           ("first_evacuation", t_first), ("all_active", t_all)):
                results[key].append((t - killed).total_seconds())
            print(f"run {run + 1}/{args.runs} ({victim}, {args.servers} servers): " + ", ".join(
                f"{k} +{v[-1]:.2f}s" for k, v in results.items()), flush=True)
            # repair: power on, nova-compute and agent back; wait for re-enable
            bmcs[victim].set_power(True)
            cloud.start_compute(victim)
            mark = ctl.log_size()
            agents[victim] = agent(victim, run + 1)
            ctl.wait_log(rf"host={victim} back in service", timeout=300, after=mark)
            for server in made:
                conn.compute.delete_server(server)
            for server in made:
                conn.compute.wait_for_delete(server, wait=120)
        print()
        print(f"end to end over {len(results['failed'])} runs, {args.servers} opted-in "
              "servers each "
              "(seconds from the host's death)")
        for k, v in results.items():
            print(f"  {k:17s} p50 {statistics.median(v):6.2f}  p95 {pct(v, 95):6.2f}  "
                  f"min {min(v):6.2f}  max {max(v):6.2f}")
        print("  target: first evacuation issued within 10 s (p50)")
        if skipped:
            print(f"  {len(skipped)} run(s) skipped: the servers did not boot: {skipped}")
        return 0
    finally:
        if listener is not None:
            listener.kill()
        for d in started:
            d.terminate()
        for b in bmcs.values():
            b.stop()
        if cloud is not None:
            cloud.down(wipe=True)
        if zk is not None:
            zk.stop()
        if args.keep:
            print(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
