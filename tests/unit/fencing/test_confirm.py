"""The confirm loop: success only from a read-back, typed failures otherwise."""

import dataclasses

import pytest

from instanceha.exceptions import Action
from instanceha.fencing import exceptions as exc
from instanceha.fencing import fake
from instanceha.fencing.base import FenceDriver, PowerState
from instanceha.fencing.confirm import FenceEvidence, FencePolicy, confirm

from .conftest import make_entry

POLICY = FencePolicy(deadline=10.0, poll_interval=0.5, retry_backoff=1.0, retry_backoff_max=4.0)


def run(driver, clock, requested=PowerState.OFF, policy=POLICY, deadline=None):
    return confirm(driver, requested, policy, deadline=deadline, clock=clock)


@pytest.fixture
def bmc_and_driver(registry, entry):
    return registry.bmc(entry.address), fake.FakeDriver(entry, registry)


def test_already_off_is_success_without_a_request(bmc_and_driver, clock):
    bmc, driver = bmc_and_driver
    bmc.set_state(PowerState.OFF)
    ev = run(driver, clock)
    assert (ev.read_back, ev.attempts, ev.reads, ev.already) == (PowerState.OFF, 0, 1, True)
    assert bmc.requests == [] and clock.waits == []


def test_off_is_confirmed_by_the_read_back(bmc_and_driver, clock):
    bmc, driver = bmc_and_driver
    ev = run(driver, clock)
    assert ev.requested is ev.read_back is PowerState.OFF
    assert ev.attempts == 1 and bmc.requests == [PowerState.OFF]
    assert bmc.state is PowerState.OFF
    assert ev.host == "compute1" and ev.driver == "fake" and ev.address == "bmc-compute1"
    assert ev.finished_at >= ev.started_at and ev.duration == pytest.approx(0.5)


def test_slow_bmc_is_polled_until_it_reads_off(bmc_and_driver, clock):
    bmc, driver = bmc_and_driver
    bmc.power_delay = 3.2
    ev = run(driver, clock)
    assert ev.read_back is PowerState.OFF
    assert 3.2 <= ev.duration <= 3.2 + POLICY.poll_interval
    # an accepted request is not sent again (that would restart the transition)
    assert bmc.requests == [PowerState.OFF] and ev.attempts == 1


def test_bmc_slower_than_the_deadline_is_not_fenced(bmc_and_driver, clock):
    bmc, driver = bmc_and_driver
    bmc.power_delay = 100.0
    start = clock.now
    with pytest.raises(exc.DeadlineExceeded) as e:
        run(driver, clock)
    assert e.value.action is Action.RETRY
    assert "last read-back was ON" in str(e.value) and "NOT fenced" in str(e.value)
    assert clock.now - start == pytest.approx(POLICY.deadline)
    assert bmc.state is PowerState.ON


def test_failed_requests_are_resent_with_capped_exponential_backoff(clock):
    d = Scripted(reads=[PowerState.ON], requests=[unreachable()] * 100)
    times = []
    orig = d.request_power

    def spy(state, timeout=None):
        times.append(clock.now)
        orig(state, timeout)

    d.request_power = spy
    with pytest.raises(exc.DeadlineExceeded) as e:
        run(d, clock, policy=dataclasses.replace(POLICY, deadline=30.0))
    gaps = [round(b - a, 1) for a, b in zip(times, times[1:], strict=False)]
    assert gaps[:5] == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert "BMCUnreachable" in str(e.value)


def test_deadline_of_the_entry_overrides_the_policy(bmc_and_driver, clock):
    bmc, driver = bmc_and_driver
    bmc.power_delay = 100.0
    start = clock.now
    with pytest.raises(exc.DeadlineExceeded) as e:
        run(driver, clock, deadline=3.0)
    assert clock.now - start == pytest.approx(3.0) and "within 3.0 s" in str(e.value)


