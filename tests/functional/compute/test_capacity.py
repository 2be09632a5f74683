"""Failover capacity on the mini-cloud's real Placement and Nova.

The fake-driver computes report 800,000 MB of RAM each (Nova's FakeDriver),
so "no room" is made for real: filler servers of a flavor sized from
Placement's own inventory and usage leave room for exactly one small server
on compute2 and on compute3. compute1 runs four small opted-in servers, two of
them of high priority: if compute1 failed, only two would find room.

* ``instanceha capacity --live`` (Placement and Nova read by the CLI with the
  ``[nova]`` credentials, no controller) says so before any failure: compute1
  SHORT by one small server's need, naming the two low-priority servers and why.
* the controller's published model (``instanceha capacity``, ``status``, the
  gauges) says the same; then compute1 dies: the two high-priority servers are
  evacuated first and ACTIVE (one on each survivor: spread), the two others
  wait on the fenced host (not in ERROR), reported on the bus.
* hard anti-affinity: a member on compute1 whose peer runs on compute2 lands on
  compute3, never beside its peer; a member of a group with peers on both
  survivors is reported and waits, never forced.
* reserved spare: the spare (compute3) runs a member of an anti-affinity group;
  compute1 dies: its other server goes to the spare, its group member does not
  (the scheduler places it on compute2).

Real: Keystone, Placement, Nova (fake virt driver), RabbitMQ and ZooKeeper of
the session, instanceha's agents, controller, CLI and ``instanceha listen``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from harness import procs

from instanceha.engine import marker as mk
from instanceha.notify import events as ev
from tests.functional.cloud import Bus

from .conftest import ensure_healthy, wait_for
from .test_controller_recovery import agent, assert_moved, controller, inventory, metric


def gauge(port, name) -> float | None:
    """An unlabelled series of the controller's /metrics."""
    import re
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None

pytestmark = pytest.mark.functional
BIN = os.path.dirname(sys.executable)
KEEP = {"instanceha:recovery": "evacuate"}
HIGH = dict(KEEP, **{"instanceha:priority": "high"})
LOW = dict(KEEP, **{"instanceha:priority": "low"})


def free_ram(admin, host) -> int:
    """Placement's room for MEMORY_MB on ``host``: (total - reserved) * ratio - used."""
    rp = next(r for r in admin.placement.resource_providers() if r.name == host)
    inv = admin.placement.get(f"/resource_providers/{rp.id}/inventories",
                              microversion="1.14").json()["inventories"]["MEMORY_MB"]
    used = admin.placement.get(f"/resource_providers/{rp.id}/usages",
                               microversion="1.14").json()["usages"].get("MEMORY_MB", 0)
    return int((inv["total"] - inv["reserved"]) * inv["allocation_ratio"]) - used


class Fillers:
    """Filler servers that leave room for ``room`` MB on chosen hosts."""

    def __init__(self, admin, servers):
        self.admin, self.servers, self.flavors, self.ids = admin, servers, [], []

    def leave(self, host, room):
        ram = free_ram(self.admin, host) - room
        flavor = self.admin.compute.find_flavor(f"ih.cap.fill.{ram}")
        if flavor is None:
            flavor = self.admin.compute.create_flavor(name=f"ih.cap.fill.{ram}", ram=ram,
                                                      vcpus=1, disk=1)
            self.flavors.append(flavor)
        s = self.servers.boot(f"cap-filler-{host}", host, flavor=flavor)
        self.ids.append(s.id)
        return s

    def close(self):
        for f in self.flavors:
            self.admin.compute.delete_flavor(f, ignore_missing=True)


@pytest.fixture
def fillers(admin, servers):
    made = Fillers(admin, servers)
    yield made
    made.close()


def run_cli(conf, *args):
    return subprocess.run([os.path.join(BIN, "instanceha"), "--config-file", conf, *args],
                          capture_output=True, text=True, timeout=120)


def short_cloud(minicloud, nova, admin, servers, fillers):
    """compute1: 2 high + 2 low priority opted-in servers; compute2 and compute3
    with room for one small server each."""
    ensure_healthy(minicloud, nova)
    victim, *others = minicloud.hosts
    small = servers.flavor()
    mine = [servers.boot(f"cap-high-{i}", victim, HIGH) for i in range(2)]
    mine += [servers.boot(f"cap-low-{i}", victim, LOW) for i in range(2)]
    for s in mine:
        servers.wait_status(s.id, "ACTIVE")
    room = int(small.ram * 1.5)  # one more small server, not two
    for h in others:
        servers.wait_status(fillers.leave(h, room).id, "ACTIVE")
    return victim, others, mine


