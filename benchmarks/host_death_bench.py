"""Host death benchmark: what the second source of liveness costs a really dead host.

On the mini-cloud, with an ipmi_sim BMC per compute, an agent per compute and
two controllers that differ only in ``[detection] second_source``: ``probe``
(a host whose agent vanishes is probed on its management address before it
may be FAILED) and ``none`` (the behaviour before: FAILED at once). They take
turns leading (the leader is stopped with SIGTERM, it resigns, the standby
leads with a warm view, the stopped one is started again as the standby), so
both are measured in the same run, round after round, on the same machine
load. Each round kills one whole host (its agent and nova-compute SIGKILLed,
its management address silent: tools/harness/hostnet.py) and measures from
the kill:

* fault -> FAILED: the leader's log line;
* fault -> power off: the BMC's own record of its power bit going off.

Then the host is repaired (power on, address and nova-compute back, a new
agent) and the leader puts it back in service. Victims rotate over the
computes. The added detection time is the difference of the medians.

    python benchmarks/host_death_bench.py [--rounds 5] [--json FILE] [--keep]
        [--cloud RUN_DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import signal
import statistics
import sys
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "tools"))

import targets  # noqa: E402  (benchmarks/targets.py, beside this file)
from harness import procs  # noqa: E402
from harness.minicloud import MiniCloud  # noqa: E402
from harness.stack import Stack, bmc_off_at, log_times, seconds  # noqa: E402

MODES = ("none", "probe")
TARGETS = (
    targets.Target("added_failed_p50_s", 1.0, "<=", "s",
                   what="fault -> FAILED with the probe minus without (medians): the probe's "
                   "timeout, 0.5 s by default"),
    targets.Target("added_power_off_p50_s", 1.0, "<=", "s",
                   what="fault -> BMC off with the probe minus without (medians): the guard's "
                   "wait for companions (0.7 s) counts from the silence, so about 0"),
    targets.Target("fenced_share", 1.0, "==",
                   what="rounds whose dead host was fenced (every mode)"),
)


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.st = Stack("ih-hostdeath-", keep=args.keep, say=lambda m: print(m, flush=True))
        self.results: list[dict] = []
        self.ctls: dict[str, object] = {}

    def start(self) -> None:
        st = self.st
        st.start_zookeeper(tick_ms=500)
        if self.args.cloud:  # a mini-cloud already up (tools/minicloud/up.sh): left running
            st.cloud = MiniCloud.attach(self.args.cloud)
        else:
            st.start_cloud(prefix="hostdeath-", computes=3)
        st.start_bmcs()
        self.agents = {h: st.agent(h) for h in st.cloud.hosts}
        self.ctls["none"] = self.controller("none")
        self.ctls["none"].wait_log("leadership gained", timeout=60)
        self.current = "none"
        self.ctls["probe"] = self.controller("probe")  # the hot standby
        # a controller trusts its view only once settled (heartbeat_stale_after +
        # reconnect_grace, 8 s): no round starts before both are
        time.sleep(10.0)

    def controller(self, mode: str):
        # every host fails again and again on purpose: no flap damping here
        return self.st.controller(f"ctl-{mode}", {"controller": {"flap_failures": 100},
                                                  "detection": {"second_source": mode}})

    def lead(self, mode: str) -> None:
        """Make the controller of ``mode`` the leader: the leader is stopped (it
        resigns at once), the standby takes over, the stopped one comes back as
        the standby."""
        if self.current == mode:
            return
        standby = self.ctls[mode]
        mark = standby.log_size()
        self.ctls[self.current].terminate()
        standby.wait_log(f"leadership gained by ctl-{mode}", timeout=60, after=mark)
        self.ctls[self.current] = self.controller(self.current)
        self.current = mode

    def healthy(self, mode: str) -> None:
        ctl = self.ctls[mode]
        for h in self.st.cloud.hosts:
            procs.wait_for(lambda h=h: re.search(rf"host={h} phase=\w+->HEALTHY",
                                                 ctl.read_log()), 180, f"{h} HEALTHY")
        time.sleep(2.0)

    def round(self, i: int, mode: str, victim: str) -> None:
        st = self.st
        self.lead(mode)
        self.healthy(mode)
        ctl = self.ctls[mode]
        mark = ctl.log_size()
        t0 = datetime.datetime.now()
        self.agents[victim].kill()
        st.cloud.kill_host(victim)
        procs.wait_for(lambda: re.search(rf"host={victim} fenced: ipmi read back off",
                                         ctl.read_log()[mark:]), 120, f"{victim} fenced")
        log = ctl.read_log()[mark:]
        failed = log_times(log, rf"host={victim} phase=\w+->FAILED")
        off = bmc_off_at(st.bmcs[victim], t0)
        r = {"round": i, "mode": mode, "victim": victim,
             "failed_s": seconds(t0, failed[0]) if failed else None,
             "power_off_s": seconds(t0, off) if off else None,
             "rule": (re.search(rf"host={victim} phase=\w+->FAILED rule=(\S+)", log)
                      or [None, None])[1]}
        self.results.append(r)
        print(f"round {i:2d} second_source={mode:5s} {victim}: FAILED +{r['failed_s']:.2f} s "
              f"(rule {r['rule']}), BMC off +{r['power_off_s']:.2f} s", flush=True)
        self.repair(victim, mode)

    def repair(self, victim: str, mode: str) -> None:
        st = self.st
        ctl = self.ctls[mode]
        mark = ctl.log_size()
        st.bmcs[victim].set_power(True)
        st.cloud.start_compute(victim)  # its address answers again
        self.agents[victim] = st.agent(victim, tag=f"r{len(self.results)}")
        procs.wait_for(lambda: re.search(rf"host={victim} back in service",
                                         ctl.read_log()[mark:]), 300, f"{victim} back")

    def run(self) -> dict:
        hosts = self.st.cloud.hosts
        for i in range(self.args.rounds):
            for k, mode in enumerate(MODES if i % 2 == 0 else MODES[::-1]):
                self.round(i, mode, hosts[(2 * i + k) % len(hosts)])
        by_mode = {m: [r for r in self.results if r["mode"] == m] for m in MODES}

        def med(mode, key):
            values = [r[key] for r in by_mode[mode] if r[key] is not None]
            return statistics.median(values) if values else None

        figures = {}
        for m in MODES:
            for key in ("failed_s", "power_off_s"):
                figures[f"{m}_{key}_p50"] = med(m, key)
                values = [r[key] for r in by_mode[m] if r[key] is not None]
                figures[f"{m}_{key}_max"] = max(values) if values else None
        if None not in (figures["probe_failed_s_p50"], figures["none_failed_s_p50"]):
            figures["added_failed_p50_s"] = figures["probe_failed_s_p50"] - \
                figures["none_failed_s_p50"]
        if None not in (figures["probe_power_off_s_p50"], figures["none_power_off_s_p50"]):
            figures["added_power_off_p50_s"] = figures["probe_power_off_s_p50"] - \
                figures["none_power_off_s_p50"]
        figures["fenced_share"] = sum(r["power_off_s"] is not None for r in self.results) / \
            len(self.results) if self.results else None
        return {"rounds": self.results, "figures": figures,
                "settings": {"rounds": self.args.rounds, "session_timeout": 2.0,
                             "tick_ms": 500, "probe_timeout": 0.5, "vanish_window": 0.7}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="kills per mode")
    p.add_argument("--json", default=None)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--cloud", default=None, metavar="RUN_DIR",
                   help="use this running mini-cloud (and leave it running)")
    args = p.parse_args(argv)
    bench = Bench(args)
    try:
        bench.start()
        result = bench.run()
    finally:
        if args.cloud and bench.st.cloud is not None:
            for h in bench.st.cloud.hosts:  # the attached cloud: repaired, left running
                bench.st.cloud.restore(h)
                bench.st.cloud.start_compute(h)
            bench.st.cloud = None
        bench.st.close()
    f = result["figures"]
    for m in MODES:
        print(f"second_source={m}: fault -> FAILED p50 {f[m + '_failed_s_p50']:.2f} s "
              f"(max {f[m + '_failed_s_max']:.2f}), fault -> BMC off p50 "
              f"{f[m + '_power_off_s_p50']:.2f} s (max {f[m + '_power_off_s_max']:.2f})")
    status = targets.report(TARGETS, f, out=result)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=1)
    return status


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    sys.exit(main())
