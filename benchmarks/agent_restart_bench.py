"""Agent restart benchmark: a killed agent resumes its session within the session timeout.

A real ``instanceha-agent`` on a real ZooKeeper (tickTime 500 ms, session
timeout 2 s: the production advice) is SIGKILLed again and again at random
points of its ping cycle and started again as systemd's ``Restart=always``
does (after ``RestartSec``, 100 ms), optionally under ``nice`` as the unit's
``Nice=`` and beside a foreign CPU load (Debian's stress-ng, ``--load N``
workers). Measured per round:

* restart to resumed: from the SIGKILL to the new process's log line
  "resumed session" (the session was accepted by ZooKeeper), on the wall
  clock of this machine (the log's stamps);
* whether the session was resumed, and whether a controller-side observer
  (the coordinator's own view, polled every 20 ms) ever saw the membership
  vanish or its incarnation change;
* the CPU the new process spent until then.

The budget: ZooKeeper expires a session between T - T/3 and T (+ one
tickTime) after the client's last packet (kazoo pings every T/3 at most), so a
restart must be back within T - T/3 = 1.33 s of the kill in the worst case.

    python benchmarks/agent_restart_bench.py [--rounds 20] [--load 0] [--nice 0[,-10]]
        [--restart-sec 0.1] [--json FILE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import re
import subprocess
import sys
import threading
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "tools"))

import targets  # noqa: E402  (benchmarks/targets.py, beside this file)
from harness import daemons, procs  # noqa: E402
from harness.stack import Stack  # noqa: E402
from targets import pct  # noqa: E402

from instanceha import exceptions  # noqa: E402

SESSION_TIMEOUT = 2.0
BUDGET = SESSION_TIMEOUT * 2 / 3
TARGETS = (
    targets.Target("resumed_share", 1.0, "==", what="rounds whose restarted agent resumed "
                   "its session (the membership never left)"),
    targets.Target("vanished", 0, "==", what="rounds in which the observer saw the "
                   "membership vanish or a new incarnation"),
    targets.Target("restart_to_resumed_p95_s", 1.0, "<=", "s",
                   what=f"SIGKILL to the session resumed; the session may expire "
                   f"{BUDGET:.2f} s after the kill at the earliest"),
    targets.Target("restart_to_resumed_max_s", BUDGET, "<=", "s",
                   what="the slowest round, inside the worst case of the session's expiry"),
)
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \d+ \w+ instanceha\.agent\.service "
                   r"\[-\] (resumed session|session 0x[0-9a-f]+ of the previous run)", re.M)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Watcher:
    """The controller's side: the coordinator's view of one member, every 20 ms."""

    def __init__(self, zk, root: str, host: str) -> None:
        self.coord = zk.coordinator("controller", session_timeout=SESSION_TIMEOUT,
                                    root_path=root)
        self.coord.start()
        self.host = host
        self.seen: list[tuple[float, int | None]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            try:
                m = self.coord.snapshot().members.get(self.host)
            except exceptions.CoordinationError:
                continue
            inc = m.incarnation if m else None
            if not self.seen or self.seen[-1][1] != inc:
                self.seen.append((time.monotonic(), inc))

    def incarnation(self) -> int | None:
        return self.seen[-1][1] if self.seen else None

    def changes_since(self, t: float) -> list[int | None]:
        return [inc for at, inc in self.seen if at >= t]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.coord.stop()


def run(args) -> dict:
    nices = [int(n) for n in str(args.nice).split(",")]
    rounds = []
    load = None
    with Stack("agent-restart-", say=lambda s: None) as st:
        st.start_zookeeper(tick_ms=500)
        root = "/agent-restart"
        st.zk.provision(root, ["compute1"])
        sections = dict(st.base("agent", "compute1"), DEFAULT={"host": "compute1"}, agent={
            "watched_processes": "init:/sbin/init",
            "session_file": os.path.join(st.work, "agent.session")})
        sections["coordination"] = dict(sections["coordination"], root_path=root)
        sections["telemetry"] = {"enabled": "false"}
        exe = os.path.join(os.path.dirname(sys.executable), "instanceha-agent")
        # one process command per nice value, one session file: each restart is the
        # other command resuming the same session
        agents = {n: daemons.Daemon.instanceha(
            "instanceha-agent", st.work, f"agent-nice{n}", sections,
            argv_prefix=(["nice", "-n", str(n)] if n else []) + [exe]) for n in nices}
        running = agents[nices[0]]
        st.started.extend(agents.values())
        running.start()
        running.wait_log(r"joined as compute1", 60)
        watcher = Watcher(st.zk, root, "compute1")
        procs.wait_for(watcher.incarnation, 10, "the watcher to see compute1")
        first = watcher.incarnation()
        if args.load:
            load = subprocess.Popen(["stress-ng", "--cpu", str(args.load), "--timeout", "0"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(2)
        try:
            for i in range(args.rounds):
                nice = nices[(i + 1) % len(nices)]
                agent = agents[nice]
                time.sleep(random.uniform(1.0, 3.0))  # a random point of the ping cycle
                mark = agent.log_size()
                t_mono = time.monotonic()
                killed = datetime.datetime.now()
                running.proc.kill()
                running.proc.wait()
                time.sleep(args.restart_sec)  # systemd's RestartSec
                running = agent.start()
                pid = agent.pid
                procs.wait_for(lambda a=agent, mark=mark: STAMP.search(a.read_log(), mark), 15,
                               "the restarted agent's verdict on its session", interval=0.01)
                used = cpu_seconds(pid)
                m = STAMP.search(agent.read_log(), mark)
                at = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")
                resumed = m.group(2) == "resumed session"
                dt = (at - killed).total_seconds()
                agent.wait_log(r"joined as compute1", 15, after=mark)
                time.sleep(0.3)  # the watcher's next looks
                changes = watcher.changes_since(t_mono)
                vanished = any(inc != first for inc in changes)
                if not resumed:
                    first = watcher.incarnation()
                rounds.append({"round": i, "nice": nice, "restart_to_resumed_s": round(dt, 3),
                               "resumed": resumed, "vanished": vanished, "cpu_s": used,
                               "loadavg": os.getloadavg()[0]})
                print(f"round {i:2d} nice {nice:3d}: {'resumed' if resumed else 'EXPIRED'} "
                      f"{dt:.3f} s after the kill; cpu {used} s; observer saw "
                      f"{'a VANISH' if vanished else 'no vanish'}; load average "
                      f"{os.getloadavg()[0]:.1f}", flush=True)
        finally:
            if load is not None:
                load.kill()
                load.wait()
            watcher.close()
    per_nice = {}
    for n in nices:
        mine = [r for r in rounds if r["nice"] == n]
        times = [r["restart_to_resumed_s"] for r in mine]
        per_nice[n] = {
            "rounds": len(mine),
            "resumed_share": sum(r["resumed"] for r in mine) / len(mine) if mine else None,
            "vanished": sum(r["vanished"] for r in mine) if mine else None,
            "restart_to_resumed_p50_s": pct(times, 50),
            "restart_to_resumed_p95_s": pct(times, 95),
            "restart_to_resumed_max_s": max(times) if times else None,
            "start_cpu_p50_s": pct([r["cpu_s"] for r in mine if r["cpu_s"] is not None], 50),
        }
    # the targets are the last nice value's (the unit's setting when several are compared)
    figures = dict(per_nice[nices[-1]])
    return {"rounds": rounds, "figures": figures, "per_nice": per_nice,
            "settings": {"session_timeout": SESSION_TIMEOUT, "tick_ms": 500,
                         "restart_sec": args.restart_sec, "nice": nices,
                         "load_workers": args.load, "cpus": os.cpu_count()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--load", type=int, default=0, help="stress-ng CPU workers beside")
    p.add_argument("--nice", default="0", help="the agent's nice value (the unit's); a comma "
                   "list alternates them round by round, the targets apply to the last")
    p.add_argument("--restart-sec", type=float, default=0.1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    result = run(args)
    for n, f in result["per_nice"].items():
        print(f"nice {n}: {f['rounds']} rounds, resumed {f['resumed_share']:.0%}, restart to "
              f"resumed p50 {f['restart_to_resumed_p50_s']:.3f} s, p95 "
              f"{f['restart_to_resumed_p95_s']:.3f} s, max {f['restart_to_resumed_max_s']:.3f} s"
              f"; start CPU p50 {f['start_cpu_p50_s']:.2f} s")
    print(f"settings {result['settings']}")
    f = result["figures"]
    status = targets.report(TARGETS, f, out=result)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=1)
    return status


if __name__ == "__main__":
    sys.exit(main())