def test_capacity_live_names_the_servers_a_failure_would_leave_without_room(
        minicloud, nova, nova_conf_file, admin, servers, fillers):
    victim, others, mine = short_cloud(minicloud, nova, admin, servers, fillers)
    high, low = mine[:2], mine[2:]

    out = run_cli(nova_conf_file, "capacity", "--live")
    assert out.returncode == 1, out.stdout + out.stderr
    text = out.stdout
    assert "failover capacity: NOT COVERED for 1 host(s) failing together" in text, text
    row = next(line for line in text.splitlines() if line.startswith(victim + " "))
    assert "SHORT" in row and "MEMORY_MB=256" in row, row
    for s in low:
        assert f"{s.name} ({s.id}) on {victim}, priority low: no room: needs 1 DISK_GB, 128 " \
               "MEMORY_MB, 1 VCPU; the most free on a host of zone nova: 64 MEMORY_MB" in text, text
    for s in high:
        assert s.id not in text

    out = run_cli(nova_conf_file, "capacity", "--live", "--format", "json")
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    row = next(f for f in report["failures"] if f["name"] == victim)
    assert (row["covered"], row["servers"], row["placed"]) == (False, 4, 2)
    assert sorted(s["id"] for s in row["without_room"]) == sorted(s.id for s in low)
    assert report["shortfall"] == {"MEMORY_MB": 256}


@pytest.fixture
def bus(minicloud, tmp_path):
    listener = Bus(tmp_path, minicloud.endpoints["transport_url"])
    yield listener
    listener.close()


def waiting_marker(nova, host, n):
    return wait_for(lambda: (m := nova.service(host).marker) and m.waiting == n and m, 300,
                    f"{host} RECOVERING with {n} server(s) waiting for room")


def test_uncovered_failure_is_seen_before_then_high_priority_first_the_rest_wait(
        minicloud, nova, admin, servers, fillers, daemon_factory, bus, tmp_path, cli):
    victim, others, mine = short_cloud(minicloud, nova, admin, servers, fillers)
    high, low = mine[:2], mine[2:]
    agents = {h: agent(daemon_factory, h) for h in minicloud.hosts}
    port = procs.free_port()
    ctl = controller(daemon_factory, minicloud, inventory(tmp_path, minicloud.hosts, {}),
                     port, bus, capacity={"refresh_interval": 5, "min_interval": 1})
    try:
        ctl.wait_log(r"failover capacity NOT covered \(tolerance 1 host\(s\)\): 1 "
                     rf"failure\(s\) without room for every server: host {victim}", timeout=60)
        def published():
            out = cli("capacity", "--format", "json")
            return out if out.returncode == 1 else None

        report = json.loads(wait_for(published, 60, "the published capacity").stdout)
        row = next(f for f in report["failures"] if f["name"] == victim)
        assert sorted(s["id"] for s in row["without_room"]) == sorted(s.id for s in low)
        assert report["age"] is not None and report["state"] == "ok"
        status = cli("status")
        assert f"not covered: host {victim};" in status.stdout, status.stdout
        assert gauge(port, "instanceha_capacity_covered") == 0.0
        assert metric(port, "instanceha_capacity_shortfall", resource_class="MEMORY_MB") \
            == 256.0
        (changed,) = bus.wait(ev.CAPACITY_CHANGED)
        assert changed["payload"]["covered"] is False
        assert changed["payload"]["failures"][0]["name"] == f"host {victim}"

        agents[victim].kill()
        minicloud.kill_host(victim)
        m = waiting_marker(nova, victim, 2)
        assert m.state is mk.MarkerState.RECOVERING
        dests = {assert_moved(nova, s.id, victim, "ACTIVE").host for s in high}
        assert dests == set(others)  # spread: one on each survivor
        for s in low:
            got = nova.server(s.id)
            assert (got.host, got.status) == (victim, "ACTIVE"), (s.name, got.status)
            assert nova.evacuations(s.id) == []
            (deferred,) = bus.wait(ev.EVACUATE_DEFERRED, instance_id=s.id)
            assert deferred["payload"]["priority"] == 200
            assert "no room" in deferred["payload"]["reason"]
        # the high ones were sent before the low ones were even considered
        starts = [e["payload"]["instance_id"] for e in bus.events(ev.EVACUATE_START)]
        assert sorted(starts) == sorted(s.id for s in high)
    finally:
        ctl.terminate()
        ensure_healthy(minicloud, nova)


