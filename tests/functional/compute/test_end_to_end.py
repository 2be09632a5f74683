"""The whole product on real parts: a compute dies, instanceha fences it over
IPMI, forces it down, evacuates the opted-in servers, tells the owners of the
notify-only ones on the bus, and re-enables the host once it is back.

Real: ZooKeeper, the mini-cloud's Nova (fake virt driver) and RabbitMQ,
OpenIPMI's ipmi_sim as compute1's BMC, and instanceha's own agents,
controller and ``instanceha listen`` as processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from harness import daemons
from harness.bmc import IpmiSimBMC

from instanceha.engine import marker as mk

from .conftest import ensure_healthy, wait_for

pytestmark = pytest.mark.functional
BIN = os.path.dirname(sys.executable)


def _marker(nova, host):
    return nova.service(host).marker


def test_failed_compute_is_fenced_evacuated_notified_and_reenabled(
        minicloud, nova, servers, daemon_factory, tmp_path):
    ensure_healthy(minicloud, nova)
    ep = minicloud.endpoints
    hosts = minicloud.hosts
    victim = hosts[0]

    # compute1's BMC: ipmi_sim; the others get in-memory BMCs (never fenced here)
    bmc = IpmiSimBMC(str(tmp_path), name=f"bmc-{victim}", password="bmc-Secret-1").start()
    inventory = {"hosts": {h: {"driver": "fake", "address": f"fake-{h}"} for h in hosts}}
    inventory["hosts"][victim] = bmc.entry(timeout=3)
    inv_path = tmp_path / "fencing-inventory.yaml"
    inv_path.write_text(yaml.safe_dump(inventory))
    os.chmod(inv_path, 0o600)

    # servers on the victim: one opted in, one notify-only, one left alone
    a = servers.boot("e2e-evacuate", victim, metadata={"instanceha:recovery": "evacuate"})
    b = servers.boot("e2e-notify", victim, metadata={"instanceha:recovery": "notify"})
    c = servers.boot("e2e-ignore", victim)
    for s in (a, b, c):
        servers.wait_status(s.id, "ACTIVE")

    agents = {}
    for h in hosts:
        n = h[len("compute"):]
        agents[h] = daemon_factory("agent", h, extra={"agent": {
            "watched_processes": f"nova-compute:nova-compute{n}.conf",
            "health_check_interval": 0.5}})

    bus = {"DEFAULT": {"transport_url": ep["transport_url"]},
           "oslo_messaging_notifications": {"driver": "messagingv2"}}
    listener_conf = daemons.write_conf(str(tmp_path / "listen.conf"), bus)
    events_out = open(tmp_path / "events.jsonl", "w")
    listener = subprocess.Popen(
        [os.path.join(BIN, "instanceha"), "--config-file", listener_conf, "listen",
         "--format", "json", "--timeout", "600"],
        stdout=events_out, stderr=subprocess.DEVNULL)
    try:
        ctl = daemon_factory("controller", "ctl-e2e", extra=dict(bus, **{
            "fencing": {"inventory_file": str(inv_path), "deadline": 20,
                        "poll_interval": 0.2},
            "nova": dict(minicloud.nova_options(), timeout=30, evacuation_timeout=120,
                         poll_interval=0.5),
            "controller": {"max_failed_percent": 100},
        }))
        ctl.wait_log(r"leadership gained")
        for h in hosts:
            ctl.wait_log(rf"host={h} phase=\w+->HEALTHY", timeout=60)

        # compute1 dies: agent and nova-compute gone, its BMC still says ON
        assert bmc.powered_on()
        agents[victim].kill()
        minicloud.kill_compute(victim)

        ctl.wait_log(rf"host={victim} phase=\w+->FAILED", timeout=60)
        ctl.wait_log(rf"host={victim} fenced: ipmi read back off", timeout=90)
        assert not bmc.powered_on()  # really powered off, and read back
        svc = wait_for(lambda: (s := nova.service(victim)).forced_down and s, 60,
                       "the victim forced down")
        assert svc.disabled and svc.marker is not None

        m = wait_for(lambda: (x := _marker(nova, victim)) and
                     x.state is mk.MarkerState.RECOVERED and x, 300, "recovery to finish")
        assert "1 evacuated, 0 failed, 1 notified" in m.note

        moved = servers.wait_status(a.id, "ACTIVE")
        assert moved.compute_host != victim
        migrations = nova.evacuations(a.id)
        assert migrations and migrations[0].status in ("done", "completed")
        for kept in (b, c):  # notify-only and not opted in: never moved
            assert nova.server(kept.id).host == victim
            assert not nova.evacuations(kept.id)

        def recovery_required():
            lines = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()
                     if x.strip()]
            return [e for e in lines if e.get("event_type", "").endswith("recovery_required")
                    and e["payload"]["instance_id"] == b.id]

        (event,) = wait_for(recovery_required, 30, "recovery_required on the bus")
        assert event["payload"]["host"] == victim and event["payload"]["host_fenced"] is True
        assert event["payload"]["project_id"]

        # the host is repaired: power on, nova-compute and the agent come back
        bmc.set_power(True)
        minicloud.start_compute(victim)
        n = victim[len("compute"):]
        daemon_factory("agent", f"{victim}-back", extra={
            "DEFAULT": {"host": victim},
            "agent": {"watched_processes": f"nova-compute:nova-compute{n}.conf",
                      "health_check_interval": 0.5}})
        ctl.wait_log(rf"host={victim} back in service", timeout=240)
        svc = nova.service(victim)
        assert not svc.forced_down and not svc.disabled
        text = ctl.read_log()
        assert "bmc-Secret-1" not in text and ep["auth"]["password"] not in text
    finally:
        listener.kill()
        listener.wait()
        events_out.close()
        bmc.stop()
        ensure_healthy(minicloud, nova)
