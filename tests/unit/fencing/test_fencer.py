"""The Fencer facade: per-host actions, concurrent fencing, check never powers."""

import threading

import pytest

from instanceha.fencing import (
    FencePolicy,
    Fencer,
    PowerState,
    build_driver,
    driver_names,
    fake,
    load_driver_class,
)
from instanceha.fencing import exceptions as exc
from instanceha.fencing.base import FenceDriver
from instanceha.fencing.inventory import Inventory

from .conftest import make_entry


def fencer_for(registry, clock, hosts, **policy):
    inv = Inventory({h: make_entry(h) for h in hosts}, "/etc/inv.yaml")
    return Fencer(inv, FencePolicy(**{"deadline": 5, "poll_interval": 0.5, **policy}),
                  driver_factory=lambda e: fake.FakeDriver(e, registry),
                  clock=clock, wall=clock.wall, sleep=clock.sleep)


def test_drivers_load_by_entry_point_name():
    assert driver_names() == ["fake", "fence_agent", "ipmi", "redfish"]
    assert load_driver_class("fake") is fake.FakeDriver
    assert isinstance(build_driver(make_entry()), fake.FakeDriver)
    with pytest.raises(exc.UnknownDriver) as e:
        load_driver_class("ilo")
    assert "'ilo'" in str(e.value) and "redfish" in str(e.value)


def test_power_off_on_and_read(registry, clock):
    f = fencer_for(registry, clock, ["c1"])
    assert f.power_off("c1").read_back is PowerState.OFF
    assert f.read_power("c1") is PowerState.OFF
    assert f.power_on("c1").read_back is PowerState.ON
    assert registry.bmc("bmc-c1").requests == [PowerState.OFF, PowerState.ON]


def test_unknown_host_is_a_typed_error(registry, clock):
    f = fencer_for(registry, clock, ["c1"])
    with pytest.raises(exc.HostNotInInventory) as e:
        f.power_off("c2")
    assert "/etc/inv.yaml" in str(e.value)


def test_check_reports_each_bmc_and_powers_nothing(registry, clock):
    f = fencer_for(registry, clock, ["ok", "down", "auth", "garbage"])
    registry.bmc("bmc-down").down = True
    registry.bmc("bmc-auth").password = "other"
    registry.bmc("bmc-garbage").garbage = True
    results = {r.host: r for r in f.check(["ok", "down", "auth", "garbage", "nope"])}
    assert results["ok"].ok and results["ok"].power_state == "on"
    assert (results["down"].reachable, results["down"].error_type) == (False, "BMCUnreachable")
    assert (results["auth"].reachable, results["auth"].authenticated) == (True, False)
    assert results["garbage"].error_type == "GarbageReply"
    assert results["nope"].error_type == "HostNotInInventory" and not results["nope"].ok
    assert all(registry.bmc(f"bmc-{h}").requests == [] for h in ("ok", "down", "auth"))
    assert [r.host for r in f.check()] == ["auth", "down", "garbage", "ok"]


class RendezvousDriver(FenceDriver):
    """Blocks each read until `parties` fences are inside a read at the same time:
    a serialising Fencer would break the barrier (proof without timing)."""

    name = "rendezvous"

    def __init__(self, entry, barrier, gauge):
        super().__init__(entry)
        self.barrier, self.gauge, self.off = barrier, gauge, False

    def request_power(self, state, timeout=None):
        self.off = state is PowerState.OFF

    def get_power_state(self, timeout=None):
        with self.gauge["lock"]:
            self.gauge["now"] += 1
            self.gauge["max"] = max(self.gauge["max"], self.gauge["now"])
        try:
            if not self.off:
                self.barrier.wait()
        finally:
            with self.gauge["lock"]:
                self.gauge["now"] -= 1
        return PowerState.OFF if self.off else PowerState.ON


def run_many(n_hosts, max_concurrent, parties):
    barrier = threading.Barrier(parties, timeout=10)
    gauge = {"lock": threading.Lock(), "now": 0, "max": 0}
    inv = Inventory({f"h{i}": make_entry(f"h{i}") for i in range(n_hosts)})
    f = Fencer(inv, FencePolicy(deadline=30, poll_interval=0.05,
                                max_concurrent=max_concurrent),
               driver_factory=lambda e: RendezvousDriver(e, barrier, gauge))
    return f.power_off_many([f"h{i}" for i in range(n_hosts)] + ["h0"]), gauge


def test_many_hosts_are_fenced_at_once():
    results, gauge = run_many(20, max_concurrent=20, parties=20)
    assert list(results) == [f"h{i}" for i in range(20)]  # input order, duplicates dropped
    assert all(r.read_back is PowerState.OFF for r in results.values())
    assert gauge["max"] == 20


def test_concurrency_is_bounded_by_the_policy():
    results, gauge = run_many(12, max_concurrent=4, parties=4)
    assert all(r.read_back is PowerState.OFF for r in results.values())
    assert gauge["max"] == 4


def test_one_failure_does_not_spoil_the_others(registry, clock):
    f = fencer_for(registry, clock, ["a", "b", "c"])
    registry.bmc("bmc-b").password = "other"
    results = f.power_off_many(["a", "b", "c", "zz"])
    assert results["a"].read_back is results["c"].read_back is PowerState.OFF
    assert isinstance(results["b"], exc.AuthFailed)
    assert isinstance(results["zz"], exc.HostNotInInventory)
    assert f.power_off_many([]) == {}
