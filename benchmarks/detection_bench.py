"""Detection benchmark: fault -> FAILED on a real ZooKeeper, under load.

For each load (simulated agents: real ZooKeeper sessions, see
sim_agents.py) and each liveness design (``[agent] liveness``: ``session``,
the agent writes only on change and its session is its liveness;
``heartbeat``, today's data heartbeat every 0.5 s), a real
``instanceha-agent`` process with the same design is faulted again and
again (SIGKILL, SIGSTOP, hung main loop) and the time from the fault to the
controller's FAILED decision is measured on one monotonic clock (the
controller runs in this process: the real controller's step, with the
recovery actuator in dry-run over an in-memory Nova that lists one service
per simulated agent, default configuration). Then the load idles and every FAILED is counted as
false, with the steady-state costs: ZooKeeper transactions per second (the
server's zxid: every write, session creation and close adds one; a ping
none), watch events and reads per second at the controller, CPU of the
controller process, of ZooKeeper and of the load generator. Finally, leader
fail-over: SIGKILL of the leading ``instanceha-controller`` to the standby
logging its leadership.

Prints figures; asserts nothing about time (shared, noisy machines).

    python benchmarks/detection_bench.py [--agents 100,1000] [--designs session,heartbeat]
        [--rounds 10] [--idle-seconds 600] [--failover-rounds 5] [--tick-ms 500]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "tools"))

from harness import daemons, procs  # noqa: E402
from harness.zookeeper import ZooKeeperServer  # noqa: E402

from instanceha import coordination  # noqa: E402
from instanceha.compute.model import ComputeService  # noqa: E402
from instanceha.controller.recovery import ActuatorSettings, RecoveryActuator  # noqa: E402
from instanceha.controller.service import ControllerService, ControllerSettings  # noqa: E402
from instanceha.engine.model import DetectionPolicy, Phase  # noqa: E402
from instanceha.exceptions import CoordinationError as coordination_errors  # noqa: E402

HANG_AGENT = os.path.join(TOP, "tools", "harness", "hang_agent.py")
PER_PROCESS = 2500
CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (its threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def sim_prefix(i: int) -> str:
    """The name prefix of the load process that runs simulated agent ``i``
    (sim_agents.py appends the agent's index in that process, ``%05d``)."""
    return f"sim{i // PER_PROCESS}-"


class SimulatedNova:
    """Nova's services list, in memory: one enabled, up nova-compute per
    simulated agent. The benchmark measures detection; the controller's tick
    is the real one (the recovery actuator in dry-run decides every host that
    Nova knows), but no API is called and nothing is fenced. Victims have no
    service here: the actuator leaves them to the detector."""

    def __init__(self, count):
        self._services = [
            ComputeService(id=str(i), host=f"{sim_prefix(i)}{i % PER_PROCESS:05d}",
                           state="up", status="enabled", forced_down=False,
                           disabled_reason=None, zone="nova", updated_at=None)
            for i in range(count)]

    def services(self, host=None):
        return list(self._services)


class Controller:
    """The real controller's step (leadership upkeep, reconciler, executor,
    recovery actuator in dry-run over the simulated Nova, the leader's status
    publication) every 0.2 s (the default) in a thread."""

    def __init__(self, url, root, count, tick=0.2):
        self.coord = coordination.get_coordinator(url, session_timeout=2.0, root_path=root)
        self.drops = 0  # the controller's own connection to ZooKeeper lost
        self.coord.add_state_listener(self._on_state)
        self.actuator = RecoveryActuator(
            ActuatorSettings(name="bench", dry_run=True), fencer=None,
            nova=SimulatedNova(count), evacuator_factory=None)
        self.service = ControllerService(
            self.coord, ControllerSettings(name="bench", policy=DetectionPolicy(),
                                           tick_interval=tick, session_timeout=2.0),
            self.actuator, on_transition=self._on, nova_states=self.actuator.nova_up)
        self.service.start()
        self.rec = self.service.reconciler
        self.failed_at: dict[str, float] = {}
        self.false_failed: list[str] = []
        self.victims_false_failed: list[str] = []
        self.tick_ms: list[float] = []
        self.tick_cpu_ms: list[float] = []
        self.tick_errors = 0
        self.tick = tick
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _on_state(self, state):
        if state is not coordination.ConnectionState.CONNECTED:
            self.drops += 1

    def _on(self, t):
        if t.after.phase is Phase.FAILED:
            self.failed_at[t.host] = t.at
            if t.host.startswith("sim"):
                self.false_failed.append(t.host)

    def _run(self):
        while not self.stop.is_set():
            t0, c0 = time.monotonic(), time.thread_time()
            try:
                self.service.step()
            except coordination_errors:
                self.tick_errors += 1  # as the real run loop: logged there, retried next tick
            dt = time.monotonic() - t0
            self.tick_ms.append(dt * 1000)
            self.tick_cpu_ms.append((time.thread_time() - c0) * 1000)
            self.stop.wait(max(0.0, self.tick - dt))

    def phase(self, host):
        v = self.rec.views.get(host)
        return v.phase if v else None

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.actuator.close()
        self.coord.stop()


def all_healthy(ctl, n):
    views = ctl.rec.views
    sims = [v for h, v in views.items() if h.startswith("sim")]
    return len(sims) == n and all(v.phase is Phase.HEALTHY for v in sims)


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def agent_conf(work, url, root, name, liveness):
    sections = {
        "DEFAULT": {"host": name, "log_file": os.path.join(work, f"{name}.log")},
        "coordination": {"backend_url": url, "root_path": root},
        "agent": {"watched_processes": "init:/sbin/init", "health_check_interval": 0.1,
                  "liveness": liveness},
        "telemetry": {"enabled": "false"},
    }
    return daemons.write_conf(os.path.join(work, f"{name}.conf"), sections)


def one_fault(ctl, work, url, root, fault, i, liveness):
    name = f"victim-{fault}-{i}"
    conf = agent_conf(work, url, root, name, liveness)
    env = dict(os.environ)
    argv = [os.path.join(os.path.dirname(sys.executable), "instanceha-agent")]
    flag = os.path.join(work, f"{name}.hang")
    if fault == "hang":
        argv = [sys.executable, HANG_AGENT]
        env["INSTANCEHA_TEST_HANG_FILE"] = flag
    proc = subprocess.Popen(argv + ["--config-file", conf], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        procs.wait_for(lambda: ctl.phase(name) is Phase.HEALTHY, 30, f"{name} HEALTHY")
        time.sleep(1.0 + (i % 5) * 0.1)  # vary the fault's phase against the heartbeat
        if ctl.failed_at.pop(name, None) is not None:
            # FAILED while alive (a starved machine): a false FAILED, not a latency
            ctl.victims_false_failed.append(name)
            procs.wait_for(lambda: ctl.phase(name) is Phase.HEALTHY, 30, f"{name} HEALTHY")
            ctl.failed_at.pop(name, None)
        t0 = time.monotonic()
        if fault == "sigkill":
            proc.kill()
        elif fault == "sigstop":
            proc.send_signal(signal.SIGSTOP)
        else:
            open(flag, "w").close()
        procs.wait_for(lambda: name in ctl.failed_at, 30, f"{name} FAILED")
        return ctl.failed_at[name] - t0
    finally:
        if os.path.exists(flag):
            os.unlink(flag)
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait()
        forget(ctl, name)


def forget(ctl, name, tries=20):
    """Remove a victim from the registry; the controller's connection may be
    down for a moment under load (a ConnectionLoss is retried, not fatal)."""
    for _ in range(tries):
        try:
            ctl.coord.forget_host(name)
            return
        except coordination_errors as e:
            print(f"   (forgetting {name}: {e}; retrying)", flush=True)
            time.sleep(0.5)
    print(f"   ({name} left in the registry)", flush=True)


def start_load(url, root, count, work, liveness):
    loads = []
    for start in range(0, count, PER_PROCESS):
        n = min(PER_PROCESS, count - start)
        err = open(os.path.join(work, f"sim-{root.strip('/')}-{start}.err"), "w")
        p = subprocess.Popen(
            [sys.executable, os.path.join(TOP, "benchmarks", "sim_agents.py"), url, root,
             sim_prefix(start), str(n), "--liveness", liveness],
            stdout=subprocess.PIPE, stderr=err, text=True)
        loads.append(p)
        line = p.stdout.readline()  # one process at a time: ready before the next
        if not line.startswith("ready"):
            raise RuntimeError(f"simulated agents failed to start; see {err.name}")
    return loads


def failover(work, url, root, rounds):
    results = []
    for r in range(rounds):
        ctls = []
        for name in (f"ctl-a{r}", f"ctl-b{r}"):
            sections = {
                "DEFAULT": {"host": name, "log_file": os.path.join(work, f"{name}.log")},
                "coordination": {"backend_url": url, "root_path": root + "-fo"},
                "telemetry": {"enabled": "false"},
            }
            d = daemons.Daemon.instanceha("instanceha-controller", work, name, sections)
            ctls.append(d.start())
        rx = "leadership gained by {}"

        def leader(ctls=ctls, rx=rx):
            for d in ctls:
                if re.search(rx.format(d.name), d.read_log()):
                    return d
            return None

        lead = procs.wait_for(leader, 30, "a leader")
        other = ctls[1] if lead is ctls[0] else ctls[0]
        time.sleep(1.0)
        killed_at = datetime.datetime.now()
        lead.kill()
        m = other.wait_log(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \d+ WARNING \S+ \[-\] "
                           + rx.format(other.name), timeout=30)
        gained = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")
        results.append((gained - killed_at).total_seconds())
        for d in ctls:
            d.terminate()
    return results


def measure(n, liveness, args, zk, work):
    """One load, one design: faults, then the idle window and its costs."""
    root = f"/bench-{n}-{liveness}"
    print(f"== {n} simulated agents, liveness = {liveness}: starting load", flush=True)
    started = time.monotonic()
    loads = start_load(zk.url, root, n, work, liveness)
    ctl = Controller(zk.url, root, n)
    # polled once a second: a loop over every view holds the GIL from kazoo's thread
    procs.wait_for(lambda: all_healthy(ctl, n), 120 + n / 20,
                   f"{n} simulated agents HEALTHY", interval=1.0)
    print(f"   {n} joined and HEALTHY in {time.monotonic() - started:.0f} s", flush=True)
    figures = {}
    for fault in ("sigkill", "sigstop", "hang") if args.rounds else ():
        before = len(ctl.victims_false_failed)
        lat = [one_fault(ctl, work, zk.url, root, fault, i, liveness)
               for i in range(args.rounds)]
        figures[fault] = {"p50": pct(lat, 50), "p95": pct(lat, 95),
                          "min": min(lat), "max": max(lat), "n": len(lat),
                          "live_victim_failed_before_the_fault":
                              len(ctl.victims_false_failed) - before}
        print(f"   {fault:8s} -> FAILED: p50 {figures[fault]['p50']:.2f} s  "
              f"p95 {figures[fault]['p95']:.2f} s  (min {min(lat):.2f}, "
              f"max {max(lat):.2f}, n={len(lat)}; target p50 <= 2.5, p95 <= 3.5)",
              flush=True)
    ctl.tick_ms.clear()
    ctl.tick_cpu_ms.clear()
    errors0, drops0 = ctl.tick_errors, ctl.drops
    false_before = len(ctl.false_failed)
    print(f"   idle {args.idle_seconds:.0f} s ...", flush=True)
    pids = {"zookeeper": zk.proc.pid, "load": [lp.pid for lp in loads]}
    u0 = resource.getrusage(resource.RUSAGE_SELF)
    zk0, load0 = cpu_seconds(pids["zookeeper"]), sum(cpu_seconds(q) for q in pids["load"])
    zx0, st0 = zk.zxid(), dict(ctl.coord.stats())
    w0 = time.monotonic()
    time.sleep(args.idle_seconds)
    elapsed = time.monotonic() - w0
    u1 = resource.getrusage(resource.RUSAGE_SELF)
    zk1, load1 = cpu_seconds(pids["zookeeper"]), sum(cpu_seconds(q) for q in pids["load"])
    zx1, st1 = zk.zxid(), dict(ctl.coord.stats())
    # the whole controller: tick thread, kazoo's reader and watch callbacks
    cpu_share = ((u1.ru_utime + u1.ru_stime) - (u0.ru_utime + u0.ru_stime)) / elapsed * 100
    false_failed = len(ctl.false_failed) - false_before
    ticks = list(ctl.tick_ms)
    tick_cpu = list(ctl.tick_cpu_ms)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def rate(key):
        return (st1.get(key, 0) - st0.get(key, 0)) / elapsed

    figures["idle"] = {
        "seconds": round(elapsed, 1), "false_failed": false_failed,
        "tick_ms_p50": pct(ticks, 50), "tick_ms_p95": pct(ticks, 95),
        "tick_ms_p99": pct(ticks, 99), "tick_ms_max": max(ticks) if ticks else float("nan"),
        "ticks_failed": ctl.tick_errors - errors0,
        "ticks": len(ticks), "max_rss_mb_bench_process": rss_mb,
        "tick_cpu_ms_p50": pct(tick_cpu, 50), "tick_cpu_ms_p95": pct(tick_cpu, 95),
        "controller_cpu_percent_of_one_core": cpu_share,
        "zookeeper_transactions_per_s": (zx1 - zx0) / elapsed,
        "zookeeper_cpu_percent_of_one_core": (zk1 - zk0) / elapsed * 100,
        "zookeeper_rss_mb": proc_rss_mb(pids["zookeeper"]),
        "load_generator_cpu_percent_of_one_core": (load1 - load0) / elapsed * 100,
        "watch_events_per_s": rate("watch_events"),
        "controller_reads_per_s": rate("reads"),
        "consistency_repairs": st1.get("repairs", 0) - st0.get("repairs", 0),
        "controller_connection_losses": ctl.drops - drops0,
        "controller_connection_losses_whole_run": ctl.drops,
        "controller_full_rereads": st1.get("resyncs", 0) - st0.get("resyncs", 0),
    }
    i = figures["idle"]
    print(f"   idle {elapsed:.0f} s: false FAILED {false_failed} (target 0); controller tick "
          f"p50 {i['tick_ms_p50']:.1f} ms p95 {i['tick_ms_p95']:.1f} ms p99 "
          f"{i['tick_ms_p99']:.1f} ms max {i['tick_ms_max']:.0f} ms over {len(ticks)} "
          f"ticks, {i['ticks_failed']} failed (CPU per tick p50 {i['tick_cpu_ms_p50']:.1f} ms p95 "
          f"{i['tick_cpu_ms_p95']:.1f} ms); controller process CPU {cpu_share:.0f}% of "
          f"one core; max RSS of this process {rss_mb:.0f} MB", flush=True)
    print(f"   steady state: ZooKeeper {i['zookeeper_transactions_per_s']:.1f} transactions/s "
          f"({i['zookeeper_transactions_per_s'] / n * 100:.2f} per 100 hosts; target <= 1), "
          f"ZooKeeper CPU {i['zookeeper_cpu_percent_of_one_core']:.0f}% of a core, RSS "
          f"{i['zookeeper_rss_mb']:.0f} MB; controller "
          f"{i['watch_events_per_s']:.1f} watch events/s, {i['controller_reads_per_s']:.1f} "
          f"reads/s (consistency read), {i['consistency_repairs']} repairs; load generator "
          f"CPU {i['load_generator_cpu_percent_of_one_core']:.0f}% of a core", flush=True)
    print(f"   the controller's own ZooKeeper connection: lost {i['controller_connection_losses']}"
          f" times idle ({i['controller_connection_losses_whole_run']} in the whole run), "
          f"{i['controller_full_rereads']} full re-reads idle", flush=True)
    closer = threading.Thread(target=ctl.close, daemon=True)
    closer.start()
    closer.join(30)
    if closer.is_alive():
        print("   (the controller's kazoo client did not stop within 30 s; left behind)",
              flush=True)
    rejoins = 0
    for lp in loads:
        lp.send_signal(signal.SIGTERM)
    for lp in loads:
        try:
            out, _ = lp.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            lp.kill()
            out, _ = lp.communicate()
        rejoins += sum(int(x) for x in re.findall(r"rejoins=(\d+)", out or ""))
    i["simulated_sessions_lost_and_rejoined"] = rejoins
    print(f"   simulated sessions lost and re-joined over the whole run: {rejoins}", flush=True)
    return figures


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", default="100,1000")
    p.add_argument("--designs", default="session",
                   help="comma-separated [agent] liveness values, each measured in turn "
                        "at each load (session, heartbeat)")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--idle-seconds", type=float, default=600)
    p.add_argument("--failover-rounds", type=int, default=5)
    p.add_argument("--tick-ms", type=int, default=500,
                   help="ZooKeeper tickTime (a 2 s session needs <= 1000)")
    p.add_argument("--zk-heap-mb", type=int, default=256,
                   help="ZooKeeper's Java heap (-Xmx), in MB")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    work = tempfile.mkdtemp(prefix="ih-detect-bench-")
    zk = ZooKeeperServer(os.path.join(work, "zk"), tick_ms=args.tick_ms,
                         heap_mb=args.zk_heap_mb).start()
    report = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
              "zookeeper_tick_ms": args.tick_ms, "zookeeper_heap_mb": args.zk_heap_mb,
              "date": datetime.date.today().isoformat(),
              "argv": sys.argv[1:], "loads": {}}
    try:
        for n in [int(x) for x in args.agents.split(",")]:
            for liveness in args.designs.split(","):
                report["loads"][f"{n}-{liveness}"] = measure(n, liveness, args, zk, work)
                if args.json:
                    with open(args.json, "w") as f:
                        json.dump(report, f, indent=2)
        if args.failover_rounds:
            fo = failover(work, zk.url, "/bench-failover", args.failover_rounds)
            report["failover"] = {"p50": pct(fo, 50), "max": max(fo), "n": len(fo)}
            print(f"== leader fail-over (SIGKILL -> standby leads): p50 {pct(fo, 50):.2f} s, "
                  f"max {max(fo):.2f} s, n={len(fo)} (target <= 3 s)", flush=True)
    finally:
        zk.stop()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
