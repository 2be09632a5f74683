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
                  clock=clock)


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


class SessionCountingDriver(fake.FakeDriver):
    """Records the BMC calls and every end of session, in order."""

    def __init__(self, entry, registry, log, fail_end=False):
        super().__init__(entry, registry)
        self.log, self.fail_end = log, fail_end

    def get_power_state(self, timeout=None):
        self.log.append("read")
        return super().get_power_state(timeout)

    def request_power(self, state, timeout=None):
        self.log.append("request")
        return super().request_power(state, timeout)

    def end_session(self):
        self.log.append("end")
        if self.fail_end:
            raise RuntimeError("driver bug")


def counting_fencer(registry, clock, log, **kw):
    inv = Inventory({"c1": make_entry("c1")}, "/etc/inv.yaml")
    return Fencer(inv, FencePolicy(deadline=5, poll_interval=0.5),
                  driver_factory=lambda e: SessionCountingDriver(e, registry, log, **kw),
                  clock=clock)


def test_every_action_and_read_ends_its_bmc_session(registry, clock):
    """A BMC drops a session left idle: a session kept from one fence to the
    next made the second fence of a BMC minutes later take 19 s. So each
    power action (all its calls) and each read ends its session."""
    log = []
    f = counting_fencer(registry, clock, log)
    f.power_off("c1")
    assert log == ["read", "request", "read", "end"]
    log.clear()
    f.power_off("c1")  # already off: one read, and the session still ends
    f.read_power("c1")
    f.check(["c1"])
    assert log == ["read", "end"] * 3


def test_a_failed_action_ends_its_session_too(registry, clock):
    log = []
    f = counting_fencer(registry, clock, log)
    registry.bmc("bmc-c1").password = "other"
    with pytest.raises(exc.AuthFailed):
        f.power_off("c1")
    assert log == ["read", "end"]


def test_a_driver_failing_to_end_its_session_does_not_undo_a_proved_fence(registry, clock,
                                                                           caplog):
    log = []
    f = counting_fencer(registry, clock, log, fail_end=True)
    assert f.power_off("c1").read_back is PowerState.OFF
    assert "ending the BMC session of c1 failed" in caplog.text
