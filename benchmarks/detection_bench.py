"""Detection benchmark: fault -> FAILED on a real ZooKeeper, at scale, secure or not, loaded.

One ZooKeeper (TLS on its secureClientPort, digest authentication and the
least-privilege ACLs, as the daemons run by default; its plain port for the
insecure cells) serves every *cell* of a run, one after the other:
``--agents`` x ``--security`` (``on``: TLS, credentials derived from the
controllers' key, ACLs; ``off``: the daemons' ``[coordination] insecure =
true``, plain port, open ACLs) x ``--loads`` (``idle``; ``loaded``: a foreign
CPU load, Debian's ``stress-ng`` with 3 CPU workers per core, started before
the agents join and stopped when the cell ends, its run queue sampled).

In each cell:

* the load: simulated agents (``sim_agents.py``), each a real ZooKeeper
  session that joins as ``instanceha-agent`` does, its slot provisioned
  beforehand by a controller identity; liveness is the session (a ping every
  T/3, no write);
* the controller: the real controller's step (leadership upkeep,
  reconciler, executor, the recovery actuator in dry-run over an in-memory
  Nova listing one nova-compute per simulated agent, the leader's status
  publication) every 0.2 s in this process, connected to ZooKeeper through a
  TCP proxy (``tools/harness/tcpproxy.py``) that the cell can cut;
* faults: a real ``instanceha-agent`` is SIGKILLed, SIGSTOPped, or its main
  loop hung, ``--rounds`` times each; the time from the fault to the
  controller's FAILED decision on one monotonic clock;
* idle: ``--idle-seconds`` of nothing; every FAILED is false; the costs:
  ZooKeeper transactions/s (its zxid: every write, session creation and
  close; a ping adds none), CPU of ZooKeeper, of the controller (this process
  less the proxy's thread), of the load generators;
* connection losses: ``--cuts`` times, the proxy black-holes the controller's
  link for 1-3 s (``--cut-mode``), then restores it; measured from the
  restore: the controller connected again, and the first snapshot whose lists
  match ZooKeeper's (the live hosts and the provisioned slots, read by a
  separate client), with the view's counters (``reads``, ``rearm_reads``,
  ``resyncs``) spent on the way; every FAILED meanwhile is false.

Targets are declared as data per cell (``CELL_TARGETS``) and judged by
``targets.report``; when security is measured on and off at the same size
and load, the ratios (on / off) are printed and stored. Nothing is asserted
in tests: shared, noisy machines.

    python benchmarks/detection_bench.py [--agents 1000] [--security on,off]
        [--loads idle] [--rounds 10] [--idle-seconds 300] [--cuts 0]
        [--cut-mode blackhole] [--failover-rounds 0] [--zk-heap-mb 1024] [--json FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import re
import resource
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "tools"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import targets  # noqa: E402  (benchmarks/targets.py, beside this file)
from harness import daemons, procs  # noqa: E402
from harness.tcpproxy import TcpProxy  # noqa: E402
from harness.zookeeper import ZooKeeperServer, coordination_section, make_coordinator  # noqa: E402
from targets import pct  # noqa: E402

from instanceha.compute.model import ComputeService  # noqa: E402
from instanceha.controller.recovery import ActuatorSettings, RecoveryActuator  # noqa: E402
from instanceha.controller.service import ControllerService, ControllerSettings  # noqa: E402
from instanceha.coordination import ConnectionState  # noqa: E402
from instanceha.coordination import zk_layout as L  # noqa: E402
from instanceha.engine.model import DetectionPolicy, Phase  # noqa: E402
from instanceha.exceptions import CoordinationError  # noqa: E402

HANG_AGENT = os.path.join(TOP, "tools", "harness", "hang_agent.py")
PER_PROCESS = 2500
JOIN_DEADLINE_S, JOIN_S_PER_AGENT = 60.0, 0.1
"""A generator not ready in 60 s + 0.1 s per agent (310 s for 2500; 1000
secure agents joined in 65 s at load 30) means this machine does not hold
the size."""
CLK_TCK = os.sysconf("SC_CLK_TCK")
FAULTS = ("sigkill", "sigstop", "hang")
SESSION_TIMEOUT = 2.0

# -- targets, as data: figure -> (op, limit when idle, limit when loaded, unit, what) --------
# None: the figure has no target in that load. A cell's targets are named
# "<cell>.<figure>" (e.g. "10000-secure-loaded.sigkill_p95_s").
CELL_TARGETS: dict[str, tuple[str, float | None, float | None, str, str]] = {
    "false_failed": ("==", 0, 0, "", "FAILED decisions about live hosts over the whole "
                     "cell (joins, faults, idle window, connection losses)"),
    **{f"{f}_p95_s": ("<=", 3.0, 4.0, "s", f"{f} of a real agent -> FAILED, p95 "
                      "(issue 26.4: 3 s idle, 4 s under load)") for f in FAULTS},
    "view_current_after_loss_max_s": (
        "<=", 0.5, 0.5, "s", "after each connection loss of the controller: from the link's "
        "restore to the first snapshot whose lists match ZooKeeper's (issue 26.4)"),
    "controller_cpu_percent": ("<=", 10.0, None, "%", "the controller (this process less the "
                               "proxy's thread) over the idle window, % of one core"),
}


def cell_targets(cell: str, loaded: bool, measured: dict) -> list[targets.Target]:
    """The targets of one cell that apply to what it measured."""
    out = []
    for figure, (op, idle, load, unit, what) in CELL_TARGETS.items():
        limit = load if loaded else idle
        if limit is None or figure not in measured:
            continue
        out.append(targets.Target(f"{cell}.{figure}", limit, op, unit, what))
    return out


# -- measuring ----------------------------------------------------------------------------
def proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU of a process so far (its threads included), or of one
    of its threads."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def sim_prefix(i: int) -> str:
    """The name prefix of the load process that runs simulated agent ``i``
    (sim_agents.py appends the agent's index in that process, ``%05d``)."""
    return f"sim{i // PER_PROCESS}-"


def sim_name(i: int) -> str:
    return f"{sim_prefix(i)}{i % PER_PROCESS:05d}"


class RunQueue:
    """Samples the machine's runnable tasks (``procs_running`` of /proc/stat)
    every ``interval`` seconds in a thread: what a foreign load keeps it at."""

    def __init__(self, interval: float = 0.5) -> None:
        self.samples: list[int] = []
        self.loadavg: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="runqueue")
        self.interval = interval

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with open("/proc/stat") as f:
                for line in f:
                    if line.startswith("procs_running"):
                        self.samples.append(int(line.split()[1]))
            with open("/proc/loadavg") as f:
                self.loadavg.append(float(f.read().split()[0]))

    def start(self) -> RunQueue:
        self._thread.start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(5)
        s = self.samples
        return {"runnable_mean": sum(s) / len(s) if s else None,
                "runnable_p10": pct(s, 10), "runnable_p50": pct(s, 50),
                "loadavg_1min_min": min(self.loadavg, default=None),
                "loadavg_1min_max": max(self.loadavg, default=None),
                "samples": len(s)}


