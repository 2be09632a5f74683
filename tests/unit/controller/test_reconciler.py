"""Reconciler, executor and the controller's step, on a fake coordinator and clock."""

import dataclasses

import pytest

from instanceha import exceptions
from instanceha.controller import status
from instanceha.controller.executor import BaseActuator, Executor, LogOnlyActuator
from instanceha.controller.reconciler import Reconciler
from instanceha.controller.service import ControllerService, ControllerSettings
from instanceha.coordination import ConnectionState
from instanceha.engine.guard import GuardPolicy
from instanceha.engine.model import DetectionPolicy, Phase
from tests.unit.clock import FakeClock
from tests.unit.fakes import FakeCoordinator, FakeLeadership

POLICY = DetectionPolicy()
# two hosts only: every failure would trip the default mass-failure guard
NO_GUARD = GuardPolicy(max_failed_hosts=100, max_failed_percent=100)


class Recorder(BaseActuator):
    """An actuator that hands each allowed host over, verifying leadership first."""

    def __init__(self):
        self.calls = []

    def act(self, views, fence_allowed, verify):
        for host in fence_allowed:
            try:
                token = verify()
            except exceptions.NotLeader:
                return
            self.calls.append((host, token))


@pytest.fixture
def world():
    clock = FakeClock()
    coord = FakeCoordinator(clock)
    clock.advance(60)  # the controller has been connected and watching for a minute
    coord.add_member("compute1")
    coord.add_member("compute2")
    return clock, coord


def _reconciler(coord, leader=True):
    rec = Recorder()
    lead = FakeLeadership(leader=leader)
    return Reconciler(coord, POLICY, Executor(lead, rec, NO_GUARD)), rec, lead


def test_dead_host_is_failed_and_handed_over_once_per_tick(world):
    clock, coord = world
    r, rec, lead = _reconciler(coord)
    r.tick()
    assert {h: v.phase for h, v in r.views.items()} == {"compute1": Phase.HEALTHY,
                                                        "compute2": Phase.HEALTHY}
    del coord.members["compute1"]
    clock.advance(1.6)
    coord.beat("compute2")
    t = r.tick()
    assert [(x.host, x.after.phase) for x in t] == [("compute1", Phase.FAILED)]
    assert rec.calls == [("compute1", 5)]
    assert lead.verified == 1
    r.tick()  # level-triggered: still FAILED, handed over again (handlers are idempotent)
    assert rec.calls == [("compute1", 5), ("compute1", 5)]


def test_standby_decides_but_does_not_act(world):
    clock, coord = world
    r, rec, lead = _reconciler(coord, leader=False)
    del coord.members["compute1"]
    clock.advance(2)
    r.tick()
    assert r.views["compute1"].phase is Phase.FAILED
    assert rec.calls == [] and lead.verified == 0


def test_verify_failure_stops_acting_at_once(world):
    clock, coord = world
    r, rec, lead = _reconciler(coord)
    coord.members.clear()
    clock.advance(2)
    lead.verify_error = exceptions.NotLeader(reason="deposed")
    r.tick()
    assert rec.calls == []
    assert lead.verified == 1  # stopped at the first refusal, did not try compute2


def test_suspended_session_holds_every_host(world):
    clock, coord = world
    r, rec, _ = _reconciler(coord)
    coord.members.clear()
    coord.set_state(ConnectionState.SUSPENDED)
    clock.advance(5)
    r.tick()
    assert {v.phase for v in r.views.values()} == {Phase.SUSPECT}
    assert rec.calls == []
    coord.set_state(ConnectionState.CONNECTED)
    clock.advance(1.0)
    r.tick()
    assert {v.phase for v in r.views.values()} == {Phase.SUSPECT}  # just reconnected
    clock.advance(0.6)
    r.tick()
    assert {v.phase for v in r.views.values()} == {Phase.FAILED}


def test_forgotten_host_leaves_the_view(world):
    clock, coord = world
    r, _, _ = _reconciler(coord)
    r.tick()
    coord.forget_host("compute2")
    del coord.members["compute2"]
    r.tick()
    assert set(r.views) == {"compute1"}


def test_nova_down_with_agent_alive_is_degraded_not_failed(world):
    clock, coord = world
    rec = Recorder()
    r = Reconciler(coord, POLICY, Executor(FakeLeadership(), rec, NO_GUARD),
                   nova_states=lambda: {"compute1": False})
    r.tick()
    assert r.views["compute1"].phase is Phase.DEGRADED
    assert rec.calls == []


def _service(clock, coord, handler):
    settings = ControllerSettings(name="ctl", policy=POLICY, tick_interval=0.2,
                                  session_timeout=2.0, guard=NO_GUARD)
    svc = ControllerService(coord, settings, handler, clock=clock)
    svc.start()
    return svc


def test_tick_after_a_long_gap_acts_on_nothing(world):
    clock, coord = world
    rec = Recorder()
    svc = _service(clock, coord, rec)
    svc.step()
    coord.members.pop("compute1")
    clock.advance(5.0)  # the process was frozen for 5 s
    coord.beat("compute2")
    svc.step()
    assert svc.reconciler.views["compute1"].phase is Phase.FAILED
    assert rec.calls == []
    clock.advance(0.2)
    coord.beat("compute2")
    svc.step()
    assert rec.calls == [("compute1", 5)]


