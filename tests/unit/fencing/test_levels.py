"""Fencing levels: inventory form, and the order in which levels are tried."""

import os

import pytest

from instanceha.exceptions import Action
from instanceha.fencing import FencePolicy, Fencer, fake, inventory
from instanceha.fencing import exceptions as exc
from instanceha.fencing.base import PowerState
from instanceha.fencing.model import Secret

from .conftest import PASSWORD

DRIVERS = {"fake", "ipmi", "fence_agent"}


def bmc(name, **kw):
    return {"driver": "fake", "address": name, **kw}


def inv(levels, **top):
    return inventory.from_data({"hosts": {"compute1": {"levels": levels}, **top}},
                               "/etc/inv.yaml", DRIVERS)


def two_levels():
    return [{"name": "bmc", "devices": [bmc("bmc1")]},
            {"devices": [bmc("pdu-a"), bmc("pdu-b")]}]


# -- the inventory ---------------------------------------------------------------


def test_levels_are_read_in_order_with_their_place():
    i = inv(two_levels(), compute2=bmc("bmc2"))
    levels = i.levels_of("compute1")
    assert [[d.address for d in lv] for lv in levels] == [["bmc1"], ["pdu-a", "pdu-b"]]
    assert [(d.level, d.device) for d in i.devices("compute1")] == [(1, 1), (2, 1), (2, 2)]
    assert i.get("compute1").address == "bmc1"  # the first device stands for the host
    assert [[d.address for d in lv] for lv in i.levels_of("compute2")] == [["bmc2"]]


@pytest.mark.parametrize("levels, key", [
    ([], "levels"),
    ("bmc", "levels"),
    ([{"devices": []}], "levels[1]"),
    ([{"devices": [bmc("a")]}, {"device": [bmc("b")]}], "levels[2]"),
    ([{"devices": [bmc("a")]}, {"devices": [{"driver": "fake"}]}], "levels[2].devices[1].address"),
    ([{"devices": [{"driver": "fence_agent", "address": "x", "agent": "/bin/sh"}]}],
     "levels[1].devices[1].agent"),
])
def test_bad_levels_name_the_key(levels, key):
    with pytest.raises(exc.InventoryError) as e:
        inv(levels)
    assert f"key {key}:" in str(e.value) and "compute1" in str(e.value)


def test_a_host_with_levels_has_no_other_key():
    with pytest.raises(exc.InventoryError, match="key driver"):
        inventory.from_data({"hosts": {"compute1": {"levels": two_levels(), "driver": "fake"}}},
                            "/x", DRIVERS)


# -- fence_agent keys --------------------------------------------------------------


def agent_entry(**kw):
    raw = {"driver": "fence_agent", "agent": "fence_apc_snmp", "address": "pdu", **kw}
    return inventory.from_data({"hosts": {"compute1": raw}}, "/etc/inv.yaml", DRIVERS)


def test_fence_agent_entry():
    e = agent_entry(plug=3, options={"community": PASSWORD, "snmp_version": "2c",
                                     "power_wait": 0, "inet4_only": True}).get("compute1")
    assert e.agent == "fence_apc_snmp" and e.plug == "3"
    opts = dict(e.options)
    assert opts["community"] == Secret(PASSWORD) and opts["snmp_version"] == "2c"
    assert opts["power_wait"] == "0" and opts["inet4_only"] == "1"
    assert PASSWORD not in repr(e) and e.describe() == "fence_apc_snmp at pdu plug 3"


@pytest.mark.parametrize("kw, key, says", [
    ({"options": {"password": "x"}}, "options.password", "password or password_file"),
    ({"options": {"ip": "x"}}, "options.ip", "'address'"),
    ({"options": {"ipmitool_path": "/tmp/x"}}, "options.ipmitool_path", "remove it"),
    ({"options": {"action": "reboot"}}, "options.action", "remove it"),
    ({"options": {"plug": "1\naction=on"}}, "options.plug", "'plug'"),
    ({"options": {"cipher": "3\naction=on"}}, "options.cipher", "one line"),
    ({"options": {"--lanplus": 1}}, "options.--lanplus", "without the leading --"),
    ({"options": ["lanplus"]}, "options", "mapping"),
    ({"agent": "fence ipmilan"}, "agent", "not a fence agent"),
    ({"verify": False}, "verify", "not a key of driver fence_agent"),
])
def test_bad_fence_agent_keys(kw, key, says):
    with pytest.raises(exc.InventoryError) as e:
        agent_entry(**kw)
    assert f"key {key}:" in str(e.value) and says in str(e.value)


