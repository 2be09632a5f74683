"""The real controller fences through ClusterLabs fence agents and fencing levels.

* two levels: compute1's BMC (fence_ipmilan, level 1) lost its power with the
  host, so the level cannot confirm; level 2, the host's two PSU outlets on
  two switched PDUs (fence_apc_snmp against snmpsim APC PDUs), both read back
  off, and the recovery goes on without an operator. The journal, the bus and
  /metrics say level 2 and its devices fenced;
* agents that cannot fence hold their host: a wrong password (fence_ipmilan
  against a live ipmi_sim), an agent that hangs (killed past its timeout,
  with its child) and one that prints garbage and exits 2 for 'status'
  (which Pacemaker's exit code rule alone would take as off). Each host
  stays unfenced with a clear error naming host and agent; nothing of it is
  evacuated and its BMC is still on.

Real: ZooKeeper, Nova with the fake virt driver, RabbitMQ, ipmi_sim,
snmpsim, the fence-agents package, instanceha's agents and controller.
"""

from __future__ import annotations

import os
import socket

import pytest
import yaml
from harness import fenceagents, procs
from harness.bmc import IpmiSimBMC
from harness.fenceagents import fence_ipmilan
from harness.snmppdu import ApcPDU

from instanceha.engine import marker as mk
from instanceha.notify import events as ev

from .conftest import ensure_healthy, wait_for
from .test_controller_recovery import (
    KEEP,
    Bus,
    agent,
    assert_moved,
    assert_stayed,
    controller,
    metric,
    recovered,
)

pytestmark = pytest.mark.functional


@pytest.fixture
def listener(minicloud, tmp_path):
    bus = Bus(tmp_path, minicloud.endpoints["transport_url"])
    yield bus
    bus.close()


def write_inventory(tmp_path, hosts: dict) -> str:
    path = tmp_path / "fencing-inventory.yaml"
    path.write_text(yaml.safe_dump({"hosts": hosts}))
    os.chmod(path, 0o600)
    return str(path)


def fake(host):
    return {"driver": "fake", "address": f"fake-{host}"}


def test_bmc_unreachable_the_pdu_level_fences_and_recovery_proceeds(
        minicloud, nova, servers, daemon_factory, listener, tmp_path):
    bus = listener
    ensure_healthy(minicloud, nova)
    hosts, victim = minicloud.hosts, minicloud.hosts[0]
    bmc = IpmiSimBMC(str(tmp_path), name="bmc-compute1", password="bmc-Secret-3")
    pdus = [ApcPDU(str(tmp_path), name=n, outlets=4, community="pdu-Community-7").start()
            for n in ("pdu-a", "pdu-b")]
    try:
        # the BMC is dead with its host: never started, its port answers nothing
        level1 = dict(fence_ipmilan(bmc.entry(port=procs.free_port(socket.SOCK_DGRAM))), timeout=2,
                      deadline=4)
        level2 = [dict(p.entry(3), timeout=10) for p in pdus]
        inv = write_inventory(tmp_path, {
            **{h: fake(h) for h in hosts},
            victim: {"levels": [{"name": "bmc", "devices": [level1]},
                                {"name": "pdu", "devices": level2}]}})
        keep = servers.boot("lv-active", victim, KEEP)
        servers.wait_status(keep.id, "ACTIVE")
        agents = {h: agent(daemon_factory, h) for h in hosts}
        port = procs.free_port()
        ctl = controller(daemon_factory, minicloud, inv, port, bus)
        try:
            agents[victim].kill()
            minicloud.kill_host(victim)
            ctl.wait_log(rf"host={victim} fenced: fence_agent read back off .* level 2 of 2",
                         timeout=120)
            assert all(not p.powered_on(3) for p in pdus)
            assert [p.power_off_requests(3) for p in pdus] == [1, 1]
            assert all(p.powered_on(n) for p in pdus for n in (1, 2, 4))  # only outlet 3
            recovered(nova, victim)
            assert_moved(nova, keep.id, victim, "ACTIVE")

            devices = [f"fence_apc_snmp at 127.0.0.1:{p.port} plug 3" for p in pdus]
            (end,) = bus.wait(ev.FENCE_END, host=victim)
            assert (end["payload"]["level"], end["payload"]["devices"]) == (2, devices)
            # (the exposition sorts the labels)
            assert metric(port, "instanceha_fence_level_total", devices=", ".join(devices),
                          level="2") == 1.0
            log = ctl.read_log()
            assert "level 1 (fence_ipmilan at 127.0.0.1" in log  # why level 1 was passed
            assert "bmc-Secret-3" not in log and "pdu-Community-7" not in log
        finally:
            ctl.terminate()
    finally:
        for p in pdus:
            p.stop()
        ensure_healthy(minicloud, nova)


