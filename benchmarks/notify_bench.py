#!/usr/bin/env python3
"""Notification latency: from "fence confirmed" to the consumer holding the
"recovery required" events of every notify-only instance on the failed host;
with ``--aodh``, from "host failed" to a tenant's webhook through Ceilometer
and Aodh, beside the direct bus consumer in the same run.

    .venv/bin/python benchmarks/notify_bench.py [--runs 30] [--instances 50]
                                                [--consumer inprocess|listen]
    .venv/bin/python benchmarks/notify_bench.py --aodh [--runs 30] [--instances 10]
                                                [--json OUT.json]

Each run emits ``instanceha.host.fence.end`` then one
``instanceha.instance.recovery_required`` per instance, through the
controller's Notifier (oslo.messaging messagingv2, the ordered outbox), on a
real RabbitMQ started by tools/harness/rabbitmq.py (or the one named by
INSTANCEHA_TEST_RABBITMQ_URL). The clock starts right before the fence.end
event is emitted and stops when the consumer has received the last instance
event of the run:

* ``inprocess``: an oslo.messaging notification listener in this process
  (what a Python VNF manager runs);
* ``listen``: ``instanceha listen --format json`` in its own process, the
  time taken when its line is read from its stdout.

``--aodh`` runs on the mini-cloud (tools/minicloud, or the one named by
INSTANCEHA_MINICLOUD_RUN_DIR) with its opt-in Ceilometer and Aodh
(tools/harness/telemetry.py, instanceha's shipped event definitions). Each run
is one failure as the controller announces it: ``host.failed``, the fence,
``recovery.start``, one ``recovery_required`` per instance of one tenant's
project, ``recovery.end``, emitted back to back (the fence's own time is
measured by the fencing and end-to-end benchmarks). The clock starts right
before ``host.failed`` is emitted (detection) and stops when each consumer
holds the tenant's first, and then all, instance events: the in-process bus
consumer (what a VNF manager with the operator's bus credentials runs) and
the webhook of the tenant's Aodh event alarm (what one with only its
tenant's credentials gets). The difference per run is what the OpenStack
path adds.

Prints p50/p95/p99 over the runs, a verdict per target (benchmarks/targets.py;
OPNFV Doctor: detection to consumer under 1 s), and exits non-zero on a miss.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings

warnings.filterwarnings("ignore", message=r"(?s)\s*Eventlet is deprecated")

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [TOP, os.path.join(TOP, "tools")]

from harness import rabbitmq as rmq  # noqa: E402
from oslo_config import cfg  # noqa: E402
from targets import Target, report  # noqa: E402

from instanceha.conf import default as conf_default  # noqa: E402
from instanceha.conf import notifications as conf_notifications  # noqa: E402
from instanceha.notify import events, listener, notifier  # noqa: E402

TARGETS_BUS = (
    Target("bus_all_p99_s", 1.0, "<=", "s",
           "fence confirmed -> the consumer holds every instance event, p99 (OPNFV Doctor)"),
)
TARGETS_AODH = (
    Target("bus_first_p99_s", 1.0, "<=", "s",
           "detection -> the bus consumer holds the tenant's first instance event, p99 (Doctor)"),
    Target("aodh_first_p99_s", 1.0, "<=", "s",
           "detection -> the tenant's Aodh webhook holds its first instance event, p99 (Doctor)"),
    Target("aodh_all_p99_s", 1.0, "<=", "s",
           "detection -> the tenant's webhook holds every instance event, p99"),
    Target("aodh_runs", 20, ">=", "",
           "failures measured (at least 20 for a p99 that means something)"),
)


def write_conf(path: str, url: str, topic: str, exchange: str | None = None) -> str:
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(f"[DEFAULT]\nhost = bench-ctl\ntransport_url = {url}\n"
                f"control_exchange = {exchange or 'ih-bench-' + topic}\n"
                f"[oslo_messaging_notifications]\ndriver = messagingv2\ntopics = {topic}\n")
    return path


def load_conf(path: str) -> cfg.ConfigOpts:
    c = cfg.ConfigOpts()
    conf_default.register_opts(c)
    conf_notifications.register_opts(c)
    c(["--config-file", path], default_config_files=[])
    conf_notifications.register_oslo_messaging_opts(c)
    return c


class Arrivals:
    """incident_id -> [monotonic time of each instance event received]."""

    def __init__(self):
        self.lock = threading.Condition()
        self.times: dict[str, list[float]] = {}

    def add(self, event_type: str, incident: str, when: float) -> None:
        if event_type != events.RECOVERY_REQUIRED:
            return
        self.put(incident, when)

    def put(self, incident: str, when: float) -> None:
        with self.lock:
            self.times.setdefault(incident, []).append(when)
            self.lock.notify_all()

    def wait(self, incident: str, count: int, timeout: float) -> list[float]:
        with self.lock:
            self.lock.wait_for(lambda: len(self.times.get(incident, ())) >= count, timeout)
            return list(self.times.get(incident, ()))


def inprocess_consumer(conf_path: str, topic: str, arrivals: Arrivals):
    def on_event(r):
        arrivals.add(r.event_type, r.payload.get("incident_id"), time.monotonic())

    lst = listener.Listener(load_conf(conf_path), (topic,), f"bench-{topic}", on_event).start()
    return lst.stop


def listen_consumer(conf_path: str, arrivals: Arrivals):
    proc = subprocess.Popen(
        [sys.executable, "-m", "instanceha.cmd.listen_cli", "--config-file", conf_path,
         "--format", "json"], cwd=TOP, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL, text=True, bufsize=1)
    ready = threading.Event()

    def read_err():
        for line in proc.stderr:
            if "listening on" in line:
                ready.set()

    def read_out():
        for line in proc.stdout:
            when = time.monotonic()
            row = json.loads(line)
            arrivals.add(row["event_type"], row["payload"].get("incident_id"), when)

    threading.Thread(target=read_err, daemon=True).start()
    threading.Thread(target=read_out, daemon=True).start()
    if not ready.wait(60):
        proc.kill()
        raise SystemExit("instanceha listen did not subscribe within 60 s")

    def stop():
        proc.terminate()
        proc.wait(30)
    return stop


def pct(values: list[float], p: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def line(name, values):
    return (f"{name:<50} p50 {pct(values, 50) * 1000:7.1f} ms  p95 "
            f"{pct(values, 95) * 1000:7.1f} ms  p99 {pct(values, 99) * 1000:7.1f} ms  "
            f"max {max(values) * 1000:7.1f} ms")


def environment() -> str:
    return (f"{platform.node()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, "
            f"Python {platform.python_version()}")


def write_json(path: str | None, out: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(out, f, indent=2, sort_keys=True)
            f.write("\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--instances", type=int, default=None,
                    help="notify-only instances per failure (default 50; 10 with --aodh)")
    ap.add_argument("--consumer", choices=("inprocess", "listen"), default="inprocess")
    ap.add_argument("--aodh", action="store_true",
                    help="a tenant's webhook through Ceilometer and Aodh, beside the bus consumer")
    ap.add_argument("--warmup", type=int, default=2, help="runs not counted")
    ap.add_argument("--json", metavar="PATH", help="write the figures and verdicts here")
    args = ap.parse_args(argv)
    if args.aodh:
        return aodh_main(args)
    args.instances = args.instances or 50

    work = tempfile.mkdtemp(prefix="ih-notify-bench-")
    t = time.monotonic()
    broker = rmq.rabbitmq(os.path.join(work, "rabbitmq"))
    print(f"broker: {broker.redacted_url} ({'started' if broker.owned else 'reused'} in "
          f"{time.monotonic() - t:.1f} s)", flush=True)
    topic = f"bench{uuid.uuid4().hex[:8]}"
    conf_path = write_conf(os.path.join(work, "bench.conf"), broker.url, topic)
    arrivals = Arrivals()
    stop_consumer = (inprocess_consumer(conf_path, topic, arrivals) if args.consumer == "inprocess"
                     else listen_consumer(conf_path, arrivals))
    c = load_conf(conf_path)
    n = notifier.make_notifier(c, conf_notifications.bus_settings(c),
                               conf_notifications.delivery_policy(c)).start()
    totals, firsts, emits = [], [], []
    try:
        for run in range(args.warmup + args.runs):
            incident = f"bench-{run}-{uuid.uuid4().hex[:6]}"
            vms = [str(uuid.uuid4()) for _ in range(args.instances)]
            t0 = time.monotonic()
            n.emit(events.fence_end(host="compute1", driver="ipmi", incident_id=incident))
            for vm in vms:
                n.emit(events.recovery_required(host="compute1", incident_id=incident,
                                                instance_id=vm, project_id="vnf-tenant"))
            t_emit = time.monotonic() - t0
            got = arrivals.wait(incident, args.instances, 60)
            if len(got) < args.instances:
                print(f"run {run}: only {len(got)} of {args.instances} events within 60 s",
                      flush=True)
                return 1
            if run >= args.warmup:
                totals.append(max(got) - t0)
                firsts.append(min(got) - t0)
                emits.append(t_emit)
            time.sleep(0.05)  # let the sender go idle: each run starts cold, like a failure
    finally:
        stats = n.close()
        stop_consumer()
        broker.close()

    print(f"\n{args.runs} runs (+{args.warmup} warm-up), {args.instances} notify-only instances,"
          f" consumer {args.consumer}; {environment()}")
    print(line(f"controller: emit() of all {args.instances + 1} events", emits))
    print(line("fence confirmed -> first instance event", firsts))
    print(line(f"fence confirmed -> all {args.instances} instance events", totals))
    print(f"outbox: delivered {stats.delivered}, failed attempts {stats.failed_attempts}, "
          f"lost {stats.lost}")
    out = {"benchmark": "notify", "consumer": args.consumer, "runs": args.runs,
           "instances": args.instances, "environment": environment(),
           "emit_s": emits, "first_s": firsts, "all_s": totals}
    measured = {"bus_all_p99_s": pct(totals, 99)}
    status = report(TARGETS_BUS, measured, out)
    write_json(args.json, out)
    return status


def aodh_main(args) -> int:
    """Failure -> tenant webhook through Ceilometer and Aodh, beside the bus."""
    from harness.minicloud import MiniCloud
    from harness.telemetry import Telemetry, Webhook

    instances = args.instances or 10
    t = time.monotonic()
    run_dir = os.environ.get("INSTANCEHA_MINICLOUD_RUN_DIR")
    if run_dir:
        cloud = MiniCloud.attach(run_dir)
    else:
        MiniCloud.install()
        cloud = MiniCloud.in_run_dir(prefix="bench-notify-", computes=1)
    hook = None
    try:
        if not run_dir:
            cloud.up()  # inside the try: a cloud that failed half-way is stopped too
        tele = Telemetry(cloud).up()
        print(f"mini-cloud and telemetry ready in {time.monotonic() - t:.0f} s "
              f"({cloud.run_dir})", flush=True)
        tenant = tele.tenant("bench-vnf")
        hook = Webhook()
        tenant.event_alarm("bench-instances", "instanceha.instance.*", hook.url("bench"))
        work = tempfile.mkdtemp(prefix="ih-notify-bench-")
        # the topic and exchange the controller and Ceilometer use by default
        conf_path = write_conf(os.path.join(work, "bench.conf"),
                               cloud.endpoints["transport_url"], "notifications", "openstack")
        bus = Arrivals()
        stop_consumer = inprocess_consumer(conf_path, "notifications", bus)
        c = load_conf(conf_path)
        n = notifier.make_notifier(c, conf_notifications.bus_settings(c),
                                   conf_notifications.delivery_policy(c)).start()
        rows = []
        try:
            for run in range(args.warmup + args.runs):
                row = one_failure(n, bus, hook, tenant.project_id, instances, run)
                if row is None:
                    return 1
                if run >= args.warmup:
                    rows.append(row)
                time.sleep(0.2)  # each failure starts on an idle path
        finally:
            stats = n.close()
            stop_consumer()
    finally:
        if hook is not None:
            hook.close()
        if cloud.owned and not run_dir:
            cloud.down(wipe=True)

    col = {k: [r[k] for r in rows] for k in rows[0]}
    added_first = [r["aodh_first"] - r["bus_first"] for r in rows]
    added_all = [r["aodh_all"] - r["bus_all"] for r in rows]
    print(f"\n{len(rows)} failures (+{args.warmup} warm-up), {instances} notify-only instances "
          f"of one tenant each; {environment()}")
    print(line("detection -> bus consumer: first instance event", col["bus_first"]))
    print(line(f"detection -> bus consumer: all {instances}", col["bus_all"]))
    print(line("detection -> tenant webhook (Aodh): first", col["aodh_first"]))
    print(line(f"detection -> tenant webhook (Aodh): all {instances}", col["aodh_all"]))
    print(line("added by Ceilometer + Aodh: first event", added_first))
    print(line(f"added by Ceilometer + Aodh: all {instances}", added_all))
    print(f"outbox: delivered {stats.delivered}, failed attempts {stats.failed_attempts}, "
          f"lost {stats.lost}")
    out = {"benchmark": "notify-aodh", "runs": len(rows), "instances": instances,
           "environment": environment(), "rows_s": rows,
           "added_first_s": added_first, "added_all_s": added_all}
    measured = {"bus_first_p99_s": pct(col["bus_first"], 99),
                "aodh_first_p99_s": pct(col["aodh_first"], 99),
                "aodh_all_p99_s": pct(col["aodh_all"], 99), "aodh_runs": len(rows)}
    out["measured"] = measured
    status = report(TARGETS_AODH, measured, out)
    write_json(args.json, out)
    return status


def one_failure(n, bus: Arrivals, hook, project_id: str, instances: int, run: int):
    """Emit one failure's events; the times at which each consumer held the
    tenant's first and all instance events, from the emit of host.failed."""
    incident = f"bench-{run}-{uuid.uuid4().hex[:6]}"
    host = "compute1"
    t0 = time.monotonic()
    n.emit(events.host_failed(host=host, reason="benchmark", incident_id=incident))
    n.emit(events.fence_start(host=host, driver="ipmi", incident_id=incident))
    n.emit(events.fence_end(host=host, driver="ipmi", incident_id=incident, duration=0.0))
    n.emit(events.recovery_start(host=host, incident_id=incident, evacuate=0, notify=instances))
    for _ in range(instances):
        n.emit(events.recovery_required(host=host, incident_id=incident,
                                        instance_id=str(uuid.uuid4()), project_id=project_id))
    n.emit(events.recovery_end(host=host, incident_id=incident, evacuated=0, failed=0,
                               notified=instances))
    got_bus = bus.wait(incident, instances, 60)

    def at_hook(h):
        times = [p.at for p in h.posts("bench")
                 if dict((t[0], t[2]) for t in p.event.get("traits", ())).get("incident_id")
                 == incident]
        return times if len(times) >= instances else None

    try:
        got_hook = hook.wait(at_hook, 60, f"{instances} events of {incident} at the webhook")
    except TimeoutError as e:
        print(f"run {run}: {e}", flush=True)
        return None
    if len(got_bus) < instances:
        print(f"run {run}: only {len(got_bus)} of {instances} events on the bus within 60 s")
        return None
    return {"bus_first": min(got_bus) - t0, "bus_all": max(got_bus) - t0,
            "aodh_first": min(got_hook) - t0, "aodh_all": max(got_hook) - t0}


if __name__ == "__main__":
    sys.exit(main())