def test_unreachable_bmc_is_retried_then_reported_as_unreachable(bmc_and_driver, clock):
    bmc, driver = bmc_and_driver
    bmc.down = True
    start = clock.now
    with pytest.raises(exc.BMCUnreachable) as e:
        run(driver, clock)
    assert e.value.action is Action.RETRY
    assert clock.now - start == pytest.approx(POLICY.deadline)
    assert bmc.requests == []


@pytest.mark.parametrize("fault, error", [
    ("password", exc.AuthFailed),
    ("garbage", exc.GarbageReply),
])
def test_failures_that_retrying_cannot_fix_are_raised_at_once(bmc_and_driver, clock, fault,
                                                              error):
    bmc, driver = bmc_and_driver
    if fault == "password":
        bmc.password = "another one"
    else:
        bmc.garbage = True
    with pytest.raises(error) as e:
        run(driver, clock)
    assert e.value.action is Action.ESCALATE
    assert clock.waits == [] and bmc.requests == []
    assert bmc.state is PowerState.ON


class Scripted(FenceDriver):
    """Answers from a script: each item is a PowerState or an exception."""

    name = "scripted"

    def __init__(self, reads, requests=()):
        super().__init__(make_entry(driver="scripted"))
        self.reads, self.requests, self.sent = list(reads), list(requests), 0

    def request_power(self, state, timeout=None):
        self.sent += 1
        if self.requests:
            item = self.requests.pop(0)
            if isinstance(item, Exception):
                raise item

    def get_power_state(self, timeout=None):
        item = self.reads.pop(0) if len(self.reads) > 1 else self.reads[0]
        if isinstance(item, Exception):
            raise item
        return item


def unreachable():
    return exc.BMCUnreachable(host="h", driver="d", address="a", reason="r")


def test_failed_requests_are_retried_until_one_is_accepted(clock):
    d = Scripted(reads=[PowerState.ON, PowerState.OFF],
                 requests=[unreachable(), unreachable()])
    ev = run(d, clock)
    assert ev.attempts == 3 and d.sent == 3 and ev.read_back is PowerState.OFF
    assert clock.waits[:2] == [1.0, 2.0]


def test_transitions_and_lost_reads_are_polled_through(clock):
    d = Scripted(reads=[PowerState.ON, exc.PowerStateInTransition(host="h", state="PoweringOff"),
                        unreachable(), PowerState.OFF])
    ev = run(d, clock)
    assert ev.read_back is PowerState.OFF and ev.reads == 4


def test_a_read_back_that_is_not_a_power_state_is_never_success(clock):
    d = Scripted(reads=["off"])
    with pytest.raises(exc.GarbageReply):
        run(d, clock)


def test_unreachable_after_a_read_reports_deadline_with_the_last_state(clock):
    d = Scripted(reads=[PowerState.ON, unreachable()])
    with pytest.raises(exc.DeadlineExceeded) as e:
        run(d, clock)
    assert "ON" in str(e.value) and "BMCUnreachable" in str(e.value)


def test_power_on(bmc_and_driver, clock):
    bmc, driver = bmc_and_driver
    bmc.set_state(PowerState.OFF)
    ev = run(driver, clock, requested=PowerState.ON)
    assert ev.read_back is PowerState.ON and bmc.state is PowerState.ON


def test_evidence_is_frozen_and_serialisable(bmc_and_driver, clock):
    _, driver = bmc_and_driver
    ev = run(driver, clock)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ev.read_back = PowerState.ON
    d = ev.as_dict()
    assert d["requested"] == d["read_back"] == "off" and d["already"] is False
    assert d["started_at_iso"].endswith("+00:00")
    assert isinstance(ev, FenceEvidence)


@pytest.mark.parametrize("kwargs", [
    {"deadline": 0}, {"poll_interval": -1}, {"retry_backoff": 5, "retry_backoff_max": 2},
    {"max_concurrent": 0},
])
def test_policy_refuses_nonsense(kwargs):
    with pytest.raises(ValueError):
        FencePolicy(**kwargs)
