#!/usr/bin/env python3
"""Notification latency: from "fence confirmed" to the consumer holding the
"recovery required" events of every notify-only instance on the failed host.

    .venv/bin/python benchmarks/notify_bench.py [--runs 30] [--instances 50]
                                                [--consumer inprocess|listen]

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

Prints p50/p95/p99 over the runs. Target (OPNFV Doctor, fault to consumer):
p99 under 1 s. The figures are printed, never asserted.
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

from instanceha.conf import default as conf_default  # noqa: E402
from instanceha.conf import notifications as conf_notifications  # noqa: E402
from instanceha.notify import events, listener, notifier  # noqa: E402

TARGET_P99 = 1.0


def write_conf(path: str, url: str, topic: str) -> str:
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(f"[DEFAULT]\nhost = bench-ctl\ntransport_url = {url}\n"
                f"control_exchange = ih-bench-{topic}\n"
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--instances", type=int, default=50)
    ap.add_argument("--consumer", choices=("inprocess", "listen"), default="inprocess")
    ap.add_argument("--warmup", type=int, default=2, help="runs not counted")
    args = ap.parse_args(argv)

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

    def line(name, values):
        return (f"{name:<44} p50 {pct(values, 50) * 1000:7.1f} ms  p95 "
                f"{pct(values, 95) * 1000:7.1f} ms  p99 {pct(values, 99) * 1000:7.1f} ms  "
                f"max {max(values) * 1000:7.1f} ms")

    print(f"\n{args.runs} runs (+{args.warmup} warm-up), {args.instances} notify-only instances,"
          f" consumer {args.consumer}; {platform.node()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}, Python {platform.python_version()}")
    print(line("controller: emit() of all 51 events", emits))
    print(line("fence confirmed -> first instance event", firsts))
    print(line(f"fence confirmed -> all {args.instances} instance events", totals))
    p99 = pct(totals, 99)
    print(f"target (OPNFV Doctor): p99 < {TARGET_P99:.0f} s: "
          f"{'met' if p99 < TARGET_P99 else 'NOT met'} ({p99 * 1000:.1f} ms)")
    print(f"outbox: delivered {stats.delivered}, failed attempts {stats.failed_attempts}, "
          f"lost {stats.lost}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
