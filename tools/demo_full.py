"""The full failover demo (see demo.py): mini-cloud, BMCs, agents, controllers."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import time

from harness import daemons, procs
from harness.prometheus import AlertWatch
from harness.stack import ActiveWatch, Stack, bmc_off_at, log_times, nova_accepted, seconds

BIN = os.path.dirname(sys.executable)
LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \d+ (\w+) (\S+) \[[^\]]*\] (.*)$")
STEPS = re.compile(
    r"host=compute1 (phase=\S+|fencing|fenced|forced down|recovering|server=\S+ evacuated"
    r"|recovered|back)|leadership (gained|lost)")


def _log_events(d: daemons.Daemon, since: datetime.datetime):
    for line in d.read_log().splitlines():
        m = LINE.match(line)
        if m:
            at = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")
            if at >= since and STEPS.search(m.group(4)):
                yield at, d.name, m.group(4)


def run_full(args, say) -> int:
    with Stack("instanceha-demo-", keep=args.keep, say=say) as st:
        say("installing/checking the mini-cloud's venv (first run: a few minutes)")
        say(f"starting ZooKeeper (tickTime 500 ms) in {st.work}")
        st.start_zookeeper(tick_ms=500)
        say("starting the mini-cloud (keystone, placement, glance, neutron, nova, 3 computes)")
        cloud = st.start_cloud(prefix="demo-", computes=3)
        hosts = cloud.hosts
        victim = hosts[0]
        say(f"mini-cloud up: {', '.join(hosts)}")
        st.start_bmcs(password=lambda h: f"bmc-{h}-pw")
        say(f"{len(st.bmcs)} IPMI BMCs (ipmi_sim) up, every host powered on")
        agents = {h: st.agent(h) for h in hosts}
        say(f"agents started on {', '.join(hosts)}")
        recorder = st.listen()
        ctls = [st.controller(name)
                for name in ("controller-a", "controller-b")]
        say("two controllers started (one leads, one hot standby)")

        def leader():
            return next((d for d in ctls if "leadership gained by " + d.name in d.read_log()),
                        None)

        lead = procs.wait_for(leader, 60, "a leading controller")
        for h in hosts:
            lead.wait_log(rf"host={h} phase=\w+->HEALTHY", timeout=60)
        say(f"{lead.name} leads; all hosts HEALTHY")
        alerts = _start_prometheus(st, [*agents.values(), *ctls], say) if args.prometheus \
            else None

        plan = [("web-1", "evacuate"), ("web-2", "evacuate"), ("vnf-1", "notify"),
                ("batch-1", None)]
        policy = dict(plan)
        server_ids = st.boot([n for n, _ in plan], victim,
                             metadata=lambda n: {"instanceha:recovery": policy[n]}
                             if policy[n] else {})
        say(f"servers ACTIVE on {victim}: " + ", ".join(
            f"{n} ({p or 'default: ignore'})" for n, p in plan))
        moving = [sid for sid, (_, p) in zip(server_ids, plan, strict=True) if p == "evacuate"]

        time.sleep(1.0)
        failed_at = datetime.datetime.now()
        agents[victim].kill()
        cloud.kill_host(victim)
        active = ActiveWatch(st.conn, moving, victim).start()
        say(f"{victim} died: agent and nova-compute gone, its BMC still reports power ON")
        if args.kill_leader:
            lead.wait_log(rf"host={victim} fenced", timeout=120)
            lead.kill()
            say(f"SIGKILLed the leading controller {lead.name} right after the fence")
        survivor = [d for d in ctls if d.proc.poll() is None]
        procs.wait_for(lambda: any(re.search(rf"host={victim} recovered", d.read_log())
                                   for d in survivor), 600, "the recovery to finish")
        all_active = active.wait(600)
        if alerts is not None:
            st.prometheus.wait_alert("InstanceHAHostFailed", host=victim, timeout=60)
        say(f"{victim} recovered; now repairing it: power on through its BMC, nova-compute "
            "and the agent start again")
        st.bmcs[victim].set_power(True)
        cloud.start_compute(victim)
        mark = agents[victim].log_size()
        agents[victim].start()
        procs.wait_for(lambda: any(re.search(rf"host={victim} back in service", d.read_log())
                                   for d in survivor), 600, f"{victim} to be re-enabled")
        if alerts is not None:
            st.prometheus.scrape_daemon(agents[victim], after=mark)  # its new port
            st.prometheus.wait_resolved("InstanceHAHostFailed", host=victim, timeout=60)
            alerts.stop()
        time.sleep(2.0)  # let the last notifications arrive
        rows = []
        for d in ctls:
            rows.extend(_log_events(d, failed_at))
        rows.extend(recorder.events(failed_at))
        if alerts is not None:
            rows.extend((at, "prometheus", what) for at, what in alerts.events
                        if at >= failed_at)
        print()
        print(f"timeline (seconds since {victim} failed at {failed_at:%H:%M:%S.%f})")
        for at, who, msg in sorted(rows):
            print(f"  +{seconds(failed_at, at):7.2f}s  {who:13s} {msg[:140]}")
        print()
        _milestones(st, ctls, victim, moving, failed_at, all_active)
        for sid, (name, p) in zip(server_ids, plan, strict=True):
            s = st.conn.compute.get_server(sid)
            print(f"  {name:8s} policy={p or 'ignore':8s} now on {s.compute_host} "
                  f"({s.status})")
        print()
        cli_conf = daemons.write_conf(os.path.join(st.work, "cli.conf"), st.base())
        cli = [os.path.join(BIN, "instanceha"), "--config-file", cli_conf, "incidents"]
        listed = json.loads(subprocess.run(cli + ["--host", victim, "--format", "json"],
                                           capture_output=True, text=True,
                                           check=True).stdout)
        print(f"the incident journal (instanceha incidents show {listed[0]['id']}):")
        shown = subprocess.run(cli + ["show", listed[0]["id"]], capture_output=True, text=True)
        print("  " + shown.stdout.rstrip().replace("\n", "\n  "))
        print()
        return 0


def _start_prometheus(st: Stack, monitored, say) -> AlertWatch:
    """Prometheus scraping every agent and controller with the shipped alert rules;
    its alerts API is watched for the timeline."""
    prom = st.start_prometheus()
    for d in monitored:
        prom.scrape_daemon(d)
    prom.wait_up([d.name for d in monitored])
    say(f"Prometheus at {prom.url} scrapes {len(monitored)} daemons every 1 s with "
        "etc/prometheus/instanceha-alerts.yaml (its alerts are in the timeline)")
    return AlertWatch(prom).start()


def _milestones(st: Stack, ctls, victim, moving, failed_at, all_active) -> None:
    """The milestones, as the outside saw them (the BMC, nova-api's log, Nova's
    API), beside the controllers' own word."""
    logs = "\n".join(d.read_log() for d in ctls)
    fenced = [t for t in log_times(logs, rf"host={victim} fenced:") if t >= failed_at]
    forced = [t for t in log_times(logs, rf"host={victim} forced down") if t >= failed_at]
    posts = sorted(t for ts in nova_accepted(st.cloud, moving, failed_at).values() for t in ts)
    off = bmc_off_at(st.bmcs[victim], failed_at)
    rows = [("the BMC's power bit off (the BMC's own record)", off),
            ("power-off read back (controller)", fenced[0] if fenced else None),
            ("nova-compute forced down (controller)", forced[0] if forced else None),
            ("first evacuate accepted (nova-api's log)", posts[0] if posts else None),
            ("last evacuate accepted (nova-api's log)", posts[-1] if posts else None),
            (f"all {len(moving)} opted-in servers ACTIVE elsewhere (Nova's API)", all_active)]
    print(f"milestones (seconds since {victim} failed)")
    for what, at in rows:
        print(f"  {'-' if at is None else f'+{seconds(failed_at, at):.2f}s':>9}  {what}")
    print()
