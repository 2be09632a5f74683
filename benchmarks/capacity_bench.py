"""Capacity benchmark: the failover model's cost, a rack failing, the spread.

1. **Model** at 1,000 and 5,000 hosts of 20 servers each, read through the
   real ``ModelReader`` from an in-memory Placement and Nova (three flavors,
   five restart priorities, 2 % of the servers in anti-affinity groups of
   three, racks of 40 hosts as failure domains): the full computation (the
   controller's ``CapacityMonitor.update``: apply the first read, then every
   host's and every rack's plan, Python's cyclic collector paused; what the
   collector then owes is measured apart), the incremental
   update (one server booted or deleted: the incremental read, the apply and
   the re-planning), the requests per read, and the memory the model, its
   index and its plans hold (tracemalloc, a separate build).
2. **Rack failure**: the 40 hosts of one rack fail together in the 5,000-host
   cloud; each host's recovery plans its 20 servers (the real ``Dispatcher``,
   evacuations in flight counted by the others' plans) and sends them through
   the real ``Throttle`` (64 at once, 16 per target), each evacuation taking
   20-80 ms (simulated Nova). Figures: time to plan, the dispatch order
   (priorities out of order), peak concurrency overall and per target, how
   the servers spread over the survivors, and the capacity model's requests
   per recovered server (the budget test allows 10 per server; the recovery
   itself used 4.9).
3. ``--cloud``: the spread on the real mini-cloud, as a new user meets it: 4
   servers on compute1, compute1 dies (nova-compute killed, forced down), the
   4 evacuated at once, without targets (Nova's scheduler alone) and with the
   plan's targets, ``--reps`` times each; how many times all 4 landed on one
   survivor.

    python benchmarks/capacity_bench.py [--hosts 1000,5000] [--json FILE]
        [--cloud [--reps 8] [--run-dir RUN_DIR]]

Targets are data (``TARGETS``); a verdict per target is printed and written
to the JSON; the exit status is non-zero when one is missed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import gc
import json
import os
import random
import statistics
import sys
import threading
import time
import tracemalloc

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "tools"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from targets import Target, report  # noqa: E402

from instanceha.compute.capacity_reads import GroupRecord, Provider, ServerRecord  # noqa: E402
from instanceha.compute.model import ComputeService, Server  # noqa: E402
from instanceha.controller.capacity import (  # noqa: E402
    CapacityMonitor,
    CapacitySettings,
    gc_paused,
)
from instanceha.controller.capacity_dispatch import Dispatcher, Throttle  # noqa: E402
from instanceha.controller.capacity_reader import ModelReader, ReaderSettings  # noqa: E402
from instanceha.engine.capacity_coverage import CoveragePolicy  # noqa: E402
from instanceha.engine.instance_policy import Recovery  # noqa: E402
from instanceha.engine.model import Phase  # noqa: E402

TARGETS = (
    Target("full_model_s_5000", 1.0, "<=", "s",
           "the whole model at 5,000 hosts x 20 servers: the first read applied, every "
           "host's and every rack's plan made (CPU seconds)"),
    Target("incremental_p95_ms_5000", 50.0, "<=", "ms",
           "one server booted or deleted at 5,000 hosts: incremental read, apply, re-plan "
           "(p95, CPU)"),
    Target("rack_peak_in_flight", 64, "<=", "", "evacuations in flight at once (the limit)"),
    Target("rack_peak_per_target", 16, "<=", "", "evacuations in flight towards one host"),
    Target("rack_unplaced", 0, "==", "servers", "servers of the failed rack without room "
           "(the cloud has room for a rack)"),
    Target("capacity_requests_per_recovered_server", 5.1, "<=", "req",
           "the capacity model's requests during a recovery, per recovered server: the "
           "budget test allows 10, the recovery itself uses 4.9"),
)
CLOUD_TARGETS = (
    Target("cloud_all_on_one_targeted", 0, "==", "reps",
           "4 servers evacuated at once onto 2 survivors with the plan's targets: times all "
           "4 landed on one survivor"),
)

FLAVORS = ({"vcpus": 2, "ram": 4096, "disk": 40}, {"vcpus": 4, "ram": 8192, "disk": 80},
           {"vcpus": 8, "ram": 16384, "disk": 160})
PRIORITIES = ("lowest", "low", "medium", "high", "highest")
INVENTORY = {"VCPU": {"total": 64, "reserved": 0, "allocation_ratio": 4.0, "max_unit": 64},
             "MEMORY_MB": {"total": 524288, "reserved": 8192, "allocation_ratio": 1.0,
                           "max_unit": 524288},
             "DISK_GB": {"total": 8000, "reserved": 0, "allocation_ratio": 1.0}}
T0 = datetime.datetime(2026, 12, 6, tzinfo=datetime.timezone.utc)


class SimCloud:
    """Placement and Nova in memory, with the capacity reads' surface."""

    def __init__(self, hosts: int, per_host: int, seed: int = 7) -> None:
        rnd = random.Random(seed)
        self.requests = 0
        self.used: dict[str, dict[str, int]] = {}
        self.hosts = [f"cmp{i:05d}" for i in range(hosts)]
        self.generation = {h: 1 for h in self.hosts}
        self.servers: dict[str, ServerRecord] = {}
        self.changed: list[ServerRecord] = []
        self.minute = 0
        self.groups: list[GroupRecord] = []
        grouped: list[str] = []
        for h in self.hosts:
            for j in range(per_host):
                sid = f"{h}-{j:02d}"
                self._put(self._record(sid, h, rnd))
                if rnd.random() < 0.02:
                    grouped.append(sid)
        for i in range(0, len(grouped) - 2, 3):
            self.groups.append(GroupRecord(f"grp-{i}", f"aa-{i}", "anti-affinity", 1,
                                           tuple(grouped[i:i + 3])))
        self.aggs = [{"name": f"rack-{r:03d}", "hosts": self.hosts[r * 40:(r + 1) * 40],
                      "metadata": {"instanceha:failure_domain": "true"}}
                     for r in range((hosts + 39) // 40)]
        self.svcs = {h: ComputeService(h, h, "up", "enabled", False, None, "az1", None)
                     for h in self.hosts}
        self.rnd = rnd

    def _record(self, sid, host, rnd) -> ServerRecord:
        flavor = dict(rnd.choice(FLAVORS), ephemeral=0, swap=0, extra_specs={})
        meta = {"instanceha:recovery": "evacuate",
                "instanceha:priority": rnd.choice(PRIORITIES)}
        return ServerRecord(sid, sid, host, "ACTIVE", "p", meta, flavor, "img", "az1",
                            T0 + datetime.timedelta(minutes=self.minute))

    def _put(self, rec: ServerRecord) -> None:
        self.servers[rec.id] = rec
        self._use(rec, 1)

    def _use(self, rec: ServerRecord, sign: int) -> None:
        used = self.used.setdefault(rec.host, {"VCPU": 0, "MEMORY_MB": 0, "DISK_GB": 0})
        used["VCPU"] += sign * rec.flavor["vcpus"]
        used["MEMORY_MB"] += sign * rec.flavor["ram"]
        used["DISK_GB"] += sign * rec.flavor["disk"]

    def boot(self, host: str) -> str:
        self.minute += 1
        sid = f"new-{self.minute}"
        rec = self._record(sid, host, self.rnd)
        self._put(rec)
        self.changed.append(rec)
        self.generation[host] += 1
        return sid

    def delete(self, sid: str) -> None:
        self.minute += 1
        old = self.servers.pop(sid)
        self._use(old, -1)
        self.changed.append(dataclasses.replace(
            old, status="DELETED", updated=T0 + datetime.timedelta(minutes=self.minute)))
        # as Placement: deleting allocations does not bump the generation

    # -- the CapacityReads surface ----------------------------------------------
    def providers(self):
        self.requests += 1
        return [Provider(f"rp-{h}", h, g, f"rp-{h}") for h, g in self.generation.items()]

    def hypervisors(self):
        self.requests += max(1, len(self.hosts) // 1000)
        return {f"rp-{h}": h for h in self.hosts}

    def inventories(self, uuid):
        self.requests += 1
        return INVENTORY

    def usages(self, uuid):
        self.requests += 1
        return dict(self.used.get(uuid[3:], {"VCPU": 0, "MEMORY_MB": 0, "DISK_GB": 0}))

    def servers_list(self, since=None):
        if since is None:
            self.requests += max(1, len(self.servers) // 1000)
            self.changed = []
            return list(self.servers.values())
        self.requests += 1
        out, self.changed = self.changed, []
        return out

    def server_groups(self):
        self.requests += max(1, len(self.groups) // 1000)
        return list(self.groups)

    def aggregates(self):
        return list(self.aggs)  # cached by the Nova adapter: no request most reads

    def image_properties(self, image_id):
        self.requests += 1
        return {}

    def services(self):
        self.requests += 1
        return list(self.svcs.values())




class Reads:
    """SimCloud under the adapter's method names."""

    def __init__(self, sim: SimCloud) -> None:
        self.sim = sim

    def __getattr__(self, name):
        return getattr(self.sim, name)

    def servers(self, since=None):
        return self.sim.servers_list(since)


def build(hosts: int, per_host: int, phases=None):
    sim = SimCloud(hosts, per_host)
    reader = ModelReader(Reads(sim), ReaderSettings(default_recovery=Recovery.IGNORE),
                         phases=lambda: phases or {})
    monitor = CapacityMonitor(reader, CapacitySettings(coverage=CoveragePolicy()),
                              submit=lambda f: f())
    return sim, reader, monitor


def cpu_wall(fn):
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c, time.perf_counter() - w


def apply_and_plan(hosts: int, per_host: int) -> tuple[float, float]:
    """CPU seconds of the update's two steps apart, on a model of its own."""
    _, reader, monitor = build(hosts, per_host)
    batch, _ = reader.read()
    gc.collect()
    with gc_paused():
        _, apply_cpu, _ = cpu_wall(lambda: reader.apply(batch))
        _, plan_cpu, _ = cpu_wall(monitor.tracker.refresh)
    return apply_cpu, plan_cpu


def model_figures(hosts: int, per_host: int, updates: int) -> dict:
    sim, reader, monitor = build(hosts, per_host)
    gc.collect()
    (batch, stats), read_cpu, read_wall = cpu_wall(reader.read)
    # the controller's own update (``CapacityMonitor.update``: the apply and
    # the plans, the cyclic collector paused), then the same two steps apart
    # on a fresh model, the collector paused as the monitor does
    _, full_cpu, full_wall = cpu_wall(lambda: monitor.update(batch, 0.0))
    # what the paused collector owes: the update's objects traversed once (a
    # full collection now; the controller pays it in young collections later)
    _, gc_cpu, _ = cpu_wall(gc.collect)
    first_requests = stats.requests
    apply_cpu, plan_cpu = apply_and_plan(hosts, per_host)
    rnd = random.Random(3)
    times, replanned, reqs = [], [], []
    for i in range(updates):
        if i % 2 == 0:
            sim.boot(rnd.choice(sim.hosts))
        else:
            sim.delete(rnd.choice([s for s in sim.servers if s.startswith("new-")]
                                  or list(sim.servers)))
        before = sim.requests

        def step():
            b, _ = reader.read()
            return monitor.update(b, 0.0)

        _, c, _w = cpu_wall(step)
        times.append(c * 1000)
        replanned.append(monitor.tracker.replanned)
        reqs.append(sim.requests - before)
    times.sort()
    sim = reader = monitor = batch = None
    gc.collect()
    tracemalloc.start()
    sim, reader, monitor = build(hosts, per_host)
    monitor.tick(leading=True)
    del sim  # the in-memory cloud is not the controller's memory
    gc.collect()
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    cov = monitor.coverage
    return {
        "hosts": hosts, "servers": hosts * per_host,
        "read_cpu_s": round(read_cpu, 3), "apply_cpu_s": round(apply_cpu, 3),
        "plan_cpu_s": round(plan_cpu, 3),
        "full_model_cpu_s": round(full_cpu, 3),
        "full_model_wall_s": round(full_wall, 3),
        "gc_after_update_cpu_s": round(gc_cpu, 3),
        "plans": len(cov.hosts) + len(cov.domains), "covered": cov.covered,
        "first_read_requests": first_requests,
        "incremental_p50_ms": round(times[len(times) // 2], 2),
        "incremental_p95_ms": round(times[int(len(times) * 0.95) - 1], 2),
        "incremental_max_ms": round(times[-1], 2),
        "incremental_replanned_p50": statistics.median(replanned),
        "incremental_requests": statistics.median(reqs),
        "memory_mb": round(held / 2**20, 1),
    }


@dataclasses.dataclass
class Evac:
    priority: int
    target: str | None
    admitted_at: float = 0.0


def rack_failure(hosts: int, per_host: int, rack: int = 3) -> dict:
    failed = [f"cmp{i:05d}" for i in range(rack * 40, rack * 40 + 40)]
    phases = {h: Phase.FAILED for h in failed}
    sim, reader, monitor = build(hosts, per_host, phases)
    monitor.tick(leading=True)
    throttle = Throttle(64, 16)
    dispatcher = Dispatcher(monitor, throttle, default_priority=300)
    servers = {h: [Server(s.id, s.name, "ACTIVE", "active", None, h, "p", False,
                          dict(s.metadata), {}, s.image_id, "az1")
                   for s in sim.servers.values() if s.host == h] for h in failed}
    requests_before = sim.requests
    plans, plan_times = {}, []
    lock = threading.Lock()

    def plan_host(h):
        t = time.perf_counter()
        d = dispatcher.plan(h, servers[h], {})  # counted by the plans made after it
        with lock:
            plan_times.append(time.perf_counter() - t)
        return h, d

    t_plan = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # the actuator's workers
        for h, d in pool.map(plan_host, failed):
            plans[h] = d
    plan_all = time.perf_counter() - t_plan
    rnd = random.Random(5)
    start = threading.Event()
    landed: dict[str, int] = {}

    def evacuate(h):
        d = plans[h]
        gate = dispatcher.gate(d)
        start.wait()

        def one(s):
            target = d.targets.get(s.id)
            with gate(s, target):
                time.sleep(rnd.uniform(0.02, 0.08))  # Nova rebuilding it
                with lock:
                    landed[target] = landed.get(target, 0) + 1

        with concurrent.futures.ThreadPoolExecutor(32) as pool:  # the evacuator's
            list(pool.map(one, d.send))

    threads = [threading.Thread(target=evacuate, args=(h,)) for h in failed]
    for t in threads:
        t.start()
    t_run = time.perf_counter()
    start.set()
    for t in threads:
        t.join()
    run = time.perf_counter() - t_run
    # one periodic read of the model during the recovery (every 60 s; the
    # recovery's own rebuild notifications bring none forward)
    monitor.tick(leading=False)
    monitor.tick(leading=True)  # a new term reads at once
    capacity_requests = sim.requests - requests_before
    order = [p for p, _ in throttle.admitted_order]
    out_of_order = sum(1 for a, b in zip(order, order[1:], strict=False) if b > a)
    sent = sum(len(d.send) for d in plans.values())
    unplaced = sum(len(d.held) for d in plans.values())
    per_target = sorted(landed.values())
    return {
        "failed_hosts": len(failed), "servers": sent + unplaced, "sent": sent,
        "unplaced": unplaced,
        "plan_all_s": round(plan_all, 3),
        "plan_per_host_p50_ms": round(statistics.median(plan_times) * 1000, 2),
        "plan_per_host_max_ms": round(max(plan_times) * 1000, 2),
        "dispatch_s": round(run, 2), "peak_in_flight": throttle.peak,
        "peak_per_target": throttle.peak_per_target,
        "first_admitted_priorities": order[:10],
        "last_admitted_priorities": order[-10:],
        "admissions_out_of_priority_order": out_of_order,
        "targets_used": len(landed), "servers_per_target_max": per_target[-1],
        "servers_per_target_p50": statistics.median(per_target),
        "capacity_requests_during_recovery": capacity_requests,
        "capacity_requests_per_recovered_server": round(capacity_requests / max(1, sent), 3),
    }


def cloud_spread(reps: int, run_dir: str | None) -> dict:
    from evacuate_bench import delete, restore
    from harness.minicloud import MiniCloud

    from instanceha.compute.capacity_reads import CapacityReads
    from instanceha.compute.evacuation import EvacuationSettings, Evacuator
    from instanceha.compute.nova import NovaClient
    from instanceha.engine import marker

    cloud = MiniCloud.attach(run_dir) if run_dir else MiniCloud.in_run_dir(
        prefix="capbench-").up()
    conn = cloud.connection()
    nova = NovaClient(conn)
    victim, survivors = cloud.hosts[0], cloud.hosts[1:3]
    image = conn.image.find_image(cloud.endpoints["image"])
    flavor = conn.compute.find_flavor(cloud.endpoints["flavor"])
    rows = []
    try:
        for rep in range(reps):
            for targeted in (False, True):
                ids = [conn.compute.create_server(
                    name=f"spread-{rep}-{i}", image_id=image.id, flavor_id=flavor.id,
                    networks="none", availability_zone=f"nova:{victim}",
                    metadata={"instanceha:recovery": "evacuate"}).id for i in range(4)]
                for sid in ids:
                    conn.compute.wait_for_server(conn.compute.get_server(sid), "ACTIVE",
                                                 wait=300, interval=1)
                targets = {}
                if targeted:  # the controller's model, read now
                    reader = ModelReader(CapacityReads(nova),
                                         ReaderSettings(default_recovery=Recovery.EVACUATE))
                    monitor = CapacityMonitor(reader, submit=lambda f: f())
                    monitor.tick(leading=True)
                cloud.kill_compute(victim)
                nova.force_down(victim, marker.encode(
                    marker.MarkerState.FENCED, token=rep + 1,
                    at=datetime.datetime.now(datetime.timezone.utc)))
                on_host = nova.servers_on_host(victim)
                if targeted:
                    d = Dispatcher(monitor, Throttle()).plan(victim, on_host, {})
                    targets = dict(d.targets)
                t = time.monotonic()
                results = Evacuator(nova, EvacuationSettings(concurrency=4)).evacuate_host(
                    victim, on_host, targets=targets)
                seconds = time.monotonic() - t
                where = [r.dest_host for r in results]
                rows.append({"rep": rep, "targeted": targeted, "landed": where,
                             "all_on_one": len(set(where)) == 1 and len(where) == 4,
                             "ok": all(r.ok for r in results), "seconds": round(seconds, 1)})
                print(f"rep {rep} {'targeted' if targeted else 'scheduler'}: {where} "
                      f"in {seconds:.1f} s", flush=True)
                restore(cloud, nova, victim)
                delete(conn, ids)
    finally:
        if not run_dir:
            cloud.down(wipe=True)
    return {"rows": rows, "survivors": survivors,
            "all_on_one_scheduler": sum(r["all_on_one"] for r in rows if not r["targeted"]),
            "all_on_one_targeted": sum(r["all_on_one"] for r in rows if r["targeted"]),
            "reps": reps}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hosts", default="1000,5000")
    p.add_argument("--per-host", type=int, default=20)
    p.add_argument("--updates", type=int, default=40)
    p.add_argument("--cloud", action="store_true")
    p.add_argument("--reps", type=int, default=8)
    p.add_argument("--run-dir", default=os.environ.get("INSTANCEHA_MINICLOUD_RUN_DIR"))
    p.add_argument("--json")
    a = p.parse_args(argv)
    out: dict = {"at": datetime.datetime.now().isoformat(timespec="seconds"),
                 "per_host": a.per_host, "models": [], "load": os.getloadavg()}
    measured: dict[str, float | None] = {}
    targets = TARGETS
    if a.cloud:
        targets = CLOUD_TARGETS
        spread = cloud_spread(a.reps, a.run_dir)
        out["cloud_spread"] = spread
        measured["cloud_all_on_one_targeted"] = spread["all_on_one_targeted"]
        print(f"all 4 on one survivor: scheduler alone {spread['all_on_one_scheduler']} of "
              f"{a.reps}, with the plan's targets {spread['all_on_one_targeted']} of {a.reps}")
    else:
        for n in (int(x) for x in a.hosts.split(",")):
            row = model_figures(n, a.per_host, a.updates)
            out["models"].append(row)
            print(json.dumps(row), flush=True)
            if n == 5000:
                measured["full_model_s_5000"] = row["full_model_cpu_s"]
                measured["incremental_p95_ms_5000"] = row["incremental_p95_ms"]
        rack = rack_failure(5000, a.per_host)
        out["rack"] = rack
        print(json.dumps(rack), flush=True)
        measured.update(rack_peak_in_flight=rack["peak_in_flight"],
                        rack_peak_per_target=rack["peak_per_target"],
                        rack_unplaced=rack["unplaced"],
                        capacity_requests_per_recovered_server=rack[
                            "capacity_requests_per_recovered_server"])
    status = report(targets, measured, out=out)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    return status


if __name__ == "__main__":
    sys.exit(main())
