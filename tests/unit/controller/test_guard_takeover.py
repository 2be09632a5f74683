"""The mass-failure guard across a change of leader, through the controller's own
loop on a fake coordinator and clock: the hold is persisted in the control node,
a cold new leader starts from it, the status shows it, an operator releases it."""

import time

import pytest

from instanceha.controller import status
from instanceha.controller.executor import GUARD_HOLD, GUARD_OVERRIDE_UNTIL, BaseActuator
from instanceha.controller.service import ControllerService, ControllerSettings
from instanceha.engine.guard import GuardPolicy, GuardState
from instanceha.engine.model import DetectionPolicy, HostView, Phase
from tests.unit.clock import FakeClock
from tests.unit.fakes import FakeCoordinator, FakeLeadership

GUARD = GuardPolicy(max_failed_hosts=1, max_failed_percent=100, stable_after=30,
                    max_vanished_per_tick=0)
HOSTS = [f"compute{i}" for i in range(1, 7)]


class Recorder(BaseActuator):
    def __init__(self):
        self.calls = []

    def act(self, views, fence_allowed, verify):
        for host in fence_allowed:
            self.calls.append((host, verify()))


@pytest.fixture
def world():
    clock = FakeClock()
    coord = FakeCoordinator(clock)
    clock.advance(60)
    for h in HOSTS:
        coord.add_member(h)
    return clock, coord


def _service(clock, coord, token):
    coord.leadership_obj = FakeLeadership(token=token)
    handler = Recorder()
    svc = ControllerService(coord, ControllerSettings(name=f"ctl-{token}",
                                                      policy=DetectionPolicy(), guard=GUARD),
                            handler, clock=clock)
    svc.start()
    return svc, handler


def _tick(svc, clock, coord, seconds=0.2):
    clock.advance(seconds)
    for h in coord.members:
        coord.beat(h)
    svc.step()


def test_a_cold_new_leader_honours_the_hold_of_the_previous_one(world):
    clock, coord = world
    a, a_handler = _service(clock, coord, token=5)
    _tick(a, clock, coord)
    del coord.members["compute1"], coord.members["compute2"]
    for _ in range(10):
        _tick(a, clock, coord)
    assert a.reconciler.executor.guard_state.held and a_handler.calls == []
    hold = coord.control[GUARD_HOLD]
    assert hold["token"] == 5 and "2 hosts look dead (> 1)" in hold["reason"]
    assert coord.status["guard"]["held"] and coord.status["guard"]["since"] == hold["since"]
    coord.add_member("compute2")  # back: under the limits, A waits for a stable picture
    for _ in range(5):
        _tick(a, clock, coord)
    assert a.reconciler.executor.guard_state.held and a_handler.calls == []

    # A dies; B starts cold after the storm: on its own it would fence compute1 now
    b, b_handler = _service(clock, coord, token=6)
    started = clock.now + 0.2  # B's first tick: its picture starts there
    for _ in range(10):
        _tick(b, clock, coord)
    assert b.reconciler.views["compute1"].phase is Phase.FAILED
    assert b_handler.calls == []
    assert coord.control[GUARD_HOLD] == dict(hold, token=6)
    published = coord.status["guard"]
    assert published["held"] and "waiting" in published["reason"]
    assert published["since"] == hold["since"] and published["cause"] == hold["reason"]
    while clock.now - started < 29.8:
        _tick(b, clock, coord)
    assert b_handler.calls == []
    _tick(b, clock, coord)  # stable for guard_stable_after: lifts, fences, clears
    assert b_handler.calls == [("compute1", 6)]
    assert GUARD_HOLD not in coord.control and not coord.status["guard"]["held"]


def test_an_operator_override_releases_the_taken_over_hold(world):
    clock, coord = world
    coord.control[GUARD_HOLD] = {"held": True, "reason": "4 hosts vanished together",
                                 "since": time.time() - 5, "token": 5}
    del coord.members["compute1"]
    b, handler = _service(clock, coord, token=6)
    for _ in range(10):
        _tick(b, clock, coord)
    assert handler.calls == [] and b.reconciler.executor.guard_state.held
    coord.update_control({GUARD_OVERRIDE_UNTIL: time.time() + 600})
    _tick(b, clock, coord)
    assert handler.calls == [("compute1", 6)]
    assert GUARD_HOLD not in coord.control


def test_the_countdown_of_a_waiting_hold_does_not_republish_the_status(world):
    clock, coord = world
    snap = coord.snapshot()
    views = {"compute1": HostView("compute1", Phase.FAILED, 0.0, "r", "dead")}
    report = {"cause": "2 hosts look dead (> 1)", "since": 900.0, "rules": [],
              "aggregates": {"known": True, "count": 2, "age": 1.0, "error": None}}

    def doc(reason, age):
        state = GuardState(held=True, reason=reason, cause=report["cause"])
        return status.build("ctl", 6, views, snap, state, 10.0, 1000.0,
                            guard_report=dict(report, aggregates=dict(report["aggregates"],
                                                                      age=age)))

    pub = status.StatusPublisher(coord, refresh=5.0)
    assert pub.maybe_publish(doc("waiting (1 s so far)", 1.0), 10.0)
    assert not pub.maybe_publish(doc("waiting (2 s so far)", 2.0), 11.0)
    assert pub.maybe_publish(doc("waiting (6 s so far)", 6.0), 15.1)  # the refresh
    assert coord.status["guard"]["reason"] == "waiting (6 s so far)"
    assert coord.status["guard"]["held"] is True
