"""The whole product on real parts: a compute dies, instanceha fences it over
IPMI, forces it down, evacuates the opted-in servers, tells the owners of the
notify-only ones on the bus, and re-enables the host once it is back.

The servers belong to two tenants, each with a member-role user who created
Aodh event alarms with a webhook: each tenant hears exactly its own
instances' events (through Ceilometer, with instanceha's shipped event
definitions, and Aodh), never the other's, and no host event.

Real: ZooKeeper, the mini-cloud's Nova (fake virt driver), RabbitMQ,
Keystone, Ceilometer's notification agent and Aodh, OpenIPMI's ipmi_sim as
compute1's BMC, and instanceha's own agents, controller and ``instanceha
listen`` as processes.
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
from harness.telemetry import Emitter, Webhook

from instanceha.engine import marker as mk
from instanceha.notify import events

from .conftest import Servers, ensure_healthy, wait_for

pytestmark = pytest.mark.functional
BIN = os.path.dirname(sys.executable)


def _marker(nova, host):
    return nova.service(host).marker


TENANTS = ("vnf-a", "vnf-b")
EVAC_START, EVAC_END = "instanceha.instance.evacuate.start", "instanceha.instance.evacuate.end"
REQUIRED = "instanceha.instance.recovery_required"


def _tenant_alarms(telemetry, hook):
    """Two projects, each with a member-role user who creates, through Aodh's
    API, an alarm on instanceha's per-instance events of its project and one
    on every instanceha event (Aodh must still keep the others' out)."""
    made = {}
    for name in TENANTS:
        t = telemetry.tenant(name)
        t.event_alarm(f"{name}-instances", "instanceha.instance.*", hook.url(f"{name}/instances"),
                      query=({"field": "traits.project_id", "op": "eq", "type": "string",
                              "value": t.project_id},))
        t.event_alarm(f"{name}-everything", "instanceha.*", hook.url(f"{name}/all"))
        assert len(t.alarms()) == 2  # a member sees its project's alarms
        made[name] = t
    return made


@pytest.fixture
def tenant_alarms(telemetry, minicloud):
    """(webhook, {name: Tenant}, {name: Servers booted into its project}); the
    servers, projects and users are deleted afterwards, whatever happened (a
    server left on a compute would land in a later test's recovery)."""
    hook = Webhook()
    owned = {}
    try:
        tenants = _tenant_alarms(telemetry, hook)
        owned = {name: Servers(telemetry.admin_in(t), minicloud.endpoints)
                 for name, t in tenants.items()}
        yield hook, tenants, owned
    finally:
        hook.close()
        for made in owned.values():
            made.delete_all()
        telemetry.delete_tenants()


def _delivered(hook, path):
    return {(e["event_type"], e["traits"].get("instance_id")) for e in hook.events(path)}


def test_failed_compute_is_fenced_evacuated_notified_and_reenabled(
        minicloud, nova, servers, daemon_factory, tmp_path, telemetry, tenant_alarms):
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

    hook, tenants, owned = tenant_alarms

    # servers on the victim: per tenant one opted in and one notify-only (the
    # admin boots them into the tenant's project: only an admin picks the
    # host), and one of the admin's own, left alone
    mine = {}
    for name, made in owned.items():
        mine[name] = (made.boot(f"e2e-{name}-evacuate", victim,
                                metadata={"instanceha:recovery": "evacuate"}),
                      made.boot(f"e2e-{name}-notify", victim,
                                metadata={"instanceha:recovery": "notify"}))
    (a, b), (a2, b2) = mine["vnf-a"], mine["vnf-b"]
    c = servers.boot("e2e-ignore", victim)
    for s in (a, b, a2, b2, c):
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
                        "poll_interval": 0.2, "test_only_allow_fake_driver": True},
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
        minicloud.kill_host(victim)

        ctl.wait_log(rf"host={victim} phase=\w+->FAILED", timeout=60)
        ctl.wait_log(rf"host={victim} fenced: ipmi read back off", timeout=90)
        assert not bmc.powered_on()  # really powered off, and read back
        svc = wait_for(lambda: (s := nova.service(victim)).forced_down and s, 60,
                       "the victim forced down")
        assert svc.disabled and svc.marker is not None

        m = wait_for(lambda: (x := _marker(nova, victim)) and
                     x.state is mk.MarkerState.RECOVERED and x, 300, "recovery to finish")
        assert "2 evacuated, 0 failed, 2 notified" in m.note

        for evacuated in (a, a2):
            moved = servers.wait_status(evacuated.id, "ACTIVE")
            assert moved.compute_host != victim
            migrations = nova.evacuations(evacuated.id)
            assert migrations and migrations[0].status in ("done", "completed")
        for kept in (b, b2, c):  # notify-only and not opted in: never moved
            assert nova.server(kept.id).host == victim
            assert not nova.evacuations(kept.id)

        def recovery_required():
            lines = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()
                     if x.strip()]
            return [e for e in lines if e.get("event_type", "").endswith("recovery_required")
                    and e["payload"]["instance_id"] == b.id]

        (event,) = wait_for(recovery_required, 30, "recovery_required on the bus")
        assert event["payload"]["host"] == victim and event["payload"]["host_fenced"] is True
        assert event["payload"]["project_id"] == tenants["vnf-a"].project_id

        _each_tenant_heard_only_its_own(telemetry, hook, tenants, mine, tmp_path, victim, ep)

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