def test_agent_keys_are_refused_for_other_drivers():
    with pytest.raises(exc.InventoryError, match="key plug: not a key of driver ipmi"):
        inventory.from_data({"hosts": {"c": {"driver": "ipmi", "address": "a", "username": "u",
                                             "password": "p", "plug": "1"}}}, "/x", DRIVERS)


def test_a_world_readable_file_with_a_community_in_a_level_is_refused(tmp_path):
    path = tmp_path / "inv.yaml"
    path.write_text("hosts:\n  compute1:\n    levels:\n      - devices:\n"
                    "          - {driver: fence_agent, agent: fence_apc_snmp, address: pdu,\n"
                    f"             options: {{community: {PASSWORD}}}}}\n")
    os.chmod(path, 0o644)
    with pytest.raises(exc.InventoryError, match="world-readable"):
        inventory.load(str(path), DRIVERS)
    os.chmod(path, 0o600)
    assert inventory.load(str(path), DRIVERS).get("compute1").agent == "fence_apc_snmp"


# -- trying the levels ------------------------------------------------------------


@pytest.fixture
def fencer(registry, clock):
    def make(levels):
        return Fencer(inv(levels), FencePolicy(deadline=5, poll_interval=0.5),
                      driver_factory=lambda e: fake.FakeDriver(e, registry),
                      clock=clock)
    return make


def test_first_level_that_confirms_wins_and_later_levels_are_not_touched(fencer, registry):
    ev = fencer(two_levels()).power_off("compute1")
    assert (ev.level, ev.levels, ev.devices) == (1, 2, ("fake at bmc1",))
    assert registry.bmc("pdu-a").requests == [] and registry.bmc("pdu-b").requests == []


def test_bmc_down_the_pdu_level_fences(fencer, registry):
    registry.bmc("bmc1").down = True
    ev = fencer(two_levels()).power_off("compute1")
    assert (ev.level, ev.devices) == (2, ("fake at pdu-a", "fake at pdu-b"))
    assert ev.failed_levels == ("level 1 (fake at bmc1): BMCUnreachable",)
    assert registry.bmc("pdu-a").state is PowerState.OFF
    assert registry.bmc("pdu-b").state is PowerState.OFF
    assert ev.attempts == 2 and ev.as_dict()["devices"] == ["fake at pdu-a", "fake at pdu-b"]


def test_a_level_counts_only_when_all_its_devices_read_back_off(fencer, registry):
    registry.bmc("pdu-b").garbage = True
    levels = [{"devices": [bmc("pdu-a"), bmc("pdu-b")]}, {"devices": [bmc("bmc1")]}]
    ev = fencer(levels).power_off("compute1")
    assert ev.level == 2 and registry.bmc("pdu-a").state is PowerState.OFF  # left off
    assert ev.failed_levels == ("level 1 (fake at pdu-b): GarbageReply",)


def test_no_level_confirms(fencer, registry):
    registry.bmc("bmc1").down = True
    registry.bmc("pdu-b").password = "another"
    with pytest.raises(exc.LevelsFailed) as e:
        fencer(two_levels()).power_off("compute1")
    text = str(e.value)
    assert "level 1 (fake at bmc1): BMCUnreachable" in text
    assert "level 2 (fake at pdu-b): AuthFailed" in text and "NOT fenced" in text
    assert e.value.action is Action.RETRY  # the BMC may come back


def test_no_level_confirms_and_none_will_by_itself(fencer, registry):
    registry.bmc("bmc1").garbage = True
    registry.bmc("pdu-a").garbage = True
    with pytest.raises(exc.LevelsFailed) as e:
        fencer(two_levels()).power_off("compute1")
    assert e.value.action is Action.ESCALATE


def test_one_level_raises_its_own_error(fencer, registry):
    registry.bmc("bmc1").down = True
    with pytest.raises(exc.BMCUnreachable):
        fencer([{"devices": [bmc("bmc1")]}]).power_off("compute1")


def test_check_covers_every_device_of_every_level_and_names_the_one_at_fault(fencer,
                                                                              registry):
    registry.bmc("pdu-b").down = True
    results = fencer(two_levels()).check()
    assert [(r.host, r.level, r.address, r.ok) for r in results] == [
        ("compute1", 1, "bmc1", True), ("compute1", 2, "pdu-a", True),
        ("compute1", 2, "pdu-b", False)]
    assert results[2].error_type == "BMCUnreachable" and "compute1" in results[2].error
    assert all(registry.bmc(a).requests == [] for a in ("bmc1", "pdu-a", "pdu-b"))
