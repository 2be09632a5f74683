"""The one confirm loop on the fake driver with an injected clock: no sleeps."""

import pytest

from instanceha.fencing import FencePolicy, Fencer, PowerState
from instanceha.fencing import exceptions as exc
from instanceha.fencing.fake import FakeRegistry
from instanceha.fencing.inventory import from_data
from tests.unit.fakes import FakeClock

POLICY = FencePolicy(deadline=10.0, poll_interval=0.5, retry_backoff=1.0, retry_backoff_max=4.0)


@pytest.fixture
def world(monkeypatch):
    clock = FakeClock(0.0)
    registry = FakeRegistry(clock=clock)
    monkeypatch.setattr("instanceha.fencing.fake.REGISTRY", registry)
    inv = from_data({"hosts": {"compute1": {"driver": "fake", "address": "bmc1",
                                            "username": "admin", "password": "pw"}}})
    fencer = Fencer(inv, POLICY, clock=clock, wall=lambda: 1000.0 + clock(),
                    sleep=clock.advance)
    bmc = registry.bmc("bmc1")
    bmc.password = "pw"
    return fencer, bmc, clock


def test_off_is_read_back(world):
    fencer, bmc, clock = world
    ev = fencer.power_off("compute1")
    assert (ev.requested, ev.read_back, ev.attempts) == (PowerState.OFF, PowerState.OFF, 1)
    assert bmc.state is PowerState.OFF


def test_already_off_sends_nothing(world):
    fencer, bmc, _ = world
    bmc.set_state(PowerState.OFF)
    ev = fencer.power_off("compute1")
    assert ev.already and ev.attempts == 0 and ev.reads == 1


def test_slow_bmc_within_the_deadline(world):
    fencer, bmc, clock = world
    bmc.power_delay = 3.0
    ev = fencer.power_off("compute1")
    assert ev.read_back is PowerState.OFF and 3.0 <= ev.duration <= POLICY.deadline


def test_slow_bmc_past_the_deadline_is_not_fenced(world):
    fencer, bmc, clock = world
    bmc.power_delay = 30.0
    with pytest.raises(exc.DeadlineExceeded) as e:
        fencer.power_off("compute1")
    assert "NOT fenced" in str(e.value) and "last read-back was ON" in str(e.value)
    assert e.value.retryable
    assert clock() <= POLICY.deadline + 1.0


def test_request_is_resent_with_backoff_when_the_bmc_drops_it(world, monkeypatch):
    fencer, bmc, clock = world
    dropped = []
    real = bmc.request

    def lossy(state):
        if len(dropped) < 2:
            dropped.append(clock())
            return False  # accepted on the wire, lost by the BMC
        return real(state)

    monkeypatch.setattr(bmc, "request", lossy)
    ev = fencer.power_off("compute1")
    assert ev.attempts == 3 and ev.read_back is PowerState.OFF
    assert dropped == [0.0, 1.0]  # re-sent after the first back-off


@pytest.mark.parametrize("fault,error", [("down", exc.BMCUnreachable),
                                         ("garbage", exc.GarbageReply),
                                         ("password", exc.AuthFailed)])
def test_broken_bmc_is_never_off(world, fault, error):
    fencer, bmc, clock = world
    if fault == "password":
        bmc.password = "other"
    else:
        setattr(bmc, fault, True)
    with pytest.raises(error):
        fencer.power_off("compute1")
    assert bmc.state is PowerState.ON


def test_escalate_errors_stop_at_once_retry_errors_use_the_deadline(world):
    fencer, bmc, clock = world
    bmc.garbage = True
    with pytest.raises(exc.GarbageReply):
        fencer.power_off("compute1")
    assert clock() == 0.0  # ESCALATE: not retried
    bmc.garbage = False
    bmc.down = True
    with pytest.raises(exc.BMCUnreachable):
        fencer.power_off("compute1")
    assert clock() >= POLICY.deadline - POLICY.retry_backoff_max  # RETRY: until the deadline


def test_driver_returning_nonsense_never_reads_as_off(world, monkeypatch):
    fencer, bmc, _ = world
    monkeypatch.setattr(type(fencer.driver("compute1")), "get_power_state",
                        lambda self, timeout=None: "off")
    with pytest.raises(exc.GarbageReply):
        fencer.power_off("compute1")


def test_unknown_host_says_where_to_add_it(world):
    fencer, _, _ = world
    with pytest.raises(exc.HostNotInInventory) as e:
        fencer.power_off("compute9")
    assert "compute9" in str(e.value) and "hosts:" in str(e.value)


def test_many_hosts_at_once_one_slow_bmc_does_not_block_the_others(monkeypatch):
    clock = FakeClock(0.0)
    registry = FakeRegistry(clock=clock)
    monkeypatch.setattr("instanceha.fencing.fake.REGISTRY", registry)
    hosts = {f"c{i}": {"driver": "fake", "address": f"b{i}"} for i in range(5)}
    registry.bmc("b0").down = True
    fencer = Fencer(from_data({"hosts": hosts}), FencePolicy(deadline=2.0, poll_interval=0.5,
                                                             retry_backoff=0.5,
                                                             retry_backoff_max=1.0))
    out = fencer.power_off_many(hosts)
    assert isinstance(out["c0"], exc.BMCUnreachable)
    assert all(out[f"c{i}"].read_back is PowerState.OFF for i in range(1, 5))
