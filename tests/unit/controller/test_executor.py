"""The executor's switches: pause, dry-run, the mass-failure guard, per-tick cap."""

import logging

from instanceha.controller.executor import GUARD_OVERRIDE_UNTIL, PAUSED, Executor
from instanceha.engine.guard import GuardPolicy
from instanceha.engine.model import HostView, Phase
from tests.unit.fakes import FakeLeadership


class Recorder:
    def __init__(self):
        self.calls = []

    def act(self, views, fence_allowed, verify):
        for host in fence_allowed:
            verify()
            self.calls.append(host)


def views(healthy, failed):
    out = {f"h{i}": HostView(f"h{i}", Phase.HEALTHY, 0.0, "ok", "alive") for i in range(healthy)}
    out.update({f"f{i}": HostView(f"f{i}", Phase.FAILED, float(i), "dead", "dead")
                for i in range(failed)})
    return out


POLICY = GuardPolicy(max_failed_hosts=3, max_failed_percent=50, max_fences_per_tick=2,
                     stable_after=10)


def test_hands_over_at_most_the_cap_oldest_first():
    rec = Recorder()
    ex = Executor(FakeLeadership(), rec, POLICY)
    assert ex.act(views(20, 3), now=1.0) == ["f0", "f1"]
    assert rec.calls == ["f0", "f1"]


def test_pause_stops_everything_and_says_so_once(caplog):
    rec = Recorder()
    ex = Executor(FakeLeadership(), rec, POLICY)
    with caplog.at_level(logging.WARNING):
        for now in (1.0, 2.0, 3.0):
            assert ex.act(views(20, 1), now, {PAUSED: "maintenance window"}) == []
    assert rec.calls == []
    assert caplog.text.count("paused by an operator (maintenance window)") == 1
    assert ex.act(views(20, 1), 4.0, {}) == ["f0"]


def test_guard_holds_a_storm_until_an_operator_override(caplog):
    rec = Recorder()
    wall = [1000.0]
    ex = Executor(FakeLeadership(), rec, POLICY, wall=lambda: wall[0])
    storm = views(5, 5)
    with caplog.at_level(logging.WARNING):
        assert ex.act(storm, 1.0) == []
    assert "safety hold" in caplog.text and ex.guard_state.held
    assert ex.act(storm, 2.0, {GUARD_OVERRIDE_UNTIL: 1500.0}) == ["f0", "f1"]
    wall[0] = 1600.0  # the override expired
    assert ex.act(storm, 3.0, {GUARD_OVERRIDE_UNTIL: 1500.0}) == []
    assert rec.calls == ["f0", "f1"]


def test_standby_evaluates_the_guard_but_never_acts():
    rec = Recorder()
    lead = FakeLeadership(leader=False)
    ex = Executor(lead, rec, POLICY)
    assert ex.act(views(20, 1), 1.0) == []
    assert lead.verified == 0 and rec.calls == []


def test_a_new_safety_hold_is_announced_once_by_the_leader():
    held = []
    ex = Executor(FakeLeadership(), Recorder(), POLICY,
                  on_hold=lambda state, policy: held.append((sorted(state.dead),
                                                              policy.max_failed_hosts)))
    storm = views(5, 5)
    ex.act(storm, 1.0)
    ex.act(storm, 2.0)
    assert held == [(["f0", "f1", "f2", "f3", "f4"], 3)]
    standby = Executor(FakeLeadership(leader=False), Recorder(), POLICY,
                       on_hold=lambda *a: held.append("standby"))
    standby.act(storm, 1.0)
    assert "standby" not in held