def _each_tenant_heard_only_its_own(telemetry, hook, tenants, mine, tmp_path, victim, ep):
    """Each tenant's webhooks got its evacuated instance's start and end and its
    notify-only instance's recovery_required, and nothing else: none of the
    other tenant's, no host event (host.failed went through Ceilometer, with
    no project, and reached no alarm)."""
    expected = {name: {(EVAC_START, evac.id), (EVAC_END, evac.id), (REQUIRED, notify.id)}
                for name, (evac, notify) in mine.items()}
    for name in TENANTS:
        for path in (f"{name}/instances", f"{name}/all"):
            hook.wait(lambda h, p=path, n=name: expected[n] <= _delivered(h, p), 120,
                      f"{path}: {sorted(expected[name])} (got {sorted(_delivered(hook, path))})")
    # a barrier: one more event per tenant, emitted after all of the failure's;
    # once each is at its webhook, a misrouted earlier event would be there too
    bus = Emitter(ep["transport_url"])
    try:
        for name, t in tenants.items():
            bus.emit(events.recovery_required(host=victim, incident_id="barrier",
                                              instance_id=f"barrier-{name}",
                                              project_id=t.project_id, dry_run=True))
    finally:
        bus.close()
    for name in TENANTS:
        for path in (f"{name}/instances", f"{name}/all"):
            hook.wait(lambda h, p=path, n=name: (REQUIRED, f"barrier-{n}") in _delivered(h, p),
                      120, f"the barrier event at {path}")
            got = _delivered(hook, path) - {(REQUIRED, f"barrier-{name}")}
            assert got == expected[name], (path, sorted(got))
        for e in hook.events(f"{name}/all"):
            assert e["traits"]["project_id"] == tenants[name].project_id
            assert e["event_type"].startswith("instanceha.instance.")
            want = "notify" if e["event_type"] == REQUIRED else "evacuate"
            if e["traits"]["instance_id"] != f"barrier-{name}":
                assert e["traits"]["policy"] == want and e["traits"]["host"] == victim
    # host.failed: converted by Ceilometer (host and reason, no project), heard by no
    # tenant. Matched by message_id: the incident id is not unique across sessions
    # on a reused cloud, and a controller may announce the host more than once
    lines = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()
             if x.strip()]
    failed = [e for e in lines if e["event_type"] == "instanceha.host.failed"
              and e["payload"]["host"] == victim][0]
    converted = wait_for(lambda: telemetry.converted_message(failed["message_id"]), 60,
                         "Ceilometer's event of host.failed")[0]
    assert converted["event_type"] == "instanceha.host.failed"
    assert converted["traits"]["incident_id"] == failed["payload"]["incident_id"]
    assert converted["traits"]["reason"] == failed["payload"]["reason"]
    assert "project_id" not in converted["traits"] and "tenant_id" not in converted["traits"]
    assert not [e for e in hook.events() if not e["event_type"].startswith("instanceha.instance.")]
