"""The executor's switches: pause, dry-run, the mass-failure guard, per-tick cap."""

import logging

import pytest

from instanceha import exceptions
from instanceha.controller.executor import (
    GUARD_HOLD,
    GUARD_OVERRIDE_UNTIL,
    PAUSED,
    BaseActuator,
    Executor,
)
from instanceha.engine.guard import GuardPolicy
from instanceha.engine.model import HostView, Phase
from tests.unit.clock import FakeClock
from tests.unit.fakes import FakeLeadership


class Recorder(BaseActuator):
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
    clock = FakeClock(wall=1000.0)
    ex = Executor(FakeLeadership(), rec, POLICY, clock=clock)
    storm = views(5, 5)
    with caplog.at_level(logging.WARNING):
        assert ex.act(storm, 1.0) == []
    assert "safety hold" in caplog.text and ex.guard_state.held
    assert ex.act(storm, 2.0, {GUARD_OVERRIDE_UNTIL: 1500.0}) == ["f0", "f1"]
    clock.wall_now = 1600.0  # the override expired
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


# -- the hold outlives the leader ------------------------------------------------------

class Control:
    """The coordinator's control node: ``update_control`` merges like the real one;
    ``writes`` records each call."""

    def __init__(self, initial=None):
        self.map = dict(initial or {})
        self.writes = []
        self.error = None

    def update(self, changes):
        if self.error is not None:
            raise self.error
        self.writes.append(dict(changes))
        for key, value in changes.items():
            if value is None:
                self.map.pop(key, None)
            else:
                self.map[key] = value
        return dict(self.map)


def test_the_leader_persists_its_hold_once_and_clears_it_when_lifted():
    ctl = Control()
    clock = FakeClock(wall=5000.0)
    ex = Executor(FakeLeadership(token=7), Recorder(), POLICY, clock=clock,
                  persist=ctl.update)
    storm = views(5, 5)
    for now in (1.0, 2.0, 3.0):
        clock.wall_now += 1
        ex.act(storm, now, dict(ctl.map))
    (write,) = ctl.writes
    hold = write[GUARD_HOLD]
    assert hold == {"held": True, "reason": ex.guard_state.cause, "since": 5001.0, "token": 7}
    assert "5 hosts look dead (> 3)" in hold["reason"]
    calm = views(9, 1)
    ex.act(calm, 4.0, dict(ctl.map))  # waiting to lift: same hold, not written again
    assert len(ctl.writes) == 1
    assert ex.act(calm, 14.0, dict(ctl.map)) == ["f0"]
    assert ctl.writes[-1] == {GUARD_HOLD: None} and GUARD_HOLD not in ctl.map


def test_a_standby_never_writes_the_hold():
    ctl = Control()
    ex = Executor(FakeLeadership(leader=False), Recorder(), POLICY, persist=ctl.update)
    ex.act(views(5, 5), 1.0, {})
    assert ex.guard_state.held and ctl.writes == []


def test_a_write_not_yet_seen_is_not_repeated_at_every_tick():
    ctl = Control()
    ex = Executor(FakeLeadership(), Recorder(), POLICY, clock=FakeClock(wall=100.0),
                  persist=ctl.update)
    for now in (1.0, 2.0, 3.0):
        ex.act(views(5, 5), now, {})  # the snapshot lags: never shows the write
    assert len(ctl.writes) == 1
    ex.act(views(5, 5), 7.0, {})  # still not there after a while: written again
    assert len(ctl.writes) == 2


def test_a_failed_write_is_retried_and_said_once(caplog):
    ctl = Control()
    ctl.error = exceptions.CoordinatorUnavailable(where="zk", reason="ConnectionLoss")
    ex = Executor(FakeLeadership(), Recorder(), POLICY, clock=FakeClock(wall=100.0),
                  persist=ctl.update)
    with caplog.at_level(logging.WARNING):
        ex.act(views(5, 5), 1.0, {})
        ex.act(views(5, 5), 2.0, {})
    assert caplog.text.count("safety hold not persisted") == 1 and ctl.writes == []
    ctl.error = None
    ex.act(views(5, 5), 3.0, {})
    assert ctl.writes and ctl.map[GUARD_HOLD]["held"]