def test_agents_that_cannot_fence_hold_their_hosts(minicloud, nova, servers, daemon_factory,
                                                   tmp_path):
    ensure_healthy(minicloud, nova)
    hosts = minicloud.hosts
    wrong, hang, garbage = hosts[0], hosts[1], hosts[2]
    agents_dir = fenceagents.install(str(tmp_path / "agents"))
    bmc = IpmiSimBMC(str(tmp_path), name="bmc-wrong", password="right-Secret-5").start()
    try:
        inv = write_inventory(tmp_path, {
            wrong: dict(fence_ipmilan(bmc.entry()), password="Wrong-Secret-6", timeout=5),
            hang: {"driver": "fence_agent", "agent": "fence_hang", "address": "127.0.0.1",
                   "timeout": 2},
            garbage: {"driver": "fence_agent", "agent": "fence_garbage",
                      "address": "127.0.0.1"},
        })
        boots = {h: servers.boot(f"hold-{h}", h, KEEP) for h in hosts}
        for s in boots.values():
            servers.wait_status(s.id, "ACTIVE")
        agents = {h: agent(daemon_factory, h) for h in hosts}
        env = {"PATH": f"{os.environ['PATH']}:{agents_dir}"}
        ctl = controller(daemon_factory, minicloud, inv, procs.free_port(), env=env,
                         fencing={"deadline": 6})
        try:
            for h in hosts:
                agents[h].kill()
                minicloud.kill_host(h)
            expect = {wrong: r"fence_ipmilan for \S+ .*failed '(status|off)'.*wrong password",
                      hang: r"fence_hang for \S+ .*did not finish '\w+' within [0-9.]+ s and "
                            r"was killed",
                      garbage: r"fence_garbage at \S+\) gave an answer that is not a "
                               r"valid fence_garbage reply: 'status' exited 2"}
            for h, pattern in expect.items():
                ctl.wait_log(rf"power off of {h} NOT confirmed: .*{pattern}", timeout=120)
            # a second round for each: still held, retried, nothing moved
            for h in hosts:
                n = len(ctl.read_log().split(f"power off of {h} NOT confirmed"))
                wait_for(lambda h=h, n=n: len(ctl.read_log().split(
                    f"power off of {h} NOT confirmed")) > n, 120, f"a retry of {h}'s fence")
            for h in hosts:
                assert_stayed(nova, boots[h].id, h)
                m = nova.service(h).marker
                assert m is None or m.state is not mk.MarkerState.FENCED, (h, m)
            assert bmc.powered_on()
            assert fenceagents.runs(agents_dir, "fence_garbage")
            log = ctl.read_log()
            assert "Wrong-Secret-6" not in log and "right-Secret-5" not in log
        finally:
            ctl.terminate()
        # the hanging agent and its child were killed, every time, and the one
        # running when the controller stopped went with it
        runs = fenceagents.runs(agents_dir, "fence_hang")
        assert len(runs) >= 2
        assert not any(fenceagents.alive(int(p)) for r in runs for p in r[1:])
    finally:
        bmc.stop()
        ensure_healthy(minicloud, nova)
