"""Guest failures on a real libvirtd with real QEMU (TCG), handled through the
mini-cloud's real Nova and notified on its real RabbitMQ.

compute1 of the mini-cloud gets a private libvirtd (tools/harness/libvirtd.py)
whose tiny guests (the project's own kernel + busybox initramfs, an i6300esb
watchdog, pvpanic) carry the UUIDs of fake-driver servers booted on compute1:
the domain UUID is the Nova instance id, as with Nova's libvirt driver. The
real instanceha-agent of compute1 watches that libvirtd, the real controller
acts; nothing is mocked. Only the two guests whose OS must run (the watchdog
feeder, the panic) boot to their init; the others only need a QEMU to kill.

One story, in order (the controllers allow 2 restarts per server per hour):

* a guest stops feeding its watchdog (policy restart): the leader hard-reboots
  its server through Nova (Nova's own action log shows the reboot) and says so
  on the bus (instanceha.instance.failed, reason watchdog, action reboot),
  versioned and valid against its schema;
* another guest's QEMU is SIGKILLed (policy notify): instance.failed with the
  server's project, reason stopped_failed, no reboot;
* a guest fills its disk, whose file lies on a full filesystem (policy
  notify): QEMU pauses it on the real ENOSPC (error_policy stop), the
  instance.failed says io_error with libvirt's facts (action pause, reason
  enospc, the disk's path and alias), the lifecycle pause that follows is
  seen by the agent and coalesced by the leader, no reboot;
* a server its owner stopped through Nova, whose QEMU then dies (policy
  restart): left alone, no start;
* libvirtd is stopped; a QEMU is killed while it is down; libvirtd starts
  again: the agent reports the lost connection, reconnects and reports the
  failure it missed (reconnect scan); the leader restarts that server;
* the watchdog guest powers itself off (shutdown_by_guest): rebooted again;
* one server's QEMU dies twice: two hard reboots;
* a server Nova is busy with (its owner's soft reboot, held by a frozen
  nova-compute: task_state rebooting) loses its QEMU: the failure waits; once
  Nova is done, the leader hard-reboots it;
* the controller is SIGKILLed; a guest panics (pvpanic: lifecycle crashed);
  the failure waits in ZooKeeper; a second controller takes over and restarts
  the server: nothing lost across the fail-over;
* the twice-rebooted server's QEMU dies a third time: the new leader reads the
  two restarts from ZooKeeper, gives up and says so (no third reboot);
* the incident journal, ``instanceha status``, the agent's and the controller's
  /metrics show all of it;
* controllers paused by an operator, a QEMU dies, then the host fails (its agent
  hangs): once resumed, the leader leaves the guest failure to the host
  recovery (no reboot).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.request

import pytest
import yaml
from harness import libvirtd, procs

from instanceha.notify import events as ev
from tests.functional.cloud import Bus
from tests.unit.notify import samples

pytestmark = pytest.mark.functional
BIN = os.path.dirname(sys.executable)
HOST = "compute1"
RESTART = {"instanceha:guest": "restart"}
NOTIFY = {"instanceha:guest": "notify"}
MAX_RESTARTS = 2
BOOTED = ("watchdog", "panic", "ioerror")
"""The guests whose OS must run; the others only need a QEMU to kill."""


def wait_for(predicate, timeout, what, interval=0.2):
    return procs.wait_for(predicate, timeout, what, interval=interval)


@pytest.fixture(scope="module")
def hypervisor():
    missing = libvirtd.available()
    assert missing is None, f"libvirt test stack incomplete ({missing}): run tools/install.sh"
    daemon = libvirtd.LibvirtDaemon().start()
    yield daemon
    daemon.close()


@pytest.fixture
def listener(minicloud, tmp_path):
    bus = Bus(tmp_path, minicloud.endpoints["transport_url"])
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


def failed_event(listener, sid, **payload):
    """The instance.failed of ``sid`` (with ``payload``), checked against its schema."""
    event = listener.wait(ev.INSTANCE_FAILED, instance_id=sid, **payload)[-1]
    samples.validate(event["event_type"], event["payload"])
    assert event["payload"]["version"] == ev.PAYLOAD_VERSION
    return event


def nova_idle(nova, sid):
    s = nova.server(sid)
    return s.task_state is None and s.vm_state == "active"


def actions(nova, sid, kind):
    return [a for a in nova.instance_actions(sid) if a.action == kind]


def start_controller(daemon_factory, minicloud, tmp_path, listener, name, port):
    inv = {"hosts": {h: {"driver": "fake", "address": f"fake-{h}"} for h in minicloud.hosts}}
    path = tmp_path / "fencing-inventory.yaml"
    path.write_text(yaml.safe_dump(inv))
    os.chmod(path, 0o600)
    extra = {
        "DEFAULT": {"host": name},
        "fencing": {"inventory_file": str(path), "test_only_allow_fake_driver": True},
        "nova": dict(minicloud.nova_options(), timeout=30),
        "controller": {"max_failed_percent": 100},
        "telemetry": {"controller_port": port},
        "guest": {"default_policy": "ignore", "max_restarts": MAX_RESTARTS, "coalesce": 3},
    }
    extra.update(listener.sections)
    ctl = daemon_factory("controller", name, extra=extra)
    ctl.wait_log(r"leadership gained", timeout=60)
    ctl.wait_log(rf"host={HOST} phase=\w+->HEALTHY", timeout=60)
    return ctl


@pytest.mark.fault("guest failures: watchdog fired, QEMU killed, guest panic, guest "
                   "power-off, disk I/O error (ENOSPC); libvirtd "
                   "restarted mid-test; Nova busy (task_state); restart limit; leader killed "
                   "before a guest failure; host failing",
                   component="libvirt",
                   expect="each failure reaches the leader through ZooKeeper and its policy "
                   "runs (Nova hard reboot, or notification with libvirt's I/O error facts); "
                   "an owner-stopped server is left "
                   "alone; a server Nova acts on waits; no more than max_restarts, then a "
                   "notification that instanceha gave up; the lost libvirt connection is "
                   "reported and the failure missed meanwhile is found by the reconnect scan; "
                   "nothing is lost across the controller fail-over; a failure on a host that "
                   "fails is left to the host recovery")
def test_guest_failures_reach_the_leader_and_each_policy_runs(
        healthy_cloud, minicloud, nova, admin, servers, hypervisor, daemon_factory, listener,
        zookeeper, root_path, cli, tmp_path, fault):
    policies = {"watchdog": RESTART, "killed": NOTIFY, "owner": RESTART, "outage": RESTART,
                "flappy": RESTART, "busy": RESTART, "panic": RESTART, "ioerror": NOTIFY}
    ids = {k: servers.boot(f"guest-{k}", HOST, meta).id for k, meta in policies.items()}
    # the ids are known at once: the guests boot while Nova builds the servers
    guests = {k: hypervisor.guest(f"dom-{k}", uuid=sid, start=k in BOOTED,
                                  failing_disk=k == "ioerror")
              for k, sid in ids.items()}
    for sid in ids.values():
        servers.wait_status(sid, "ACTIVE")
    project = nova.server(ids["killed"]).project_id
    admin.compute.stop_server(ids["owner"])  # its owner stops it on purpose
    servers.wait_status(ids["owner"], "SHUTOFF")

    agent_port = procs.free_port()
    agent = daemon_factory("agent", HOST, extra={
        "DEFAULT": {"host": HOST},
        "agent": {"watched_processes": "nova-compute:nova-compute1.conf",
                  "health_check_interval": 0.5},
        "guest": {"monitor": "true", "libvirt_uri": hypervisor.uri, "keepalive_interval": 1,
                  "keepalive_count": 2},
        "telemetry": {"agent_port": agent_port}})
    agent.wait_log(rf"libvirt \S+ connected: watching {len(ids)} domain\(s\)", timeout=30)
    port = procs.free_port()
    ctl = start_controller(daemon_factory, minicloud, tmp_path, listener, "ctl-1", port)
    for k in BOOTED:
        guests[k].wait_console("ih-guest: feeding the watchdog", timeout=180)

    # 1. the watchdog fires (the guest "hangs"): restart policy -> hard reboot via Nova
    assert actions(nova, ids["watchdog"], "reboot") == []
    guests["watchdog"].send("hang")
    guests["watchdog"].wait_console("stopped feeding the watchdog", timeout=30)
    p = failed_event(listener, ids["watchdog"])["payload"]
    assert (p["reason"], p["policy"], p["action"], p["host"]) == \
        ("watchdog", "restart", "reboot", HOST)
    assert p["detail"]["event"] == "watchdog" and p["detail"]["action"] == "none"
    assert p["detail"]["domain"] == "dom-watchdog"
    wait_for(lambda: actions(nova, ids["watchdog"], "reboot"), 30,
             "Nova to record the hard reboot")
    fault.observed(f"watchdog fired -> Nova hard reboot recorded; {p['note']}")

    # 2. QEMU killed: notify policy -> instance.failed with the owner's project, no reboot
    guests["killed"].start()
    guests["killed"].kill_qemu()
    p = failed_event(listener, ids["killed"])["payload"]
    assert (p["reason"], p["policy"], p["action"], p["project_id"]) == \
        ("stopped_failed", "notify", "none", project)
    assert (p["detail"]["state"], p["detail"]["detail"]) == ("stopped", "failed")
    assert actions(nova, ids["killed"], "reboot") == []

    # 2b. the guest's disk cannot grow (its file's filesystem is full): QEMU pauses it on
    # the ENOSPC; notify policy -> instance.failed with libvirt's I/O error facts
    disk = guests["ioerror"]
    disk.send("fill")
    disk.wait_console("ih-guest: filling /dev/vda", timeout=30)
    p = failed_event(listener, ids["ioerror"], reason="io_error")["payload"]
    assert (p["policy"], p["action"], p["project_id"]) == ("notify", "none", project)
    assert (p["detail"]["event"], p["detail"]["action"], p["detail"]["reason"],
            p["detail"]["path"]) == ("io_error", "pause", "enospc", disk.disk), p["detail"]
    assert p["detail"]["device"], p["detail"]
    assert disk.state() == (3, 5)  # VIR_DOMAIN_PAUSED, VIR_DOMAIN_PAUSED_IOERROR
    wait_for(lambda: metric(port, "instanceha_guest_failures_total", kind="paused_io_error",
                            outcome="coalesced") == 1.0, 30,
             "the leader to coalesce the lifecycle pause with the I/O error")
    assert metric(agent_port, "instanceha_agent_guest_failures_total",
                  kind="paused_io_error") == 1.0
    assert actions(nova, ids["ioerror"], "reboot") == []
    fault.observed("a disk that could not grow (ENOSPC): QEMU paused the guest; "
                   f"instance.failed io_error (action {p['detail']['action']}, reason "
                   f"{p['detail']['reason']}, device {p['detail']['device']}); the lifecycle "
                   "pause that followed was coalesced")

    # 3. stopped by its owner, then its QEMU dies: left alone, never started
    guests["owner"].start()
    guests["owner"].kill_qemu()
    ctl.wait_log(rf"guest failure of {ids['owner']} on {HOST} \(stopped_failed\): stopped "
                 "by its owner", timeout=30)
    assert actions(nova, ids["owner"], "start") == []
    assert nova.server(ids["owner"]).vm_state == "stopped"
    assert not listener.events(ev.INSTANCE_FAILED, instance_id=ids["owner"])

    # 4. libvirtd stops; a QEMU dies meanwhile; libvirtd starts: the agent reports the loss,
    # reconnects and reports what it missed
    guests["outage"].start()
    mark = agent.log_size()
    hypervisor.stop()
    agent.wait_log(r"libvirt connection to \S+ lost", timeout=30, after=mark)
    guests["outage"].kill_qemu()
    procs.wait_for(lambda: not procs.alive(guests["outage"].qemu_pid()), 10, "QEMU gone")
    assert metric(agent_port, "instanceha_agent_libvirt_connected") == 0.0
    hypervisor.start()
    agent.wait_log(r"libvirt \S+ reconnected", timeout=60, after=mark)
    p = failed_event(listener, ids["outage"])["payload"]
    assert (p["reason"], p["action"], p["detail"]["source"]) == \
        ("stopped_failed", "reboot", "reconnect_scan")
    wait_for(lambda: actions(nova, ids["outage"], "reboot"), 30, "the outage server's reboot")
    assert metric(agent_port, "instanceha_agent_libvirt_connection_losses_total") >= 1.0
    assert metric(agent_port, "instanceha_agent_libvirt_connected") == 1.0
    fault.observed("libvirtd stopped and started: connection loss logged and counted, the "
                   "QEMU killed meanwhile reported by the reconnect scan and restarted")

    # 4b. the watchdog guest powers itself off: shutdown_by_guest, its second (last) reboot
    guests["watchdog"].send("poweroff")
    p = failed_event(listener, ids["watchdog"], reason="shutdown_by_guest")["payload"]
    assert (p["action"], p["detail"]["state"], p["detail"]["detail"]) == \
        ("reboot", "shutdown", "guest")
    wait_for(lambda: len(actions(nova, ids["watchdog"], "reboot")) == 2, 30,
             "the powered-off server's reboot")

    # 5. one server's QEMU dies twice (each time after Nova is done with the last reboot
    # and past the coalescing): two hard reboots, the most the controllers allow
    for n in range(1, MAX_RESTARTS + 1):
        guests["flappy"].start()
        guests["flappy"].kill_qemu()
        wait_for(lambda n=n: len(actions(nova, ids["flappy"], "reboot")) == n
                 and nova_idle(nova, ids["flappy"]), 30, f"the flappy server's reboot {n}")
        p = failed_event(listener, ids["flappy"], action="reboot",
                         note=f"hard reboot (restart {n} of at most {MAX_RESTARTS} within "
                         "3600 s)")["payload"]
        last = actions(nova, ids["flappy"], "reboot")[0].start_time.timestamp()
        wait_for(lambda last=last: time.time() > last + 4, 10, "the reboot to be 4 s old")

    # 6. Nova is busy with the server (its owner's soft reboot, the compute frozen): the
    # failure waits for the task_state to clear, then the server is hard-rebooted
    compute = minicloud.pid(f"nova-{HOST}")
    guests["busy"].start()
    procs.freeze(compute)
    try:
        admin.compute.reboot_server(ids["busy"], "SOFT")
        wait_for(lambda: nova.server(ids["busy"]).task_state, 10, "the soft reboot's task_state")
        owner_reboot = actions(nova, ids["busy"], "reboot")
        assert len(owner_reboot) == 1
        began = owner_reboot[0].start_time.timestamp()
        wait_for(lambda: time.time() > began + 4, 10, "the owner's reboot to be 4 s old")
        mark = ctl.log_size()
        guests["busy"].kill_qemu()
        ctl.wait_log(rf"guest failure of {ids['busy']} on {HOST}: Nova is acting on the server "
                     r"\(task_state reboot\w*\): waiting", timeout=30, after=mark)
        assert len(actions(nova, ids["busy"], "reboot")) == 1
        assert not listener.events(ev.INSTANCE_FAILED, instance_id=ids["busy"])
    finally:
        procs.thaw(compute)
    p = failed_event(listener, ids["busy"], timeout=60)["payload"]
    assert (p["reason"], p["action"]) == ("stopped_failed", "reboot")
    assert len(actions(nova, ids["busy"], "reboot")) == 2
    fault.observed("a failure while Nova acted on the server (task_state) waited, then the "
                   "server was hard-rebooted")

    # 7. the leader dies; a guest panics; the failure waits in ZooKeeper for the next leader
    ctl.kill()
    mark = agent.log_size()
    guests["panic"].send("panic")
    agent.wait_log(rf"guest failure of {ids['panic']} queued for the leader", timeout=30,
                   after=mark)
    coord = zookeeper.coordinator("controller", root_path=root_path)
    coord.start()
    try:
        queued = [r for _, r in coord.guest_events() if r.get("instance_id") == ids["panic"]]
    finally:
        coord.stop()
    assert [r["kind"] for r in queued] == ["crashed"]
    assert actions(nova, ids["panic"], "reboot") == []
    port2 = procs.free_port()
    ctl2 = start_controller(daemon_factory, minicloud, tmp_path, listener, "ctl-2", port2)
    failed = failed_event(listener, ids["panic"], reason="crashed")
    assert (failed["payload"]["reason"], failed["payload"]["action"]) == ("crashed", "reboot")
    assert failed["publisher_id"].endswith("ctl-2")
    wait_for(lambda: actions(nova, ids["panic"], "reboot"), 30, "the panicked server's reboot")
    fault.observed("leader SIGKILLed before a guest panicked: the failure waited in "
                   "ZooKeeper; the next leader restarted the server")

    # 8. the flappy server's QEMU dies again: the new leader reads the restarts already
    # requested (ZooKeeper), gives up and says so; Nova sees no third reboot
    guests["flappy"].start()
    guests["flappy"].kill_qemu()
    p = failed_event(listener, ids["flappy"], action="none")["payload"]
    assert p["note"].startswith(f"gave up: already restarted {MAX_RESTARTS} time(s) within "
                                "3600 s"), p["note"]
    assert p["policy"] == "restart"
    assert len(actions(nova, ids["flappy"], "reboot")) == MAX_RESTARTS
    fault.observed(f"a third failure within the window: {p['note']}")

    # 9. what operators see: the journal, instanceha status, /metrics
    run = cli("incidents", "--format", "json")
    assert run.returncode in (0, 1), run.stderr
    by_instance = {}
    for i in json.loads(run.stdout):
        if i.get("instance_id"):
            by_instance.setdefault(i["instance_id"], []).append(i)
    assert [i["state"] for i in by_instance[ids["watchdog"]]] == ["closed", "closed"]
    assert [i.get("restarted") for i in by_instance[ids["watchdog"]]] == [1, 1]
    assert by_instance[ids["killed"]][0].get("notified") == 1
    assert by_instance[ids["owner"]][0].get("left_alone") == 1
    assert len(by_instance[ids["ioerror"]]) == 1 and by_instance[ids["ioerror"]][0].get(
        "notified") == 1
    show = cli("incidents", "show", by_instance[ids["ioerror"]][0]["id"], "--format", "json")
    kinds = [e["kind"] for e in json.loads(show.stdout)["entries"]]
    assert kinds[0] == "failure" and "coalesced" in kinds, kinds
    assert sorted(i["state"] for i in by_instance[ids["flappy"]]) == \
        ["closed"] * MAX_RESTARTS + ["gave-up"]
    show = cli("incidents", "show", by_instance[ids["panic"]][0]["id"], "--format", "json")
    kinds = [e["kind"] for e in json.loads(show.stdout)["entries"]]
    assert kinds[0] == "failure" and kinds[-1] == "restarted", kinds
    show = cli("incidents", "show", by_instance[ids["busy"]][0]["id"], "--format", "json")
    kinds = [e["kind"] for e in json.loads(show.stdout)["entries"]]
    assert kinds[0] == "waiting" and kinds[-1] == "restarted", kinds
    status = wait_for(lambda: (r := cli("status", "--format", "json")).returncode in (0, 1)
                      and (d := json.loads(r.stdout)).get("leader") == "ctl-2"
                      and d.get("guests", {}).get("recent") and d, 30, "ctl-2's status")
    assert status["hosts"][HOST]["guest_monitor"]["state"] == "connected"
    assert {ids["panic"], ids["flappy"]} <= {r["instance_id"] for r in status["guests"]["recent"]}
    table = cli("status")
    assert "GUEST FAILURES" in table.stdout and ids["panic"][:8] in table.stdout
    assert metric(port2, "instanceha_guest_failures_total", kind="crashed",
                  outcome="restarted") == 1.0
    assert metric(port2, "instanceha_guest_failures_total", kind="stopped_failed",
                  outcome="gave_up") == 1.0
    assert metric(agent_port, "instanceha_agent_guest_failures_total", kind="watchdog") >= 1.0
    assert metric(agent_port, "instanceha_agent_guest_failures_total",
                  kind="stopped_failed") >= 6.0

    # 10. a guest failure on a host that then fails is left to the host recovery
    guests["watchdog"].start()  # powered off in 4b
    mark, agent_mark = ctl2.log_size(), agent.log_size()
    assert cli("pause", "--reason", "guest test").returncode == 0
    ctl2.wait_log("guest failures: paused by an operator", timeout=30, after=mark)
    guests["watchdog"].kill_qemu()
    agent.wait_log(rf"guest failure of {ids['watchdog']} queued for the leader", timeout=30,
                   after=agent_mark)
    agent.freeze()  # the host fails (its agent hangs, its address goes silent) before the
    minicloud.silence(HOST)  # leader handles it (an answering address: AGENT_DOWN, alive)
    try:
        ctl2.wait_log(rf"host={HOST} phase=\w+->FAILED", timeout=30, after=mark)
        assert cli("resume").returncode == 0
        ctl2.wait_log(rf"guest failure of {ids['watchdog']} on {HOST} \(stopped_failed\): host "
                      rf"{HOST} is FAILED: left to the host recovery", timeout=30, after=mark)
        assert len(actions(nova, ids["watchdog"], "reboot")) == 2
        assert metric(port2, "instanceha_guest_failures_total", kind="stopped_failed",
                      outcome="host_failing") == 1.0
    finally:
        minicloud.restore(HOST)
        agent.thaw()
    fault.observed("a guest failure queued before its host failed: left to the host recovery")
    ctl2.terminate()
    agent.terminate()
