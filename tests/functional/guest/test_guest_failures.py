"""Guest failures on a real libvirtd with real QEMU (TCG), handled through the
mini-cloud's real Nova and notified on its real RabbitMQ.

compute1 of the mini-cloud gets a private libvirtd (tools/harness/libvirtd.py)
whose tiny guests (the project's own kernel + busybox initramfs, an i6300esb
watchdog, pvpanic) carry the UUIDs of fake-driver servers booted on compute1:
the domain UUID is the Nova instance id, as with Nova's libvirt driver. The
real instanceha-agent of compute1 watches that libvirtd, the real controller
acts; nothing is mocked.

One story, in order:

* a guest stops feeding its watchdog (policy restart): the leader hard-reboots
  its server through Nova (Nova's own action log shows the reboot) and says so
  on the bus (instanceha.instance.failed, reason watchdog, action reboot);
* another guest's QEMU is SIGKILLed (policy notify): instance.failed with the
  server's project, reason stopped_failed, no reboot;
* a server its owner stopped through Nova, whose QEMU then dies (policy
  restart): left alone, no start;
* libvirtd is stopped; a QEMU is killed while it is down; libvirtd starts
  again: the agent reports the lost connection, reconnects and reports the
  failure it missed (reconnect scan); the leader restarts that server;
* the controller is SIGKILLed; a guest panics (pvpanic: lifecycle crashed);
  the failure waits in ZooKeeper; a second controller takes over and restarts
  the server: nothing lost across the fail-over;
* the incident journal, ``instanceha status``, the agent's and the controller's
  /metrics show all of it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request

import pytest
import yaml
from harness import daemons, libvirtd, procs

from instanceha import coordination
from instanceha.notify import events as ev

pytestmark = pytest.mark.functional
BIN = os.path.dirname(sys.executable)
HOST = "compute1"
RESTART = {"instanceha:guest": "restart"}
NOTIFY = {"instanceha:guest": "notify"}


def wait_for(predicate, timeout, what, interval=0.2):
    return procs.wait_for(predicate, timeout, what, interval=interval)


@pytest.fixture(scope="module")
def hypervisor():
    missing = libvirtd.available()
    assert missing is None, f"libvirt test stack incomplete ({missing}): run tools/install.sh"
    daemon = libvirtd.LibvirtDaemon().start()
    yield daemon
    daemon.close()


class Listener:
    """``instanceha listen`` as a process: every notification, one JSON line each."""

    def __init__(self, tmp_path, transport_url):
        self.sections = {"DEFAULT": {"transport_url": transport_url},
                         "oslo_messaging_notifications": {"driver": "messagingv2"}}
        conf = daemons.write_conf(str(tmp_path / "listen.conf"), self.sections)
        self.path = tmp_path / "events.jsonl"
        self.out = open(self.path, "w")
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "instanceha"), "--config-file", conf, "listen", "--format",
             "json", "--timeout", "900"], stdout=self.out, stderr=subprocess.DEVNULL)

    def events(self, kind, **payload):
        lines = [json.loads(x) for x in self.path.read_text().splitlines() if x.strip()]
        return [e for e in lines if e.get("event_type") == kind
                and all(e["payload"].get(k) == v for k, v in payload.items())]

    def wait(self, kind, timeout=60, **payload):
        return wait_for(lambda: self.events(kind, **payload), timeout,
                        f"{kind} {payload} on the bus")

    def close(self):
        self.proc.kill()
        self.proc.wait()
        self.out.close()


@pytest.fixture
def listener(minicloud, tmp_path):
    bus = Listener(tmp_path, minicloud.endpoints["transport_url"])
    yield bus
    bus.close()


def metrics_text(port) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def metric(port, name, **labels) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = rf"^{re.escape(name)}{{{re.escape(want)}}} (\S+)$" if labels \
        else rf"^{re.escape(name)} (\S+)$"
    m = re.search(pattern, metrics_text(port), re.M)
    return float(m.group(1)) if m else None


def actions(nova, sid, kind):
    return [a for a in nova.instance_actions(sid) if a.action == kind]


def start_controller(daemon_factory, minicloud, tmp_path, listener, name, port):
    inv = {"hosts": {h: {"driver": "fake", "address": f"fake-{h}"} for h in minicloud.hosts}}
    path = tmp_path / "fencing-inventory.yaml"
    path.write_text(yaml.safe_dump(inv))
    os.chmod(path, 0o600)
    extra = {
        "DEFAULT": {"host": name},
        "fencing": {"inventory_file": str(path)},
        "nova": dict(minicloud.nova_options(), timeout=30),
        "controller": {"max_failed_percent": 100},
        "telemetry": {"controller_port": port},
        "guest": {"default_policy": "ignore", "max_restarts": 3, "coalesce": 3},
    }
    extra.update(listener.sections)
    ctl = daemon_factory("controller", name, extra=extra)
    ctl.wait_log(r"leadership gained", timeout=60)
    ctl.wait_log(rf"host={HOST} phase=\w+->HEALTHY", timeout=60)
    return ctl


@pytest.mark.fault("guest failures: watchdog fired, QEMU killed, guest panic; libvirtd "
                   "restarted mid-test; leader killed before a guest failure",
                   component="libvirt",
                   expect="each failure reaches the leader through ZooKeeper and its policy "
                   "runs (Nova hard reboot, or notification); an owner-stopped server is left "
                   "alone; the lost libvirt connection is reported and the failure missed "
                   "meanwhile is found by the reconnect scan; nothing is lost across the "
                   "controller fail-over")
def test_guest_failures_reach_the_leader_and_each_policy_runs(
        minicloud, nova, admin, servers, hypervisor, daemon_factory, listener, zookeeper,
        root_path, cli, tmp_path, fault):
    boot = {"watchdog": servers.boot("guest-watchdog", HOST, RESTART),
            "killed": servers.boot("guest-killed", HOST, NOTIFY),
            "owner": servers.boot("guest-owner", HOST, RESTART),
            "outage": servers.boot("guest-outage", HOST, RESTART),
            "panic": servers.boot("guest-panic", HOST, RESTART)}
    ids = {k: s.id for k, s in boot.items()}
    for sid in ids.values():
        servers.wait_status(sid, "ACTIVE")
    project = nova.server(ids["killed"]).project_id
    admin.compute.stop_server(ids["owner"])  # its owner stops it on purpose
    servers.wait_status(ids["owner"], "SHUTOFF")
    guests = {k: hypervisor.guest(f"dom-{k}", uuid=sid) for k, sid in ids.items()}
    for g in guests.values():
        g.wait_console("ih-guest: feeding the watchdog", timeout=180)

    agent_port = procs.free_port()
    agent = daemon_factory("agent", HOST, extra={
        "DEFAULT": {"host": HOST},
        "agent": {"watched_processes": "nova-compute:nova-compute1.conf",
                  "health_check_interval": 0.5},
        "guest": {"monitor": "true", "libvirt_uri": hypervisor.uri, "keepalive_interval": 1,
                  "keepalive_count": 2},
        "telemetry": {"agent_port": agent_port}})
    agent.wait_log(r"libvirt \S+ connected: watching 5 domain\(s\)", timeout=30)
    port = procs.free_port()
    ctl = start_controller(daemon_factory, minicloud, tmp_path, listener, "ctl-1", port)

    # 1. the watchdog fires (the guest "hangs"): restart policy -> hard reboot via Nova
    assert actions(nova, ids["watchdog"], "reboot") == []
    guests["watchdog"].send("hang")
    guests["watchdog"].wait_console("stopped feeding the watchdog", timeout=30)
    failed = listener.wait(ev.INSTANCE_FAILED, instance_id=ids["watchdog"])[0]
    p = failed["payload"]
    assert (p["reason"], p["policy"], p["action"], p["host"]) == \
        ("watchdog", "restart", "reboot", HOST)
    assert p["detail"]["event"] == "watchdog" and p["detail"]["action"] == "none"
    assert p["detail"]["domain"] == "dom-watchdog"
    wait_for(lambda: actions(nova, ids["watchdog"], "reboot"), 30,
             "Nova to record the hard reboot")
    fault.observed(f"watchdog fired -> Nova hard reboot recorded; {p['note']}")

    # 2. QEMU killed: notify policy -> instance.failed with the owner's project, no reboot
    guests["killed"].kill_qemu()
    failed = listener.wait(ev.INSTANCE_FAILED, instance_id=ids["killed"])[0]
    p = failed["payload"]
    assert (p["reason"], p["policy"], p["action"], p["project_id"]) == \
        ("stopped_failed", "notify", "none", project)
    assert (p["detail"]["state"], p["detail"]["detail"]) == ("stopped", "failed")

    # 3. stopped by its owner, then its QEMU dies: left alone, never started
    guests["owner"].kill_qemu()
    ctl.wait_log(rf"guest failure of {ids['owner']} on {HOST} \(stopped_failed\): stopped "
                 "by its owner", timeout=30)
    assert actions(nova, ids["owner"], "start") == []
    assert nova.server(ids["owner"]).vm_state == "stopped"
    assert not listener.events(ev.INSTANCE_FAILED, instance_id=ids["owner"])

    # 4. libvirtd stops; a QEMU dies meanwhile; libvirtd starts: the agent reports the loss,
    # reconnects and reports what it missed
    mark = agent.log_size()
    hypervisor.stop()
    agent.wait_log(r"libvirt connection to \S+ lost", timeout=30, after=mark)
    guests["outage"].kill_qemu()
    procs.wait_for(lambda: not procs.alive(guests["outage"].qemu_pid()), 10, "QEMU gone")
    assert metric(agent_port, "instanceha_agent_libvirt_connected") == 0.0
    hypervisor.start()
    agent.wait_log(r"libvirt \S+ reconnected", timeout=60, after=mark)
    failed = listener.wait(ev.INSTANCE_FAILED, instance_id=ids["outage"])[0]
    p = failed["payload"]
    assert (p["reason"], p["action"], p["detail"]["source"]) == \
        ("stopped_failed", "reboot", "reconnect_scan")
    wait_for(lambda: actions(nova, ids["outage"], "reboot"), 30, "the outage server's reboot")
    assert metric(agent_port, "instanceha_agent_libvirt_connection_losses_total") >= 1.0
    assert metric(agent_port, "instanceha_agent_libvirt_connected") == 1.0
    fault.observed("libvirtd stopped and started: connection loss logged and counted, the "
                   "QEMU killed meanwhile reported by the reconnect scan and restarted")

    # 5. the leader dies; a guest panics; the failure waits in ZooKeeper for the next leader
    ctl.kill()
    mark = agent.log_size()
    guests["panic"].send("panic")
    agent.wait_log(rf"guest failure of {ids['panic']} queued for the leader", timeout=30,
                   after=mark)
    coord = coordination.get_coordinator(zookeeper.url, root_path=root_path)
    coord.start()
    try:
        queued = [r for _, r in coord.guest_events() if r.get("instance_id") == ids["panic"]]
    finally:
        coord.stop()
    assert [r["kind"] for r in queued] == ["crashed"]
    assert actions(nova, ids["panic"], "reboot") == []
    port2 = procs.free_port()
    ctl2 = start_controller(daemon_factory, minicloud, tmp_path, listener, "ctl-2", port2)
    failed = listener.wait(ev.INSTANCE_FAILED, instance_id=ids["panic"], reason="crashed")[0]
    assert (failed["payload"]["reason"], failed["payload"]["action"]) == ("crashed", "reboot")
    assert failed["publisher_id"].endswith("ctl-2")
    wait_for(lambda: actions(nova, ids["panic"], "reboot"), 30, "the panicked server's reboot")
    fault.observed("leader SIGKILLed before a guest panicked: the failure waited in "
                   "ZooKeeper; the next leader restarted the server")

    # 6. what operators see: the journal, instanceha status, /metrics
    run = cli("incidents", "--format", "json")
    assert run.returncode in (0, 1), run.stderr
    incidents = {i["instance_id"]: i for i in json.loads(run.stdout) if i.get("instance_id")}
    assert incidents[ids["watchdog"]]["state"] == "closed"
    assert incidents[ids["watchdog"]].get("restarted") == 1
    assert incidents[ids["killed"]].get("notified") == 1
    assert incidents[ids["owner"]].get("left_alone") == 1
    show = cli("incidents", "show", incidents[ids["panic"]]["id"], "--format", "json")
    kinds = [e["kind"] for e in json.loads(show.stdout)["entries"]]
    assert kinds[0] == "failure" and kinds[-1] == "restarted", kinds
    status = wait_for(lambda: (r := cli("status", "--format", "json")).returncode in (0, 1)
                      and (d := json.loads(r.stdout)).get("leader") == "ctl-2"
                      and d.get("guests", {}).get("recent") and d, 30, "ctl-2's status")
    assert status["hosts"][HOST]["guest_monitor"]["state"] == "connected"
    assert ids["panic"] in {r["instance_id"] for r in status["guests"]["recent"]}
    table = cli("status")
    assert "GUEST FAILURES" in table.stdout and ids["panic"][:8] in table.stdout
    assert metric(port2, "instanceha_guest_failures_total", kind="crashed",
                  outcome="restarted") == 1.0
    assert metric(agent_port, "instanceha_agent_guest_failures_total", kind="watchdog") >= 1.0
    ctl2.terminate()
    agent.terminate()
