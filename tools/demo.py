"""The failover demo: the whole product on real parts, on loopback.

Starts ZooKeeper, the mini-cloud (keystone, placement, glance, neutron API,
nova with 3 fake-driver computes, MariaDB, RabbitMQ), an IPMI BMC emulator
(OpenIPMI ipmi_sim) per compute, one ``instanceha-agent`` per compute, two
``instanceha-controller`` processes and an ``instanceha listen`` consumer;
boots servers with mixed policies on compute1; then makes compute1 die the
way a real host does (its agent and nova-compute stop answering, its BMC
still reports power on) and prints a timeline, read from the controllers'
logs and the notification bus, with the seconds since the failure of each
step: suspected, failed, fenced (power read back off), forced down,
notifications received, each evacuation, recovered. ``--kill-leader`` also
SIGKILLs the leading controller right after the fence, to show the standby
taking over mid-recovery. ``--prometheus`` also starts a Prometheus
(Debian's, by hand on loopback) that scrapes every agent and controller with
the shipped alert rules (``etc/prometheus/instanceha-alerts.yaml``): the
timeline then shows the alert for the failed host pending, firing and
resolved, as Prometheus' own API reports it. Everything is torn down at the end.

``--no-cloud``: detection only (ZooKeeper, agents, controllers; nothing fenced).

    tools/demo.sh [--kill-leader] [--keep] [--prometheus] [--no-cloud [--fault kill|stop|hang]]
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import daemons, procs  # noqa: E402
from harness.prometheus import AlertWatch, PrometheusServer  # noqa: E402
from harness.zookeeper import ZooKeeperServer  # noqa: E402

T0 = time.monotonic()
LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \d+ (\w+) (\S+) \[[^\]]*\] (.*)$")


def say(msg: str) -> None:
    print(f"[demo {time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def events(d: daemons.Daemon, since: datetime.datetime):
    for line in d.read_log().splitlines():
        m = LINE.match(line)
        if not m:
            continue
        at = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")
        if at >= since:
            yield at, d.name, m.group(4)


INTERESTING = re.compile(
    r"host=(\S+) phase=(\S+)|leadership (gained|lost)|acting on nothing|action=")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--computes", type=int, default=3)
    p.add_argument("--fault", choices=("kill", "stop", "hang"), default="kill",
                   help="kill: SIGKILL the agent (host gone); stop: SIGSTOP it (host frozen); "
                        "hang: its main loop hangs while its session lives")
    p.add_argument("--kill-leader", action="store_true",
                   help="SIGKILL the leading controller right after the failure")
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    p.add_argument("--no-cloud", action="store_true",
                   help="detection only: no mini-cloud, no BMCs, nothing fenced")
    p.add_argument("--prometheus", action="store_true",
                   help="a real Prometheus scrapes the daemons with the shipped alert rules; "
                        "the timeline shows its alerts")
    args = p.parse_args(argv)
    if not args.no_cloud:
        from demo_full import run_full

        return run_full(args, say)

    work = tempfile.mkdtemp(prefix="instanceha-demo-")
    started: list[daemons.Daemon] = []
    zk = prom = alerts = None
    try:
        say(f"starting ZooKeeper (tickTime 500 ms) in {work}")
        zk = ZooKeeperServer(os.path.join(work, "zookeeper"), tick_ms=500).start()
        say(f"ZooKeeper up at {zk.hosts} (TLS; every daemon authenticates, every node "
            "has a least-privilege ACL)")
        telemetry = {"controller_port": 0, "agent_port": 0}
        hang_flag = os.path.join(work, "hang")
        computes = [f"compute{i}" for i in range(1, args.computes + 1)]
        victim = computes[-1]
        zk.provision("/instanceha", computes)  # as the leader does for its inventory
        for name in computes:
            sections = dict(coordination=zk.section("agent", name, session_timeout=2.0),
                            telemetry=telemetry, DEFAULT={"host": name},
                            agent={"watched_processes": "init:/sbin/init",
                                   "health_check_interval": 0.2})
            prefix = None
            env = None
            if name == victim and args.fault == "hang":
                prefix = [sys.executable, os.path.join(os.path.dirname(__file__), "harness",
                                                       "hang_agent.py")]
                env = {"INSTANCEHA_TEST_HANG_FILE": hang_flag}
            started.append(daemons.Daemon.instanceha(
                "instanceha-agent", work, name, sections, env=env, argv_prefix=prefix).start())
            say(f"agent {name} started (pid {started[-1].pid})")
        ctls = []
        for name in ("controller-a", "controller-b"):
            d = daemons.Daemon.instanceha(
                "instanceha-controller", work, name,
                dict(coordination=zk.section("controller", session_timeout=2.0),
                     telemetry=telemetry, DEFAULT={"host": name})).start()
            started.append(d)
            ctls.append(d)
            say(f"controller {name} started (pid {d.pid})")

        def leader():
            for d in ctls:
                if "leadership gained by " + d.name in d.read_log():
                    return d
            return None

        lead = procs.wait_for(leader, 60, "a leading controller")
        say(f"{lead.name} leads; the other controller is a hot standby")
        for name in computes:
            lead.wait_log(rf"host={name} phase=\w+->HEALTHY", timeout=60)
        if args.prometheus:
            prom = PrometheusServer(os.path.join(work, "prometheus")).start()
            for d in started:
                prom.scrape_daemon(d)
            prom.wait_up([d.name for d in started])
            alerts = AlertWatch(prom).start()
            say(f"Prometheus at {prom.url} scrapes {len(started)} daemons every 1 s with "
                "etc/prometheus/instanceha-alerts.yaml (its alerts are in the timeline)")
        say(f"all {len(computes)} hosts HEALTHY; failing {victim} ({args.fault})")
        time.sleep(1.0)
        failed_at = datetime.datetime.now()
        agent = next(d for d in started if d.name == victim)
        if args.fault == "kill":
            agent.kill()
        elif args.fault == "stop":
            agent.freeze()
        else:
            open(hang_flag, "w").close()
        if args.kill_leader:
            time.sleep(0.3)
            lead.kill()
            say(f"SIGKILLed the leading controller {lead.name}")
        survivor = [d for d in ctls if d.proc.poll() is None]
        procs.wait_for(
            lambda: any(re.search(rf"host={victim} phase=FAILED action=", d.read_log())
                        for d in survivor), 60, "the FAILED host to be handed over")
        if prom is not None:
            prom.wait_alert("InstanceHAHostFailed", host=victim, timeout=60)
            alerts.stop()
        time.sleep(0.5)
        print()
        print(f"timeline (seconds since {victim} failed at {failed_at:%H:%M:%S.%f})")
        rows = []
        for d in ctls:
            for at, who, msg in events(d, failed_at - datetime.timedelta(seconds=0.5)):
                if INTERESTING.search(msg):
                    rows.append((at, who, msg))
        if alerts is not None:
            rows.extend((at, "prometheus", what) for at, what in alerts.events
                        if at >= failed_at)
        for at, who, msg in sorted(rows):
            print(f"  +{(at - failed_at).total_seconds():6.2f}s  {who:13s} {msg[:150]}")
        print()
        say("tearing down")
        return 0
    finally:
        if alerts is not None:
            alerts.stop()
        if prom is not None:
            prom.stop()
        if os.path.exists(os.path.join(work, "hang")):
            os.unlink(os.path.join(work, "hang"))
        for d in started:
            try:
                if d.proc.poll() is None:
                    d.proc.send_signal(signal.SIGCONT)
            except ProcessLookupError:
                pass
            d.terminate()
        if zk is not None:
            zk.stop()
        if args.keep:
            say(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
