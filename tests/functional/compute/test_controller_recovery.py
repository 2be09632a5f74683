"""The real controller daemon recovers a failed compute of the mini-cloud.

* the whole mix (keep-running, notify-only, not opted in, SHUTOFF, ERROR,
  locked, booted from a Cinder volume) on one compute: it dies (agent and
  nova-compute stop, its ipmi_sim BMC is powered off by the controller),
  every server's final host, state and migration are checked (and the
  volume-backed server's volume is attached to it on its new host), then the
  host comes back and is re-enabled;
* reserved spares: compute2 and compute3 are reserved (``instanceha host
  reserve``), only compute3 shares an aggregate with compute1; compute1 dies
  and its servers land on compute3, which is enabled and stays in service;
* what the operators' Prometheus sees of the whole-mix failure: a real
  Prometheus scrapes both controllers (leader and hot standby) and the agents
  with the shipped alert rules; nothing is pending or firing on the healthy
  cloud, ``InstanceHAHostFailed`` fires for the failed host (and nothing else
  does) and resolves once it is back; every rule evaluates on series that exist
  with its labels, every query of the Grafana dashboard returns numbers, and
  ``promtool check metrics`` finds nothing in the daemons' /metrics;
* no room: a server no host has room for is not sent to Nova (its 'No valid
  host' would leave it in ERROR): it is reported (log,
  ``instanceha.instance.evacuate.deferred`` on the bus) and waits on the fenced
  host, which stays RECOVERING; the others move; once a filler is deleted it
  moves too (see also test_capacity.py).

Real: ZooKeeper, Nova with the fake virt driver, Cinder with its fake
(logging) volume driver, RabbitMQ, ipmi_sim, Prometheus, and
instanceha's agents, controller and ``instanceha listen`` as processes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request

import pytest
import yaml
from harness import procs
from harness.bmc import IpmiSimBMC

from instanceha.engine import marker as mk
from instanceha.notify import events as ev
from tests.functional import monitoring
from tests.functional.cloud import Bus
from tests.functional.monitoring import prometheus  # noqa: F401 - a fixture

from .conftest import ensure_healthy, wait_for

pytestmark = pytest.mark.functional
BIN = os.path.dirname(sys.executable)
KEEP = {"instanceha:recovery": "evacuate"}


@pytest.fixture
def bus(minicloud, tmp_path):
    listener = Bus(tmp_path, minicloud.endpoints["transport_url"])
    yield listener
    listener.close()


@pytest.fixture
def victim_bmc(tmp_path):
    """compute1's BMC: OpenIPMI's ipmi_sim (stopped even when the test fails early)."""
    bmc = IpmiSimBMC(str(tmp_path), name="bmc-compute1", password="bmc-Secret-2").start()
    yield bmc
    bmc.stop()


def metric(port, name, **labels) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{re.escape(name)}{{{re.escape(want)}}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def inventory(tmp_path, hosts, bmcs):
    """Fake BMCs, except the real ones given (ipmi_sim)."""
    inv = {"hosts": {h: {"driver": "fake", "address": f"fake-{h}"} for h in hosts}}
    for host, bmc in bmcs.items():
        inv["hosts"][host] = bmc.entry(timeout=3)
    path = tmp_path / "fencing-inventory.yaml"
    path.write_text(yaml.safe_dump(inv))
    os.chmod(path, 0o600)
    return str(path)


def agent(daemon_factory, host, name=None):
    n = host[len("compute"):]
    return daemon_factory("agent", name or host, extra={
        "DEFAULT": {"host": host},
        "agent": {"watched_processes": f"nova-compute:nova-compute{n}.conf",
                  "health_check_interval": 0.5}})


def controller(daemon_factory, minicloud, inv, port, bus=None, env=None, name="ctl",
               standby=False, **sections):
    extra = {
        "fencing": {"inventory_file": inv, "deadline": 20, "poll_interval": 0.2,
                    "test_only_allow_fake_driver": True},  # inventory(): fake BMCs
        "nova": dict(minicloud.nova_options(), timeout=30, evacuation_timeout=120,
                     evacuation_attempts=2, poll_interval=0.5),
        "controller": {"max_failed_percent": 100},
        "telemetry": {"controller_port": port},
    }
    if bus is not None:
        extra.update(bus.sections)
    for group, values in sections.items():
        extra.setdefault(group, {}).update(values)
    ctl = daemon_factory("controller", name, extra=extra, env=env)
    if not standby:
        ctl.wait_log(r"leadership gained", timeout=60)
    for h in minicloud.hosts:
        ctl.wait_log(rf"host={h} phase=\w+->HEALTHY", timeout=60)
    return ctl


def recovered(nova, host, timeout=300):
    return wait_for(lambda: (m := nova.service(host).marker) and
                    m.state is mk.MarkerState.RECOVERED and m, timeout,
                    f"the recovery of {host} to finish")


def assert_moved(nova, sid, victim, status, dest=None):
    s = nova.server(sid)
    assert (s.status, s.task_state) == (status, None), (sid, s.status, s.task_state)
    assert s.host not in (None, victim), (sid, s.host)
    if dest is not None:
        assert s.host == dest, (sid, s.host)
    (mig,) = nova.evacuations(sid)  # exactly one evacuation: never done twice
    assert mig.status in ("done", "completed") and mig.source_compute == victim, mig
    assert mig.dest_compute == s.host, mig
    return s


def boot_from_volume(admin, servers, name, host, metadata):
    """A server whose root disk is a Cinder volume (deleted with the server)."""
    volume = admin.block_storage.create_volume(size=1, name=f"{name}-root")
    volume = admin.block_storage.wait_for_status(volume, "available", failures=["error"],
                                                 wait=60)
    admin.block_storage.set_volume_bootable_status(volume, True)
    server = admin.compute.create_server(
        name=name, flavor_id=servers.flavor().id, networks="none",
        availability_zone=f"nova:{host}", metadata=metadata,
        block_device_mapping=[{"boot_index": 0, "uuid": volume.id, "source_type": "volume",
                               "destination_type": "volume",
                               "delete_on_termination": True}])
    servers.ids.append(server.id)
    return server, volume


def attachment(admin, volume_id):
    """The volume's only attachment (Cinder's view)."""
    volume = admin.block_storage.get_volume(volume_id)
    assert volume.status == "in-use", volume.status
    (att,) = volume.attachments
    return att  # a dict: server_id, host_name, attachment_id, ...


def assert_stayed(nova, sid, victim):
    assert nova.server(sid).host == victim
    assert nova.evacuations(sid) == []


def test_controller_recovers_the_whole_mix_then_reenables_the_host(
        minicloud, nova, admin, servers, daemon_factory, bus, victim_bmc, tmp_path,
        prometheus):  # noqa: F811 - the fixture
    ensure_healthy(minicloud, nova)
    assert "cinder" in minicloud.endpoints, \
        "this mini-cloud has no Cinder: start it with the current tools/minicloud/up.sh"
    hosts, victim, bmc = minicloud.hosts, minicloud.hosts[0], victim_bmc
    inv = inventory(tmp_path, hosts, {victim: bmc})

    boot = {
        "active": servers.boot("mix-active", victim, KEEP),
        "shutoff": servers.boot("mix-shutoff", victim, KEEP),
        "error": servers.boot("mix-error", victim, KEEP),
        "locked": servers.boot("mix-locked", victim, KEEP),
        "notify": servers.boot("mix-notify", victim, {"instanceha:recovery": "notify"}),
        "plain": servers.boot("mix-plain", victim),
    }
    boot["volume"], volume = boot_from_volume(admin, servers, "mix-volume", victim, KEEP)
    ids = {k: s.id for k, s in boot.items()}
    for sid in ids.values():
        servers.wait_status(sid, "ACTIVE")
    admin.compute.stop_server(ids["shutoff"])
    servers.wait_status(ids["shutoff"], "SHUTOFF")
    admin.compute.lock_server(ids["locked"])
    nova.reset_state(ids["error"], "error")
    servers.wait_status(ids["error"], "ERROR")
    assert nova.server(ids["volume"]).volume_backed
    before = attachment(admin, volume.id)
    assert (before["server_id"], before["host_name"]) == (ids["volume"], victim)

    agents = {h: agent(daemon_factory, h) for h in hosts}
    port = procs.free_port()
    ctl = standby = None
    try:
        ctl = controller(daemon_factory, minicloud, inv, port, bus)
        standby = controller(daemon_factory, minicloud, inv, procs.free_port(), bus,
                             name="ctl-b", standby=True)
        # the operators' Prometheus: the healthy cloud raises nothing
        addresses = monitoring.scrape(prometheus, [*agents.values(), ctl, standby])
        monitoring.assert_quiet(prometheus)

        # compute1 dies: its agent and nova-compute stop; its BMC still says ON
        assert bmc.powered_on()
        agents[victim].kill()
        minicloud.kill_host(victim)
        ctl.wait_log(rf"host={victim} fenced: ipmi read back off", timeout=120)
        assert not bmc.powered_on()

        m = recovered(nova, victim)
        assert "5 evacuated, 0 failed, 1 notified" in m.note, m.note
        assert m.spares == ()  # method = scheduler: no spare involved

        # every server: final host, state and migration
        want = {"active": "ACTIVE", "shutoff": "SHUTOFF", "error": "ACTIVE", "locked": "ACTIVE",
                "volume": "ACTIVE"}
        for key, status in want.items():
            assert_moved(nova, ids[key], victim, status)
        assert nova.server(ids["locked"]).locked  # the lock stays
        # the volume-backed server kept its volume, attached again on its new host
        moved = nova.server(ids["volume"])
        assert moved.volume_backed
        after = attachment(admin, volume.id)
        assert (after["server_id"], after["host_name"]) == (ids["volume"], moved.host)
        assert after["attachment_id"] != before["attachment_id"]  # new one, the old gone
        assert [a.volume_id for a in admin.compute.volume_attachments(ids["volume"])] == \
            [volume.id]
        for key in ("notify", "plain"):
            assert_stayed(nova, ids[key], victim)

        # what the owners and the operators were told
        for key in want:
            (end,) = bus.wait(ev.EVACUATE_END, instance_id=ids[key])
            assert end["payload"]["target_host"] == nova.server(ids[key]).host
        (required,) = bus.wait(ev.RECOVERY_REQUIRED, instance_id=ids["notify"])
        assert required["payload"]["host"] == victim
        (summary,) = bus.wait(ev.RECOVERY_END, host=victim)
        assert (summary["payload"]["evacuated"], summary["payload"]["failed"],
                summary["payload"]["notified"]) == (5, 0, 1)
        assert not bus.events(ev.EVACUATE_START, instance_id=ids["plain"])
        assert not bus.events(ev.EVACUATE_ERROR)
        assert metric(port, "instanceha_evacuations_total", result="evacuated") == 5.0
        assert metric(port, "instanceha_evacuations_total", result="no capacity") == 0.0

        # what the operators' Prometheus shows: the failed host's alert, and only it;
        # every rule on real series, every dashboard query with data, no lint
        prometheus.wait_alert("InstanceHAHostFailed", host=victim)
        monitoring.assert_firing_exactly(prometheus, {f"InstanceHAHostFailed host={victim}"})
        monitoring.assert_rules_match_real_series(prometheus)
        monitoring.assert_dashboard_has_data(prometheus)
        for name in (ctl.name, standby.name, hosts[1]):
            monitoring.assert_metrics_lint_free(addresses[name])

        # the host is repaired: power on, nova-compute and its agent come back
        bmc.set_power(True)
        minicloud.start_compute(victim)
        agent(daemon_factory, victim, f"{victim}-back")
        ctl.wait_log(rf"host={victim} back in service", timeout=240)
        svc = nova.service(victim)
        assert (svc.status, svc.forced_down, svc.marker) == ("enabled", False, None)
        # enabled once Nova saw nova-compute up: placement already lets the scheduler in
        (rp,) = [r for r in admin.placement.resource_providers() if r.name == victim]
        traits = admin.placement.get(f"/resource_providers/{rp.id}/traits",
                                     microversion="1.6").json()["traits"]
        assert "COMPUTE_STATUS_DISABLED" not in traits
        for key in want:  # the returning compute cleaned up after each evacuation
            assert nova.evacuations(ids[key])[0].status == "completed", key
        assert attachment(admin, volume.id)["host_name"] == moved.host  # left alone
        bus.wait(ev.HOST_RESTORED, host=victim)
        assert "bmc-Secret-2" not in ctl.read_log()
        prometheus.wait_resolved("InstanceHAHostFailed", host=victim)
    finally:
        if standby is not None:  # no controller may fence while the cloud is restored
            standby.kill()
        if ctl is not None:
            ctl.terminate()
        ensure_healthy(minicloud, nova)


def test_reserved_spare_in_the_failed_hosts_aggregate_takes_its_servers(
        minicloud, nova, nova_conf_file, admin, servers, daemon_factory, tmp_path):
    ensure_healthy(minicloud, nova)
    hosts = minicloud.hosts
    victim, decoy, spare = hosts[0], hosts[1], hosts[2]
    aggregates = []
    try:
        for name, members in (("ih-rack-a", [victim, spare]), ("ih-rack-b", [decoy])):
            agg = admin.compute.create_aggregate(name=name)
            aggregates.append(agg)
            for h in members:
                admin.compute.add_host_to_aggregate(agg, h)
        a = servers.boot("rs-active", victim, KEEP)
        b = servers.boot("rs-shutoff", victim, KEEP)
        c = servers.boot("rs-plain", victim)
        for s in (a, b, c):
            servers.wait_status(s.id, "ACTIVE")
        admin.compute.stop_server(b.id)
        servers.wait_status(b.id, "SHUTOFF")

        # the operator keeps compute2 and compute3 as spares, with the CLI
        for h in (decoy, spare):
            out = subprocess.run([os.path.join(BIN, "instanceha"), "--config-file",
                                  nova_conf_file, "host", "reserve", h, "--note",
                                  f"spare of test {h}"],
                                 capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
            svc = nova.service(h)
            assert svc.disabled and svc.marker.state is mk.MarkerState.RESERVED

        agents = {h: agent(daemon_factory, h) for h in hosts}
        port = procs.free_port()
        ctl = controller(daemon_factory, minicloud, inventory(tmp_path, hosts, {}), port,
                         recovery={"method": "reserved_hosts", "reserved_match": "aggregate",
                                   "reserved_fallback_to_scheduler": "false"})
        try:
            agents[victim].kill()
            minicloud.kill_host(victim)
            m = recovered(nova, victim)
            assert "2 evacuated, 0 failed, 0 notified" in m.note, m.note
            assert m.spares == (spare,)
            ctl.wait_log(rf"host={victim} spare={spare} enabled")

            assert_moved(nova, a.id, victim, "ACTIVE", dest=spare)
            assert_moved(nova, b.id, victim, "SHUTOFF", dest=spare)
            assert_stayed(nova, c.id, victim)
            # the spare stays in service; the other spare (another aggregate) stays reserved
            svc = nova.service(spare)
            assert (svc.status, svc.marker) == ("enabled", None)
            svc = nova.service(decoy)
            assert svc.disabled and svc.marker.state is mk.MarkerState.RESERVED
            assert metric(port, "instanceha_evacuations_total", result="evacuated") == 2.0
        finally:
            ctl.terminate()
    finally:
        for agg in aggregates:
            for h in admin.compute.get_aggregate(agg).hosts or []:
                admin.compute.remove_host_from_aggregate(agg, h)
            admin.compute.delete_aggregate(agg)
        ensure_healthy(minicloud, nova)


def test_a_server_without_room_waits_on_the_fenced_host_and_moves_when_room_appears(
        minicloud, nova, admin, servers, daemon_factory, bus, tmp_path):
    """No host has room for one server: it is not sent to Nova (whose 'No valid
    host' would leave it in ERROR), it is reported (log, bus) and waits on the
    fenced host, the host stays RECOVERING; a filler deleted, it moves."""
    ensure_healthy(minicloud, nova)
    hosts, victim = minicloud.hosts, minicloud.hosts[0]
    others = [h for h in hosts if h != victim]
    big = servers.flavor("ih.test.big", ram=600000)  # one per host at most
    fillers = [servers.boot(f"nc-filler-{h}", h, flavor=big) for h in others]
    too_big = servers.boot("nc-big", victim, KEEP, flavor=big)
    small = servers.boot("nc-small", victim, KEEP)
    for s in fillers + [too_big, small]:
        servers.wait_status(s.id, "ACTIVE")

    agents = {h: agent(daemon_factory, h) for h in hosts}
    port = procs.free_port()
    ctl = None
    try:
        ctl = controller(daemon_factory, minicloud, inventory(tmp_path, hosts, {}), port, bus,
                         capacity={"refresh_interval": 5, "min_interval": 1})
        ctl.wait_log(r"failover capacity: covered again|failover capacity NOT covered",
                     timeout=60)
        agents[victim].kill()
        minicloud.kill_host(victim)
        waiting = wait_for(lambda: (m := nova.service(victim).marker) and m.waiting and m,
                           300, f"{victim} RECOVERING with a server waiting for room")
        assert (waiting.state, waiting.waiting) == (mk.MarkerState.RECOVERING, 1), waiting
        ctl.wait_log(rf"host={victim} server={too_big.id} waits for room: no room: needs "
                     r"\d+ DISK_GB, 600000 MEMORY_MB")
        (deferred,) = bus.wait(ev.EVACUATE_DEFERRED, instance_id=too_big.id)
        assert "MEMORY_MB" in deferred["payload"]["reason"] and deferred["payload"]["retrying"]
        s = nova.server(too_big.id)
        assert (s.host, s.status) == (victim, "ACTIVE")  # never sent: not in ERROR
        assert nova.evacuations(too_big.id) == []
        assert_moved(nova, small.id, victim, "ACTIVE")
        assert not metric(port, "instanceha_evacuations_total", result="no capacity")

        admin.compute.delete_server(fillers[0].id)  # room appears on compute2
        m = recovered(nova, victim)
        assert "1 evacuated, 0 failed" in m.note, m.note
        assert_moved(nova, too_big.id, victim, "ACTIVE", dest=others[0])
        assert metric(port, "instanceha_evacuations_total", result="evacuated") == 2.0
    finally:
        if ctl is not None:
            ctl.terminate()
        ensure_healthy(minicloud, nova)
