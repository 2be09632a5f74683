"""Fencing levels on real parts: fence_ipmilan against ipmi_sim as level 1, two
outlets of two snmpsim APC PDUs (fence_apc_snmp) as level 2."""

import os
import socket

import pytest
from harness import fenceagents, procs
from harness.bmc import IpmiSimBMC
from harness.fenceagents import fence_ipmilan
from harness.snmppdu import ApcPDU

from instanceha.fencing import PowerState
from instanceha.fencing import exceptions as exc

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def pdus(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("pdus"))
    made = [ApcPDU(base, name=n, outlets=8).start() for n in ("pdu-a", "pdu-b")]
    yield made
    for p in made:
        p.stop()


@pytest.fixture
def agents_on_path(tmp_path, monkeypatch):
    d = fenceagents.install(str(tmp_path / "agents"))
    monkeypatch.setenv("PATH", f"{os.environ['PATH']}:{d}")
    return d


def outlets(pdus, n):
    return {"devices": [p.entry(n) for p in pdus]}


def test_bmc_dead_with_its_host_the_pdu_level_fences(pdus, fencer_for, tmp_path):
    bmc = IpmiSimBMC(str(tmp_path), name="bmc")  # never started: no answer
    level1 = dict(fence_ipmilan(bmc.entry(port=procs.free_port(socket.SOCK_DGRAM))),
                  timeout=2, deadline=3)
    f = fencer_for({"compute1": {"levels": [{"devices": [level1]}, outlets(pdus, 1)]}})
    ev = f.power_off("compute1")
    assert (ev.level, ev.levels, ev.read_back) == (2, 2, PowerState.OFF)
    assert ev.devices == tuple(f"fence_apc_snmp at 127.0.0.1:{p.port} plug 1" for p in pdus)
    assert ev.failed_levels[0].startswith("level 1 (fence_ipmilan at 127.0.0.1:")
    assert [p.powered_on(1) for p in pdus] == [False, False]
    assert [p.power_off_requests(1) for p in pdus] == [1, 1]
    assert all(p.powered_on(n) for p in pdus for n in range(2, 9))


def test_a_live_bmc_fences_and_the_pdus_are_not_touched(pdus, fencer_for, tmp_path):
    bmc = IpmiSimBMC(str(tmp_path), name="bmc-live").start()
    try:
        f = fencer_for({"compute1": {"levels": [{"devices": [fence_ipmilan(bmc.entry())]},
                                                outlets(pdus, 2)]}})
        ev = f.power_off("compute1")
        assert ev.level == 1 and not bmc.powered_on()
        assert [p.power_requests(2) for p in pdus] == [[], []]
    finally:
        bmc.stop()


def test_a_hanging_agent_is_killed_and_the_next_level_fences(pdus, fencer_for,
                                                            agents_on_path):
    hang = {"driver": "fence_agent", "agent": "fence_hang", "address": "127.0.0.1",
            "timeout": 1, "deadline": 2}
    f = fencer_for({"compute1": {"levels": [{"devices": [hang]}, outlets(pdus, 3)]}})
    ev = f.power_off("compute1")
    assert ev.level == 2 and "AgentTimeout" in ev.failed_levels[0]
    runs = fenceagents.runs(agents_on_path, "fence_hang")
    assert runs and not any(fenceagents.alive(int(p)) for r in runs for p in r[1:])


def test_one_outlet_that_cannot_confirm_fails_its_level(pdus, fencer_for):
    dead = dict(pdus[1].entry(4), port=procs.free_port(socket.SOCK_DGRAM), timeout=2,
                deadline=2)
    f = fencer_for({"compute1": {"levels": [{"devices": [pdus[0].entry(4), dead]}]}})
    with pytest.raises((exc.AgentTimeout, exc.BMCUnreachable)):
        f.power_off("compute1")
    assert pdus[1].powered_on(4)  # the other outlet: the host still has power


def test_no_level_confirms(pdus, fencer_for, agents_on_path):
    garbage = {"driver": "fence_agent", "agent": "fence_garbage", "address": "127.0.0.1"}
    hang = {"driver": "fence_agent", "agent": "fence_hang", "address": "127.0.0.1",
            "timeout": 1, "deadline": 2}
    f = fencer_for({"compute1": {"levels": [{"devices": [garbage]}, {"devices": [hang]}]}})
    with pytest.raises(exc.LevelsFailed) as e:
        f.power_off("compute1")
    assert "level 1 (fence_garbage at 127.0.0.1): GarbageReply" in str(e.value)
    assert "level 2 (fence_hang at 127.0.0.1): AgentTimeout" in str(e.value)