def _persisted(token=5, since=900.0, reason="6 hosts look dead (> 3)"):
    return {GUARD_HOLD: {"held": True, "reason": reason, "since": since, "token": token}}


def test_a_new_leader_starts_from_the_persisted_hold(caplog):
    ctl = Control(_persisted())
    held = []
    rec = Recorder()
    ex = Executor(FakeLeadership(token=6), rec, POLICY, clock=FakeClock(wall=1000.0),
                  persist=ctl.update, on_hold=lambda *a: held.append(a))
    calm = views(20, 1)  # on its own, this leader would fence f0 at once
    with caplog.at_level(logging.WARNING):
        assert ex.act(calm, 50.0, dict(ctl.map)) == []
    assert "safety hold taken over from the previous leader (token 5, held for 100 s)" \
        in caplog.text
    assert ex.guard_state.held and rec.calls == [] and held == []  # not a new alert
    assert ex.guard_state.since == -50.0  # 100 s before now, on this leader's clock
    # the new leader owns the record now (its token, the original since)
    assert ctl.map[GUARD_HOLD] == dict(_persisted()[GUARD_HOLD], token=6)
    assert ex.guard_report()["since"] == 900.0
    assert ex.act(calm, 59.9, dict(ctl.map)) == []
    assert ex.act(calm, 60.0, dict(ctl.map)) == ["f0"]  # unchanged for stable_after
    assert GUARD_HOLD not in ctl.map


def test_an_operator_override_releases_a_persisted_hold():
    ctl = Control(dict(_persisted(), **{GUARD_OVERRIDE_UNTIL: 2000.0}))
    ex = Executor(FakeLeadership(token=6), Recorder(), POLICY, clock=FakeClock(wall=1000.0),
                  persist=ctl.update)
    assert ex.act(views(5, 5), 1.0, dict(ctl.map)) == ["f0", "f1"]
    assert not ex.guard_state.held and GUARD_HOLD not in ctl.map


def test_a_stale_read_never_brings_a_hold_back():
    ex = Executor(FakeLeadership(token=6), Recorder(), POLICY, clock=FakeClock(wall=1000.0),
                  persist=Control().update)
    stale = _persisted()
    ex.act(views(20, 1), 1.0, stale)
    assert ex.act(views(20, 1), 11.0, stale) == ["f0"]  # lifted; the read still shows it
    assert ex.act(views(20, 1), 12.0, stale) == ["f0"]  # already taken over once: not again
    # this term's own record, read late after it was cleared: not a previous leader's
    ex2 = Executor(FakeLeadership(token=6), Recorder(), POLICY, persist=Control().update)
    assert ex2.act(views(20, 1), 1.0, _persisted(token=6)) == ["f0"]


def test_a_standby_does_not_take_the_persisted_hold():
    ex = Executor(FakeLeadership(leader=False), Recorder(), POLICY, persist=Control().update)
    ex.act(views(20, 1), 1.0, _persisted())
    assert not ex.guard_state.held


def test_a_leader_already_holding_replaces_the_record_with_its_own():
    ctl = Control(_persisted(reason="old"))
    ex = Executor(FakeLeadership(token=6), Recorder(), POLICY, clock=FakeClock(wall=1000.0),
                  persist=ctl.update)
    ex.act(views(5, 5), 1.0, dict(ctl.map))
    hold = ctl.map[GUARD_HOLD]
    assert hold["token"] == 6 and "5 hosts look dead" in hold["reason"]


@pytest.mark.parametrize("record", [None, {"held": False}, "garbage", {"held": True}])
def test_odd_records_are_harmless(record):
    ex = Executor(FakeLeadership(token=6), Recorder(), POLICY, clock=FakeClock(wall=1000.0),
                  persist=Control().update)
    ex.act(views(20, 1), 1.0, {GUARD_HOLD: record})
    assert ex.guard_state.held is (record == {"held": True})