def group(admin, name, policy="anti-affinity"):
    return admin.compute.create_server_group(name=name, policy=policy)


def boot_in(servers, admin, name, host, grp, metadata=None):
    image = admin.image.find_image(servers.ep["image"])
    s = admin.compute.create_server(
        name=name, image_id=image.id, flavor_id=servers.flavor().id, networks="none",
        availability_zone=f"nova:{host}", metadata=metadata or KEEP,
        scheduler_hints={"group": grp.id})
    servers.ids.append(s.id)
    return s


def test_hard_anti_affinity_is_kept_and_a_member_without_a_host_waits(
        minicloud, nova, admin, servers, daemon_factory, bus, tmp_path):
    ensure_healthy(minicloud, nova)
    c1, c2, c3 = minicloud.hosts
    g1, g2 = group(admin, "ih-cap-aa-1"), group(admin, "ih-cap-aa-2")
    try:
        a1, b1 = boot_in(servers, admin, "aa1-a", c1, g1), boot_in(servers, admin, "aa1-b", c2, g1)
        a2 = boot_in(servers, admin, "aa2-a", c1, g2)
        peers = [boot_in(servers, admin, f"aa2-{h}", h, g2) for h in (c2, c3)]
        for s in (a1, b1, a2, *peers):
            servers.wait_status(s.id, "ACTIVE")
        agents = {h: agent(daemon_factory, h) for h in minicloud.hosts}
        ctl = controller(daemon_factory, minicloud, inventory(tmp_path, minicloud.hosts, {}),
                         procs.free_port(), bus,
                         capacity={"refresh_interval": 5, "min_interval": 1})
        try:
            ctl.wait_log(r"failover capacity NOT covered", timeout=60)
            agents[c1].kill()
            minicloud.kill_host(c1)
            waiting_marker(nova, c1, 1)
            assert_moved(nova, a1.id, c1, "ACTIVE", dest=c3)  # never beside b1 on c2
            got = nova.server(a2.id)
            assert (got.host, got.status) == (c1, "ACTIVE") and nova.evacuations(a2.id) == []
            (deferred,) = bus.wait(ev.EVACUATE_DEFERRED, instance_id=a2.id)
            assert "anti-affinity group ih-cap-aa-2 (hard): every host of zone nova with " \
                "room holds 1 of its members" in deferred["payload"]["reason"]
        finally:
            ctl.terminate()
    finally:
        ensure_healthy(minicloud, nova)
        servers.delete_all()
        for g in (g1, g2):
            admin.compute.delete_server_group(g, ignore_missing=True)


def test_a_reserved_spare_never_breaks_a_group(minicloud, nova, nova_conf_file, admin, servers,
                                               daemon_factory, tmp_path):
    ensure_healthy(minicloud, nova)
    c1, c2, c3 = minicloud.hosts
    g = group(admin, "ih-cap-spare")
    try:
        member = boot_in(servers, admin, "sp-member", c1, g)
        peer = boot_in(servers, admin, "sp-peer", c3, g, metadata={})
        plain = servers.boot("sp-plain", c1, KEEP)
        for s in (member, peer, plain):
            servers.wait_status(s.id, "ACTIVE")
        out = run_cli(nova_conf_file, "host", "reserve", c3, "--note", "spare of test")
        assert out.returncode == 0, out.stderr
        agents = {h: agent(daemon_factory, h) for h in minicloud.hosts}
        ctl = controller(daemon_factory, minicloud, inventory(tmp_path, minicloud.hosts, {}),
                         procs.free_port(),
                         recovery={"method": "reserved_hosts", "reserved_match": "none"},
                         capacity={"refresh_interval": 5, "min_interval": 1})
        try:
            ctl.wait_log(r"failover capacity: covered again|failover capacity NOT covered",
                         timeout=60)
            agents[c1].kill()
            minicloud.kill_host(c1)
            m = wait_for(lambda: (m := nova.service(c1).marker) and
                         m.state is mk.MarkerState.RECOVERED and m, 300, "the recovery")
            assert m.spares == (c3,)
            assert_moved(nova, plain.id, c1, "ACTIVE", dest=c3)
            assert_moved(nova, member.id, c1, "ACTIVE", dest=c2)  # not beside its peer
        finally:
            ctl.terminate()
    finally:
        ensure_healthy(minicloud, nova)
        servers.delete_all()
        admin.compute.delete_server_group(g, ignore_missing=True)