def test_start_retries_an_unreachable_coordinator(world):
    clock, coord = world
    coord.start_errors = [exceptions.CoordinatorUnavailable(where="zk", reason="refused")] * 2
    svc = ControllerService(coord, ControllerSettings(name="c", policy=POLICY), Recorder(),
                            clock=clock)
    svc.start()
    assert coord.started == 3 and svc.reconciler is not None


def test_start_refuses_a_rejected_session_timeout(world):
    clock, coord = world
    coord.start_errors = [exceptions.SessionTimeoutRejected(granted=4.0, requested=2.0)]
    svc = ControllerService(coord, ControllerSettings(name="c", policy=POLICY), Recorder(),
                            clock=clock)
    with pytest.raises(exceptions.SessionTimeoutRejected):
        svc.start()


def test_log_only_handler_never_claims_a_fence(world, caplog):
    clock, coord = world
    h = LogOnlyActuator()
    r = Reconciler(coord, POLICY, Executor(FakeLeadership(), h, NO_GUARD))
    coord.members.clear()
    clock.advance(2)
    r.tick()
    r.tick()
    assert len(h.handed) == 2  # compute1 and compute2, each recorded once
    assert "NOT fenced" in caplog.text


class RevisedRecorder(Recorder):
    """A recorder with the recovery actuator's ``revision``."""

    revision = 0


def test_the_status_is_built_only_when_its_inputs_change_or_the_refresh_is_due(
        world, monkeypatch):
    clock, coord = world
    handler = RevisedRecorder()
    svc = _service(clock, coord, handler)
    built = []
    real = status.build
    monkeypatch.setattr(status, "build", lambda *a, **kw: built.append(1) or real(*a, **kw))

    def step(seconds=0.2):
        for _ in range(round(seconds / 0.2)):
            clock.advance(0.2)
            for host in list(coord.members):
                coord.beat(host)
            svc.step()

    step()
    assert len(built) == 1 and coord.status["hosts"]["compute1"]["phase"] == "HEALTHY"
    for _ in range(10):  # a steady cloud: nothing an operator would see changed
        step()
    assert len(built) == 1
    handler.revision += 1  # Nova's record of a host or a decision changed
    step()
    assert len(built) == 2
    coord.update_control({"paused": {"reason": "maintenance"}})
    step()
    assert len(built) == 3 and coord.status["control"]["paused"]
    views = svc.reconciler.views
    m = coord.members["compute2"]  # a capability no view reads: the guest monitor's state
    coord.members["compute2"] = dataclasses.replace(
        m, capabilities=dict(m.capabilities, guest_monitor={"state": "disconnected"}))
    step()
    assert svc.reconciler.views is views  # no view changed, yet the status shows it
    assert len(built) == 4
    assert coord.status["hosts"]["compute2"]["guest_monitor"] == {"state": "disconnected"}
    coord.members.pop("compute1")  # a view changes
    before = len(built)
    step(2.0)
    assert len(built) > before and coord.status["hosts"]["compute1"]["phase"] == "FAILED"
    before = len(built)
    step(4.0)  # nothing changed for 4 s
    assert len(built) == before
    step(1.0)  # the refresh (5 s): published again so that readers see a live leader
    assert len(built) == before + 1


def test_health_counts_a_first_step_under_way_as_running_and_a_hung_one_as_stalled(world):
    """/healthz: 503 "starting" until the loop runs; a first step under way is
    not a stall (it was: "leadership gained" logged, /healthz still 503), one
    that outlasts ``stall_after`` is."""
    from instanceha.cmd import common

    clock, coord = world
    svc = ControllerService(coord, ControllerSettings(name="c", policy=POLICY,
                                                      tick_interval=20.0), Recorder(),
                            clock=clock)
    healthy = common.loop_health(lambda: svc.last_iteration, clock, stall_after=10.0)
    assert healthy() == (False, "starting")
    seen = []

    def first_step():
        seen.append(healthy()[0])
        clock.advance(11.0)
        seen.append(healthy())
        svc.stopping.set()

    svc.step = first_step
    svc.run()
    assert seen == [True, (False, "main loop stalled for 11.0 s")]
    assert healthy()[0]  # the step ended


def test_the_tick_after_a_reconnection_is_not_kept_waiting(world):
    """The view re-lists at the next tick after the coordinator connected
    again: that tick comes at once, not one interval later; stopping also ends
    the wait, whoever sets it."""
    clock, coord = world
    listeners = []
    coord.add_state_listener = listeners.append
    svc = ControllerService(coord, ControllerSettings(name="c", policy=POLICY,
                                                      tick_interval=0.2), Recorder(),
                            clock=clock)
    svc.start()
    assert len(listeners) == 1
    t0 = clock()
    svc.pause(0.2)
    assert clock() - t0 == pytest.approx(0.2)  # nothing happened: the whole interval
    listeners[0](ConnectionState.SUSPENDED)
    svc.pause(0.2)
    assert clock() - t0 == pytest.approx(0.4)
    listeners[0](ConnectionState.CONNECTED)
    svc.pause(0.2)
    assert clock() - t0 == pytest.approx(0.4)  # at once
    svc.pause(0.2)
    assert clock() - t0 == pytest.approx(0.6)  # once only
    svc.stopping.set()
    svc.pause(0.2)
    assert clock() - t0 == pytest.approx(0.6) and svc.stopping.is_set()
