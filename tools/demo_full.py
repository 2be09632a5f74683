"""The full failover demo (see demo.py): mini-cloud, BMCs, agents, controllers."""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import yaml
from harness import daemons, procs
from harness.bmc import IpmiSimBMC
from harness.minicloud import MiniCloud
from harness.zookeeper import ZooKeeperServer

BIN = os.path.dirname(sys.executable)
LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \d+ (\w+) (\S+) \[[^\]]*\] (.*)$")
STEPS = re.compile(
    r"host=compute1 (phase=\S+|fencing|fenced|forced down|recovering|server=|recovered|back)"
    r"|leadership (gained|lost)")


def _log_events(d: daemons.Daemon, since: datetime.datetime):
    for line in d.read_log().splitlines():
        m = LINE.match(line)
        if m:
            at = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")
            if at >= since and STEPS.search(m.group(4)):
                yield at, d.name, m.group(4)


class BusRecorder:
    """Reads ``instanceha listen --format json`` as it prints, stamping each
    notification with the time the consumer received it."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.received: list[tuple[datetime.datetime, dict]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            try:
                self.received.append((datetime.datetime.now(), json.loads(raw)))
            except ValueError:
                continue

    def events(self, since: datetime.datetime):
        for at, e in list(self.received):
            if at >= since:
                payload = e.get("payload", {})
                what = payload.get("instance_id") or payload.get("host", "")
                yield at, "consumer", f"received {e.get('event_type')} {what}"


def run_full(args, say) -> int:
    work = tempfile.mkdtemp(prefix="instanceha-demo-")
    started: list[daemons.Daemon] = []
    bmcs: list[IpmiSimBMC] = []
    zk = cloud = listener = conn = None
    server_ids: list[str] = []
    try:
        say("installing/checking the mini-cloud's venv (first run: a few minutes)")
        MiniCloud.install()
        say(f"starting ZooKeeper (tickTime 500 ms) in {work}")
        zk = ZooKeeperServer(os.path.join(work, "zookeeper"), tick_ms=500).start()
        say("starting the mini-cloud (keystone, placement, glance, neutron, nova, 3 computes)")
        cloud = MiniCloud.in_run_dir(prefix="demo-", computes=3).up()
        ep = cloud.endpoints
        hosts = cloud.hosts
        victim = hosts[0]
        say(f"mini-cloud up: {', '.join(hosts)}")

        inventory = {"hosts": {}}
        bmc_of = {}
        for h in hosts:
            bmc = IpmiSimBMC(os.path.join(work, "bmc"), name=h, password=f"bmc-{h}-pw").start()
            bmcs.append(bmc)
            bmc_of[h] = bmc
            inventory["hosts"][h] = bmc.entry(timeout=3)
        inv_path = os.path.join(work, "fencing-inventory.yaml")
        with open(inv_path, "w") as f:
            yaml.safe_dump(inventory, f)
        os.chmod(inv_path, 0o600)
        say(f"{len(bmcs)} IPMI BMCs (ipmi_sim) up, every host powered on")

        base = {"coordination": {"backend_url": zk.url, "session_timeout": 2.0},
                "telemetry": {"controller_port": 0, "agent_port": 0}}
        bus = {"DEFAULT": {"transport_url": ep["transport_url"]},
               "oslo_messaging_notifications": {"driver": "messagingv2"}}
        agents = {}
        for h in hosts:
            n = h[len("compute"):]
            agents[h] = daemons.Daemon.instanceha(
                "instanceha-agent", work, f"agent-{h}",
                dict(base, DEFAULT={"host": h}, agent={
                    "watched_processes": f"nova-compute:nova-compute{n}.conf",
                    "health_check_interval": 0.5})).start()
            started.append(agents[h])
        say(f"agents started on {', '.join(hosts)}")

        listen_conf = daemons.write_conf(os.path.join(work, "listen.conf"), bus)
        listener = subprocess.Popen(
            [os.path.join(BIN, "instanceha"), "--config-file", listen_conf, "listen",
             "--format", "json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        recorder = BusRecorder(listener)

        ctl_sections = dict(base, **bus, fencing={"inventory_file": inv_path, "deadline": 20,
                                                  "poll_interval": 0.2},
                            nova=dict(cloud.nova_options(), timeout=30, poll_interval=0.5))
        ctls = []
        for name in ("controller-a", "controller-b"):
            sections = dict(ctl_sections, DEFAULT=dict(bus["DEFAULT"], host=name))
            d = daemons.Daemon.instanceha("instanceha-controller", work, name,
                                          sections).start()
            started.append(d)
            ctls.append(d)
        say("two controllers started (one leads, one hot standby)")

        def leader():
            return next((d for d in ctls if "leadership gained by " + d.name in d.read_log()),
                        None)

        lead = procs.wait_for(leader, 60, "a leading controller")
        for h in hosts:
            lead.wait_log(rf"host={h} phase=\w+->HEALTHY", timeout=60)
        say(f"{lead.name} leads; all hosts HEALTHY")

        conn = cloud.connection()
        image = conn.image.find_image(ep["image"])
        flavor = conn.compute.find_flavor(ep["flavor"])
        plan = [("web-1", "evacuate"), ("web-2", "evacuate"), ("vnf-1", "notify"),
                ("batch-1", None)]
        for name, policy in plan:
            meta = {"instanceha:recovery": policy} if policy else {}
            s = conn.compute.create_server(name=name, image_id=image.id, flavor_id=flavor.id,
                                           networks="none", metadata=meta,
                                           availability_zone=f"nova:{victim}")
            server_ids.append(s.id)
        for sid in server_ids:
            conn.compute.wait_for_server(conn.compute.get_server(sid), status="ACTIVE",
                                         wait=180)
        say(f"servers ACTIVE on {victim}: " + ", ".join(
            f"{n} ({p or 'default: ignore'})" for n, p in plan))

        time.sleep(1.0)
        failed_at = datetime.datetime.now()
        agents[victim].kill()
        cloud.kill_compute(victim)
        say(f"{victim} died: agent and nova-compute gone, its BMC still reports power ON")
        if args.kill_leader:
            lead.wait_log(rf"host={victim} fenced", timeout=120)
            lead.kill()
            say(f"SIGKILLed the leading controller {lead.name} right after the fence")
        survivor = [d for d in ctls if d.proc.poll() is None]
        procs.wait_for(lambda: any(re.search(rf"host={victim} recovered", d.read_log())
                                   for d in survivor), 600, "the recovery to finish")
        say(f"{victim} recovered; now repairing it: power on through its BMC, nova-compute "
            "and the agent start again")
        bmc_of[victim].set_power(True)
        cloud.start_compute(victim)
        agents[victim].start()
        procs.wait_for(lambda: any(re.search(rf"host={victim} back in service", d.read_log())
                                   for d in survivor), 600, f"{victim} to be re-enabled")
        time.sleep(2.0)  # let the last notifications arrive
        rows = []
        for d in ctls:
            rows.extend(_log_events(d, failed_at))
        rows.extend(recorder.events(failed_at))
        print()
        print(f"timeline (seconds since {victim} failed at {failed_at:%H:%M:%S.%f})")
        for at, who, msg in sorted(rows):
            print(f"  +{(at - failed_at).total_seconds():7.2f}s  {who:13s} {msg[:140]}")
        print()
        for sid, (name, policy) in zip(server_ids, plan, strict=True):
            s = conn.compute.get_server(sid)
            print(f"  {name:8s} policy={policy or 'ignore':8s} now on {s.compute_host} "
                  f"({s.status})")
        print()
        cli_conf = daemons.write_conf(os.path.join(work, "cli.conf"), base)
        cli = [os.path.join(BIN, "instanceha"), "--config-file", cli_conf, "incidents"]
        listed = json.loads(subprocess.run(cli + ["--host", victim, "--format", "json"],
                                           capture_output=True, text=True,
                                           check=True).stdout)
        print(f"the incident journal (instanceha incidents show {listed[0]['id']}):")
        shown = subprocess.run(cli + ["show", listed[0]["id"]], capture_output=True, text=True)
        print("  " + shown.stdout.rstrip().replace("\n", "\n  "))
        print()
        return 0
    finally:
        say("tearing down")
        if conn is not None:
            for sid in server_ids:
                try:
                    conn.compute.delete_server(sid)
                except Exception:  # noqa: S110 (tearing down)
                    pass
        if listener is not None:
            listener.kill()
            listener.wait()
        for d in started:
            d.terminate()
        for b in bmcs:
            b.stop()
        if cloud is not None:
            cloud.down(wipe=True)
        if zk is not None:
            zk.stop()
        if args.keep:
            say(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