# -- the per-aggregate grouping and the alert --------------------------------------------

AGG_POLICY = GuardPolicy(max_failed_hosts=100, max_failed_percent=100, max_fences_per_tick=5,
                         stable_after=10, max_failed_percent_per_aggregate=50,
                         aggregate_min_hosts=4)


def test_aggregates_from_the_provider_trip_the_guard_and_the_alert_names_the_rule():
    held = []
    v = views(20, 3)
    grouping = {"rack1": frozenset({"f0", "f1", "f2", "h0"})}
    ex = Executor(FakeLeadership(), Recorder(), AGG_POLICY, aggregates=lambda: grouping,
                  on_hold=lambda state, policy: held.append(state.breaches))
    assert ex.act(v, 1.0) == []
    ((breach,),) = held
    assert (breach.rule, breach.aggregate, breach.limit, breach.observed) == (
        "max_failed_percent_per_aggregate", "rack1", 50, 75.0)


def test_unknown_aggregates_hold_a_possible_aggregate_storm_and_say_so(caplog):
    grouping = [None]
    ex = Executor(FakeLeadership(), Recorder(), AGG_POLICY, aggregates=lambda: grouping[0])
    with caplog.at_level(logging.INFO):
        assert ex.act(views(20, 2), 1.0) == ["f0", "f1"]  # 2 of >= 4: 50%, not more
        assert ex.act(views(20, 3), 2.0) == []
    assert caplog.text.count("host aggregates unknown: the guard assumes") == 1
    assert "host aggregates unknown: 3 hosts look dead" in ex.guard_state.reason
    assert ex.guard_report()["aggregates"] == "unknown"
    grouping[0] = {"rack1": frozenset({"f0", "h0", "h1", "h2"})}
    with caplog.at_level(logging.INFO):
        ex.act(views(20, 3), 3.0)
    assert "host aggregates known (1 aggregates)" in caplog.text
    assert ex.act(views(20, 3), 12.0) == ["f0", "f1", "f2"]  # stable for 10 s


def test_a_failing_provider_counts_as_unknown_never_as_no_aggregates(caplog):
    def broken():
        raise RuntimeError("bug")

    calls = [0]

    def flaky():
        calls[0] += 1
        if calls[0] > 1:
            broken()
        return {}

    ex = Executor(FakeLeadership(), Recorder(), AGG_POLICY, aggregates=broken)
    with caplog.at_level(logging.INFO):
        assert ex.act(views(20, 3), 1.0) == []
    assert "host aggregates unknown (RuntimeError)" in caplog.text
    ex = Executor(FakeLeadership(), Recorder(), AGG_POLICY, aggregates=flaky)
    assert ex.act(views(20, 3), 1.0) == ["f0", "f1", "f2"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert ex.act(views(20, 3), 2.0) == []  # known, then not: said as a warning
    assert "host aggregates unknown (RuntimeError)" in caplog.text


def test_without_a_provider_only_the_cluster_wide_limits_apply():
    ex = Executor(FakeLeadership(), Recorder(), AGG_POLICY)
    assert ex.act(views(20, 3), 1.0) == ["f0", "f1", "f2"]
    assert ex.guard_report()["aggregates"].startswith("not configured")


def test_a_burst_of_vanished_hosts_holds_through_the_executor():
    held = []
    policy = GuardPolicy(max_failed_hosts=100, max_failed_percent=100, stable_after=10,
                         max_vanished_per_tick=3)
    ex = Executor(FakeLeadership(), Recorder(), policy,
                  on_hold=lambda state, p: held.append(state.rules))
    ex.act(views(30, 0), 1.0)
    after = views(30, 0)
    for i in range(4):
        after[f"h{i}"] = HostView(f"h{i}", Phase.SUSPECT, 1.2, "stale", "heartbeat-stale")
    assert ex.act(after, 1.2) == []
    assert held == [("max_vanished_per_tick",)]
    assert "4 hosts vanished together" in ex.guard_report()["reason"]
    assert ex.guard_report()["rules"] == ["max_vanished_per_tick"]