class SimulatedNova:
    """Nova's services list, in memory: one enabled, up nova-compute per
    simulated agent. The benchmark measures detection; the controller's tick
    is the real one (the recovery actuator in dry-run decides every host that
    Nova knows), but no API is called and nothing is fenced. Victims have no
    service here: the actuator leaves them to the detector."""

    def __init__(self, count):
        self._services = [
            ComputeService(id=str(i), host=sim_name(i), state="up", status="enabled",
                           forced_down=False, disabled_reason=None, zone="nova",
                           updated_at=None)
            for i in range(count)]

    def services(self, host=None):
        return list(self._services)


class Controller:
    """The real controller's step (leadership upkeep, reconciler, executor,
    recovery actuator in dry-run over the simulated Nova, the leader's status
    publication) every 0.2 s (the default) in a thread, on ``coord``."""

    def __init__(self, coord, count, tick=0.2):
        self.coord = coord
        self.drops = 0  # the controller's own connection to ZooKeeper lost
        self.connected_at: list[float] = []
        self.coord.add_state_listener(self._on_state)
        self.on_snapshot = None
        real_snapshot = coord.snapshot

        def snapshot():
            t0 = time.monotonic()
            snap = real_snapshot()
            hook = self.on_snapshot
            if hook is not None:
                hook(snap, t0)
            return snap

        coord.snapshot = snapshot  # the reconciler's one way in: observed, not changed
        self.actuator = RecoveryActuator(
            ActuatorSettings(name="bench", dry_run=True), fencer=None,
            nova=SimulatedNova(count), evacuator_factory=None)
        self.service = ControllerService(
            self.coord, ControllerSettings(name="bench", policy=DetectionPolicy(),
                                           tick_interval=tick, session_timeout=SESSION_TIMEOUT),
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
        self.thread = threading.Thread(target=self._run, daemon=True, name="controller")
        self.thread.start()

    def _on_state(self, state):
        if state is ConnectionState.CONNECTED:
            self.connected_at.append(time.monotonic())
        else:
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
            except CoordinationError:
                self.tick_errors += 1  # as the real run loop: logged there, retried next tick
            dt = time.monotonic() - t0
            self.tick_ms.append(dt * 1000)
            self.tick_cpu_ms.append((time.thread_time() - c0) * 1000)
            self.service.pause(self.tick - dt)  # as the real loop: at once on a reconnection

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


class Cell:
    """One size, one security mode, one load: where its parts are."""

    def __init__(self, zk: ZooKeeperServer, n: int, secure: bool, loaded: bool, work: str):
        self.zk, self.n, self.secure, self.loaded, self.work = zk, n, secure, loaded, work
        self.name = f"{n}-{'secure' if secure else 'insecure'}-{'loaded' if loaded else 'idle'}"
        self.root = f"/bench-{self.name}"
        # the agents' way in: TLS port with credentials, or the plain port, open
        self.url = zk.url if secure else zk.plain_url
        self.upstream = zk.client_port if secure else zk.port

    def coordinator(self, role, host=None, url=None, **kwargs):
        kwargs.setdefault("session_timeout", SESSION_TIMEOUT)
        kwargs.setdefault("root_path", self.root)
        if self.secure:
            return self.zk.coordinator(role, host, url=url, **kwargs)
        return make_coordinator(url or self.url, None, role, host, **kwargs)

    def section(self, role, host=None):
        if self.secure:
            return self.zk.section(role, host, root_path=self.root)
        return coordination_section(self.url, None, role, host, root_path=self.root)


# -- faults --------------------------------------------------------------------------------
def agent_conf(cell: Cell, name: str) -> str:
    sections = {
        "DEFAULT": {"host": name, "log_file": os.path.join(cell.work, f"{name}.log")},
        "coordination": cell.section("agent", name),
        "agent": {"watched_processes": "init:/sbin/init", "health_check_interval": 0.1},
        "telemetry": {"enabled": "false"},
    }
    return daemons.write_conf(os.path.join(cell.work, f"{name}.conf"), sections)


def one_fault(ctl, cell: Cell, fault, i):
    name = f"victim-{fault}-{i}"
    if cell.secure:
        ctl.coord.provision_host(name)  # as the leader does for its inventory's hosts
    conf = agent_conf(cell, name)
    env = dict(os.environ)
    argv = [os.path.join(os.path.dirname(sys.executable), "instanceha-agent")]
    flag = os.path.join(cell.work, f"{name}.hang")
    if fault == "hang":
        argv = [sys.executable, HANG_AGENT]
        env["INSTANCEHA_TEST_HANG_FILE"] = flag
    proc = subprocess.Popen(argv + ["--config-file", conf], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        procs.wait_for(lambda: ctl.phase(name) is Phase.HEALTHY, 60, f"{name} HEALTHY")
        time.sleep(1.0 + (i % 5) * 0.1)  # vary the fault's phase against the pings
        if ctl.failed_at.pop(name, None) is not None:
            # FAILED while alive (a starved machine): a false FAILED, not a latency
            ctl.victims_false_failed.append(name)
            procs.wait_for(lambda: ctl.phase(name) is Phase.HEALTHY, 60, f"{name} HEALTHY")
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
        except CoordinationError as e:
            print(f"   (forgetting {name}: {e}; retrying)", flush=True)
            time.sleep(0.5)
    print(f"   ({name} left in the registry)", flush=True)


# -- the load ------------------------------------------------------------------------------
def start_load(cell: Cell):
    """The simulated agents, one generator at a time, each ready before the next.

    A size the machine does not hold is stopped, not waited for: when the
    generators have lost more sessions while joining than the cell has agents
    (sessions expiring faster than they join), or a generator is not ready in
    ``JOIN_DEADLINE_S`` plus ``JOIN_S_PER_AGENT`` per agent."""
    loads, errs = [], []
    try:
        for start in range(0, cell.n, PER_PROCESS):
            n = min(PER_PROCESS, cell.n - start)
            err = open(os.path.join(cell.work, f"sim-{cell.name}-{start}.err"), "w")
            errs.append(err.name)
            mode = ["--security-dir", cell.zk.security.dir] if cell.secure else ["--insecure"]
            p = subprocess.Popen(
                [sys.executable, os.path.join(TOP, "benchmarks", "sim_agents.py"), cell.url,
                 cell.root, sim_prefix(start), str(n), "--provision",
                 "--session-timeout", str(SESSION_TIMEOUT)] + mode,
                stdout=subprocess.PIPE, stderr=err, text=True)
            loads.append(p)
            line = _ready_line(p, cell, errs, JOIN_DEADLINE_S + n * JOIN_S_PER_AGENT)
            if not line.startswith("ready"):
                raise RuntimeError(f"simulated agents failed to start; see {err.name}")
            print(f"   {sim_prefix(start)}*: {line.strip()}", flush=True)
    except BaseException:
        stop_load(loads)
        raise
    return loads


def _ready_line(p, cell: Cell, errs: list[str], deadline_s: float) -> str:
    t0 = time.monotonic()
    while True:
        if select.select([p.stdout], [], [], 1.0)[0]:
            return p.stdout.readline()
        lost = sum(_lines_with(e, "session lost") for e in errs)
        waited = time.monotonic() - t0
        if lost > cell.n or waited > deadline_s:
            expired = _lines_with(cell.zk.log, "Expiring session")
            raise RuntimeError(
                f"not held: {lost} simulated sessions lost while joining (the cell has "
                f"{cell.n}), a generator not ready after {waited:.0f} s; ZooKeeper expired "
                f"{expired} sessions so far; load average {os.getloadavg()[0]:.1f}; see "
                f"{errs[-1]} and {cell.zk.log}")


def _lines_with(path: str, text: str) -> int:
    try:
        with open(path, errors="replace") as f:
            return sum(1 for line in f if text in line)
    except OSError:
        return 0


def stop_load(loads) -> int:
    rejoins = 0
    for lp in loads:
        if lp.poll() is None:
            lp.send_signal(signal.SIGTERM)
    for lp in loads:
        try:
            out, _ = lp.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            lp.kill()
            out, _ = lp.communicate()
        rejoins += sum(int(x) for x in re.findall(r"rejoins=(\d+)", out or ""))
    return rejoins


def start_stress() -> subprocess.Popen:
    workers = 3 * (os.cpu_count() or 1)
    return subprocess.Popen(["stress-ng", "--cpu", str(workers), "--timeout", "0", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def stop_stress(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # stress-ng's workers are its children
    except ProcessLookupError:
        pass
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# -- connection losses ----------------------------------------------------------------------
def zookeeper_lists(observer, root: str) -> tuple[frozenset[str], frozenset[str]]:
    """What ZooKeeper holds: the hosts with a live entry, the provisioned slots."""
    live = observer.client.get_children(f"{root}/{L.LIVE}")
    hosts = frozenset(p[0] for p in map(L.parse_index, live) if p is not None)
    slots = frozenset(observer.client.get_children(f"{root}/{L.HOSTS}"))
    return hosts, slots


def one_cut(ctl, proxy, observer, cell: Cell, seconds: float, mode: str) -> dict:
    live, slots = zookeeper_lists(observer, cell.root)
    stats0 = dict(ctl.coord.stats())
    drops0 = ctl.drops
    (proxy.blackhole if mode == "blackhole" else proxy.reset)()
    time.sleep(seconds)
    seen: dict = {}
    restored = time.monotonic()

    def on_snapshot(snap, began):
        if snap.taken_at < restored or "current" in seen:
            return
        if (snap.watching_since is not None and snap.watching_since >= restored
                and frozenset(snap.members) == live and snap.provisioned == slots):
            seen["current"] = snap.taken_at
            seen["began"] = began  # the snapshot (the view's refresh) that made it current
            seen["stats"] = dict(ctl.coord.stats())

    ctl.on_snapshot = on_snapshot
    proxy.restore()
    try:
        procs.wait_for(lambda: "current" in seen, 60, "the view current after the cut",
                       interval=0.05)
    finally:
        ctl.on_snapshot = None
    # everything the view re-armed behind (the capabilities' data watches)
    procs.wait_for(lambda: ctl.coord.stats().get("pending", 0) == 0, 60,
                   "the capabilities re-armed", interval=0.1)
    rearmed = time.monotonic()
    stats1, after = seen["stats"], dict(ctl.coord.stats())
    reconnected = [t for t in ctl.connected_at if t >= restored - 0.001]

    def delta(key, s1=stats1):
        return s1.get(key, 0) - stats0.get(key, 0)

    return {
        "mode": mode, "seconds": round(seconds, 2),
        "noticed": ctl.drops > drops0,
        "restore_to_connected_s": (reconnected[0] - restored) if reconnected else None,
        "restore_to_view_current_s": seen["current"] - restored,
        "connected_to_view_current_s": (seen["current"] - reconnected[0]) if reconnected
        else None,
        "refresh_s": seen["current"] - seen["began"],
        "restore_to_capabilities_rearmed_s": rearmed - restored,
        "reads_until_current": delta("reads"), "rearm_reads_until_current":
            delta("rearm_reads"), "resyncs_until_current": delta("resyncs"),
        "reads_until_rearmed": delta("reads", after) + delta("rearm_reads", after),
        "live_hosts": len(live), "slots": len(slots),
    }


# -- one cell ------------------------------------------------------------------------------
def measure(cell: Cell, args) -> dict:
    print(f"== {cell.name}: {cell.n} simulated agents, security "
          f"{'on (TLS, digest auth, ACLs)' if cell.secure else 'off (insecure = true)'}, "
          f"{'under stress-ng' if cell.loaded else 'no foreign load'}; load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    figures: dict = {"agents": cell.n, "secure": cell.secure, "loaded": cell.loaded,
                     "loadavg_at_start": os.getloadavg()[0]}
    stress = start_stress() if cell.loaded else None
    runq = RunQueue().start()
    # the controller's link goes through a proxy only when the cell cuts it
    proxy = TcpProxy("127.0.0.1", cell.upstream).start() if args.cuts else None
    loads, ctl, observer = [], None, None
    started = time.monotonic()
    try:
        extra = {} if args.controller_reconnect_max_delay is None else {
            "reconnect_max_delay": args.controller_reconnect_max_delay}
        ctl = Controller(cell.coordinator(
            "controller", url=f"zookeeper://{proxy.address}" if proxy is not None else None,
            **extra), cell.n)
        zk0, me0 = cpu_seconds(cell.zk.proc.pid), cpu_seconds(os.getpid())
        loads = start_load(cell)
        # polled once a second: a loop over every view holds the GIL from kazoo's thread
        procs.wait_for(lambda: all_healthy(ctl, cell.n), 180 + cell.n / 20,
                       f"{cell.n} simulated agents HEALTHY", interval=1.0)
        figures["joined_and_healthy_s"] = round(time.monotonic() - started, 1)
        # what joining cost: ZooKeeper's CPU (TLS handshakes, sessions, creates) and
        # the load generators' (their whole life so far: the joins)
        figures["join_cpu_s"] = {
            "zookeeper": cpu_seconds(cell.zk.proc.pid) - zk0,
            "load_generators": sum(cpu_seconds(lp.pid) for lp in loads),
            "controller_process": cpu_seconds(os.getpid()) - me0}
        j = figures["join_cpu_s"]
        print(f"   {cell.n} joined and HEALTHY in {figures['joined_and_healthy_s']:.0f} s; CPU "
              f"spent: ZooKeeper {j['zookeeper']:.1f} s ({j['zookeeper'] / cell.n * 1000:.2f} ms "
              f"per agent), load generators {j['load_generators']:.1f} s, controller "
              f"{j['controller_process']:.1f} s", flush=True)
        for fault in FAULTS if args.rounds else ():
            before = len(ctl.victims_false_failed)
            lat = [one_fault(ctl, cell, fault, i) for i in range(args.rounds)]
            f = figures[fault] = {"p50": pct(lat, 50), "p95": pct(lat, 95), "min": min(lat),
                                  "max": max(lat), "n": len(lat), "all": lat,
                                  "live_victim_failed_before_the_fault":
                                      len(ctl.victims_false_failed) - before}
            print(f"   {fault:8s} -> FAILED: p50 {f['p50']:.2f} s  p95 {f['p95']:.2f} s  "
                  f"(min {f['min']:.2f}, max {f['max']:.2f}, n={f['n']})", flush=True)
        if args.idle_seconds:
            figures["idle"] = idle_window(ctl, cell, loads, proxy, args.idle_seconds)
        if args.cuts:
            observer = cell.coordinator("controller")
            observer.start()
            rng = random.Random(args.seed)
            cuts = []
            for k in range(args.cuts):
                mode = args.cut_mode if args.cut_mode != "alternate" else \
                    ("blackhole", "reset")[k % 2]
                c = one_cut(ctl, proxy, observer, cell, rng.uniform(1.0, 3.0), mode)
                cuts.append(c)
                print(f"   cut {k + 1} ({c['mode']}, {c['seconds']:.1f} s): connected again "
                      f"{_s(c['restore_to_connected_s'])} after the restore, view current "
                      f"{c['restore_to_view_current_s']:.3f} s after it (the refresh that "
                      f"made it current took {c['refresh_s']:.3f} s; "
                      f"{c['reads_until_current']} reads, {c['rearm_reads_until_current']} "
                      f"re-arm reads, {c['resyncs_until_current']} resync), capabilities "
                      f"re-armed at {c['restore_to_capabilities_rearmed_s']:.2f} s", flush=True)
                time.sleep(3.0)  # the guard and the views settle between two cuts
            figures["cuts"] = cuts
            current = [c["restore_to_view_current_s"] for c in cuts]
            figures["view_current_after_loss"] = {
                "max": max(current), "p50": pct(current, 50), "n": len(current),
                "connected_to_current_max": max(
                    (c["connected_to_view_current_s"] for c in cuts
                     if c["connected_to_view_current_s"] is not None), default=None)}
        figures["false_failed"] = len(ctl.false_failed) + len(ctl.victims_false_failed)
        figures["false_failed_hosts"] = sorted(set(ctl.false_failed))[:20]
        figures["controller_connection_losses_whole_cell"] = ctl.drops
    finally:
        if observer is not None:
            observer.stop()
        if ctl is not None:
            closer = threading.Thread(target=ctl.close, daemon=True)
            closer.start()
            closer.join(30)
        figures["simulated_sessions_lost_and_rejoined"] = stop_load(loads)
        if proxy is not None:
            proxy.stop()
        figures["run_queue"] = runq.stop()
        stop_stress(stress)
    rq = figures["run_queue"]
    print(f"   false FAILED over the cell: {figures['false_failed']}; simulated sessions lost "
          f"and re-joined: {figures['simulated_sessions_lost_and_rejoined']}; run queue mean "
          f"{_n(rq['runnable_mean'])} runnable (p10 {_n(rq['runnable_p10'])}), load average "
          f"{_n(rq['loadavg_1min_min'])}-{_n(rq['loadavg_1min_max'])}", flush=True)
    return figures


def _s(v):
    return "-" if v is None else f"{v:.3f} s"


def _n(v):
    return "-" if v is None else f"{v:.1f}"


def idle_window(ctl, cell: Cell, loads, proxy, seconds) -> dict:
    ctl.tick_ms.clear()
    ctl.tick_cpu_ms.clear()
    errors0, drops0 = ctl.tick_errors, ctl.drops
    false_before = len(ctl.false_failed)
    print(f"   idle {seconds:.0f} s ...", flush=True)
    zk_pid, load_pids = cell.zk.proc.pid, [lp.pid for lp in loads]
    proxy_tid = proxy._thread.native_id if proxy is not None else None
    me = os.getpid()
    u0, px0 = cpu_seconds(me), cpu_seconds(me, proxy_tid) if proxy_tid else 0.0
    zk0, load0 = cpu_seconds(zk_pid), sum(cpu_seconds(q) for q in load_pids)
    zx0, st0 = cell.zk.zxid(), dict(ctl.coord.stats())
    w0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - w0
    u1, px1 = cpu_seconds(me), cpu_seconds(me, proxy_tid) if proxy_tid else 0.0
    zk1, load1 = cpu_seconds(zk_pid), sum(cpu_seconds(q) for q in load_pids)
    zx1, st1 = cell.zk.zxid(), dict(ctl.coord.stats())
    ticks, tick_cpu = list(ctl.tick_ms), list(ctl.tick_cpu_ms)

    def rate(key):
        return (st1.get(key, 0) - st0.get(key, 0)) / elapsed

    i = {
        "seconds": round(elapsed, 1), "false_failed": len(ctl.false_failed) - false_before,
        "tick_ms_p50": pct(ticks, 50), "tick_ms_p95": pct(ticks, 95),
        "tick_ms_p99": pct(ticks, 99), "tick_ms_max": max(ticks, default=None),
        "ticks_failed": ctl.tick_errors - errors0, "ticks": len(ticks),
        "tick_cpu_ms_p50": pct(tick_cpu, 50), "tick_cpu_ms_p95": pct(tick_cpu, 95),
        "controller_cpu_percent": ((u1 - u0) - (px1 - px0)) / elapsed * 100,
        "proxy_thread_cpu_percent": (px1 - px0) / elapsed * 100,
        "max_rss_mb_bench_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "zookeeper_transactions_per_s": (zx1 - zx0) / elapsed,
        "zookeeper_cpu_percent": (zk1 - zk0) / elapsed * 100,
        "zookeeper_rss_mb": proc_rss_mb(zk_pid),
        "load_generator_cpu_percent": (load1 - load0) / elapsed * 100,
        "load_generator_rss_mb": sum(proc_rss_mb(q) for q in load_pids),
        "watch_events_per_s": rate("watch_events"),
        "controller_reads_per_s": rate("reads") + rate("rearm_reads"),
        "consistency_repairs": st1.get("repairs", 0) - st0.get("repairs", 0),
        "controller_connection_losses": ctl.drops - drops0,
        "controller_resyncs": st1.get("resyncs", 0) - st0.get("resyncs", 0),
    }
    print(f"   idle {elapsed:.0f} s: false FAILED {i['false_failed']}; controller CPU "
          f"{i['controller_cpu_percent']:.1f}% of a core (tick p50 {_n(i['tick_ms_p50'])} ms, "
          f"p95 {_n(i['tick_ms_p95'])} ms wall; CPU p50 {_n(i['tick_cpu_ms_p50'])} ms); "
          f"ZooKeeper {i['zookeeper_transactions_per_s']:.2f} transactions/s, CPU "
          f"{i['zookeeper_cpu_percent']:.1f}% of a core, RSS {i['zookeeper_rss_mb']:.0f} MB; "
          f"load generators CPU {i['load_generator_cpu_percent']:.1f}%, RSS "
          f"{i['load_generator_rss_mb']:.0f} MB; controller reads "
          f"{i['controller_reads_per_s']:.1f}/s, {i['controller_connection_losses']} "
          f"connection losses, {i['controller_resyncs']} resyncs", flush=True)
    return i


def failover(work, zk, rounds):
    """SIGKILL of the leading instanceha-controller to the standby logging its
    leadership (secure configuration)."""
    results = []
    root = "/bench-failover"
    for r in range(rounds):
        ctls = []
        for name in (f"ctl-a{r}", f"ctl-b{r}"):
            sections = {
                "DEFAULT": {"host": name, "log_file": os.path.join(work, f"{name}.log")},
                "coordination": zk.section("controller", root_path=root),
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


# -- the report ----------------------------------------------------------------------------
def cell_measured(f: dict) -> dict:
    """The figures of a cell that targets are declared for."""
    m = {"false_failed": f.get("false_failed")}
    for fault in FAULTS:
        if fault in f:
            m[f"{fault}_p95_s"] = f[fault]["p95"]
    if "view_current_after_loss" in f:
        m["view_current_after_loss_max_s"] = f["view_current_after_loss"]["max"]
    if "idle" in f:
        m["controller_cpu_percent"] = f["idle"]["controller_cpu_percent"]
    return m


def security_ratios(cells: dict) -> dict:
    """Security on / off, for each size and load measured both ways."""
    out = {}
    for name, on in cells.items():
        if not on["secure"]:
            continue
        off = cells.get(name.replace("-secure-", "-insecure-"))
        if off is None:
            continue
        r = {}
        for fault in FAULTS:
            if fault in on and fault in off:
                for p in ("p50", "p95"):
                    r[f"{fault}_{p}"] = _ratio(on[fault][p], off[fault][p])
        for key in ("zookeeper_cpu_percent", "controller_cpu_percent",
                    "zookeeper_transactions_per_s", "load_generator_cpu_percent",
                    "zookeeper_rss_mb", "tick_cpu_ms_p50"):
            if "idle" in on and "idle" in off:
                r[key] = _ratio(on["idle"][key], off["idle"][key])
        r["joined_and_healthy_s"] = _ratio(on.get("joined_and_healthy_s"),
                                           off.get("joined_and_healthy_s"))
        if "join_cpu_s" in on and "join_cpu_s" in off:
            for who in ("zookeeper", "load_generators"):
                r[f"join_cpu_{who}"] = _ratio(on["join_cpu_s"][who], off["join_cpu_s"][who])
        out[name.replace("-secure-", "-")] = r
    return out


def _ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", default="1000", help="comma-separated sizes")
    p.add_argument("--security", default="on,off",
                   help="comma-separated: on (TLS, digest auth, ACLs), off (insecure = true)")
    p.add_argument("--loads", default="idle", help="comma-separated: idle, loaded (stress-ng)")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--idle-seconds", type=float, default=300)
    p.add_argument("--cuts", type=int, default=0,
                   help="connection losses of the controller per cell (1-3 s each)")
    p.add_argument("--cut-mode", choices=("blackhole", "reset", "alternate"),
                   default="blackhole")
    p.add_argument("--failover-rounds", type=int, default=0)
    p.add_argument("--controller-reconnect-max-delay", type=float, default=None,
                   help="the controller's [coordination] reconnect_max_delay (default: the "
                        "option's default, 5 s)")
    p.add_argument("--tick-ms", type=int, default=500,
                   help="ZooKeeper tickTime (a 2 s session needs <= 1000)")
    p.add_argument("--zk-heap-mb", type=int, default=1024,
                   help="ZooKeeper's Java heap (-Xmx), in MB")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    work = tempfile.mkdtemp(prefix="ih-detect-bench-")
    zk = ZooKeeperServer(os.path.join(work, "zk"), tick_ms=args.tick_ms,
                         heap_mb=args.zk_heap_mb).start()
    result = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
              "zookeeper_tick_ms": args.tick_ms, "zookeeper_heap_mb": args.zk_heap_mb,
              "session_timeout_s": SESSION_TIMEOUT,
              "date": datetime.date.today().isoformat(), "argv": sys.argv[1:], "cells": {}}
    cells = result["cells"]

    def save():
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)

    try:
        for n in [int(x) for x in args.agents.split(",")]:
            for load in args.loads.split(","):
                for sec in args.security.split(","):
                    cell = Cell(zk, n, sec == "on", load == "loaded", work)
                    try:
                        cells[cell.name] = measure(cell, args)
                    except (RuntimeError, TimeoutError, CoordinationError) as e:
                        print(f"   {cell.name} stopped: {type(e).__name__}: {e}", flush=True)
                        cells[cell.name] = {"agents": n, "secure": cell.secure,
                                            "loaded": cell.loaded, "stopped": str(e)}
                    save()
        if args.failover_rounds:
            fo = failover(work, zk, args.failover_rounds)
            result["failover"] = {"p50": pct(fo, 50), "max": max(fo), "n": len(fo)}
            print(f"== leader fail-over (SIGKILL -> standby leads): p50 {pct(fo, 50):.2f} s, "
                  f"max {max(fo):.2f} s, n={len(fo)}", flush=True)
    finally:
        zk.stop()
    ratios = result["security_cost"] = security_ratios(cells)
    for name, r in ratios.items():
        print(f"== cost of security at {name} (on / off): " + ", ".join(
            f"{k} {v:.2f}x" for k, v in r.items() if v is not None), flush=True)
    declared, measured = [], {}
    for name, f in cells.items():
        m = cell_measured(f) if "stopped" not in f else {
            k: None for k in CELL_TARGETS}
        declared += cell_targets(name, f["loaded"], m)
        measured.update({f"{name}.{k}": v for k, v in m.items()})
    code = targets.report(declared, measured, out=result)
    save()
    return code


if __name__ == "__main__":
    sys.exit(main())
