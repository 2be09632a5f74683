"""The incremental tick: it decides only what changed, and decides the same as
deciding everything. Fake coordinator and clock, no sleep."""

import dataclasses
import random

import pytest

from instanceha.controller.executor import BaseActuator, Executor
from instanceha.controller.reconciler import Reconciler
from instanceha.coordination import ConnectionState, base
from instanceha.engine import detection, guard
from instanceha.engine.guard import GuardPolicy
from instanceha.engine.model import DetectionPolicy, Phase
from tests.unit.clock import FakeClock
from tests.unit.fakes import FakeCoordinator, FakeLeadership

POLICY = DetectionPolicy(reconnect_grace=1.0)
NO_GUARD = GuardPolicy(max_failed_hosts=1000, max_failed_percent=100)


class Nothing(BaseActuator):
    def act(self, views, fence_allowed, verify):
        pass


def _rec(coord):
    return Reconciler(coord, POLICY, Executor(FakeLeadership(), Nothing(), NO_GUARD))


@pytest.fixture
def counted(monkeypatch):
    calls = []
    real = detection.decide

    def decide(previous, obs, ctl, policy, now):
        calls.append(obs.host)
        return real(previous, obs, ctl, policy, now)

    monkeypatch.setattr(detection, "decide", decide)
    return calls


def test_a_steady_session_cluster_costs_no_decision(counted):
    clock = FakeClock()
    coord = FakeCoordinator(clock)
    clock.advance(60)
    for i in range(500):
        coord.add_member(f"h{i:03d}", session=True)
    r = _rec(coord)
    r.tick()
    assert len(counted) == 500 and r.touched is None  # the first tick looks at everyone
    counted.clear()
    for _ in range(50):
        clock.advance(0.2)
        r.tick()
    assert counted == [] and r.touched == frozenset()
    assert {v.phase for v in r.views.values()} == {Phase.HEALTHY}
    # one host's session expires: only it is decided again, then woken at its windows
    del coord.members["h007"]
    coord.heartbeats["h007"] = clock() - 2.0  # the expiry proves 2 s of silence
    clock.advance(0.2)
    r.tick()
    assert counted == ["h007"] and r.views["h007"].phase is Phase.FAILED


def test_a_host_is_woken_when_its_age_crosses_a_window(counted):
    clock = FakeClock()
    coord = FakeCoordinator(clock)
    clock.advance(60)
    coord.add_member("a", session=True)
    coord.add_member("b", session=True)
    r = _rec(coord)
    r.tick()
    del coord.members["a"]
    coord.heartbeats["a"] = clock()  # gone, and nothing proves any silence yet
    r.tick()
    assert r.views["a"].phase is Phase.SUSPECT
    counted.clear()
    for _ in range(7):  # 1.4 s: still inside heartbeat_stale_after (1.5 s)
        clock.advance(0.2)
        r.tick()
    assert counted == [] and r.views["a"].phase is Phase.SUSPECT
    clock.advance(0.2)
    r.tick()
    assert set(counted) == {"a"} and r.views["a"].phase is Phase.FAILED
    counted.clear()
    for _ in range(20):  # past the last window nothing wakes it any more
        clock.advance(0.2)
        r.tick()
    # at hung_after (2.0 s), the last window (twice if a tick falls right on it)
    assert set(counted) == {"a"} and len(counted) <= 2


def test_a_change_of_the_controllers_trust_decides_everyone_again(counted):
    clock = FakeClock()
    coord = FakeCoordinator(clock)
    clock.advance(60)
    for h in ("a", "b", "c"):
        coord.add_member(h, session=True)
    r = _rec(coord)
    r.tick()
    counted.clear()
    coord.set_state(ConnectionState.SUSPENDED)
    r.tick()
    assert sorted(counted) == ["a", "b", "c"]
    counted.clear()
    coord.set_state(ConnectionState.CONNECTED)
    r.tick()  # connected again, not settled yet
    assert sorted(counted) == ["a", "b", "c"]
    counted.clear()
    clock.advance(POLICY.settle_time + 0.1)
    r.tick()  # settled: trusted again
    assert sorted(counted) == ["a", "b", "c"]


def test_nova_state_changes_are_changes():
    clock = FakeClock()
    coord = FakeCoordinator(clock)
    clock.advance(60)
    coord.add_member("a", session=True)
    nova = {"a": True}
    r = Reconciler(coord, POLICY, Executor(FakeLeadership(), Nothing(), NO_GUARD),
                   nova_states=lambda: dict(nova))
    r.tick()
    assert r.views["a"].phase is Phase.HEALTHY
    nova["a"] = False
    r.tick()
    assert r.views["a"].phase is Phase.DEGRADED


def _world(seed, track):
    rng = random.Random(seed)
    clock = FakeClock()
    coord = FakeCoordinator(clock, track_changes=track)
    clock.advance(30)
    return rng, clock, coord


@pytest.mark.parametrize("seed", range(12))
def test_incremental_decides_as_deciding_everything(seed):
    """Two controllers watch the same random history: one decides every host at
    every tick (no change log), the other only what changed. Same views."""
    hosts = [f"h{i}" for i in range(30)]
    worlds = [_world(seed, track) for track in (False, True)]
    recs = [_rec(coord) for _, _, coord in worlds]
    for h in hosts:
        for _rng, _clock, coord in worlds:
            coord.add_member(h, session=h < "h2")  # a mixed cluster: session and heartbeat
    for _step in range(300):
        # the same random event in both worlds (each has its own rng, same seed)
        for rng, clock, coord in worlds:
            roll = rng.random()
            h = rng.choice(hosts)
            member = coord.members.get(h)
            if roll < 0.03 and member is not None:  # the session ends
                del coord.members[h]
                coord.heartbeats[h] = clock() - rng.choice((0.0, 2.0))
            elif roll < 0.06 and member is None:  # it joins again
                coord.add_member(h, incarnation=rng.randint(2, 10**6), session=h < "h2")
            elif roll < 0.08 and member is not None and h < "h2":  # a stall report
                coord.heartbeats[h] = clock() - rng.uniform(1.5, 3.0)
            elif roll < 0.5 and member is not None and h >= "h2":  # a data heartbeat
                coord.heartbeats[h] = clock()
            elif roll < 0.51:
                coord.set_state(rng.choice(list(ConnectionState)))
            clock.advance(rng.choice((0.1, 0.2, 0.2, 0.5)))
        for r in recs:
            r.tick()
        # the reason quotes the age when the phase was decided: not re-written
        # by the incremental tick while nothing else changes
        full, incremental = ({h: dataclasses.replace(v, reason=v.reason.split(" for ")[0])
                              for h, v in r.views.items()} for r in recs)
        assert incremental == full, f"step {_step}"
        # the phase index the guard reads is the views' own
        assert recs[1].phases == guard.index(recs[1].views), f"step {_step}"
    assert recs[1].full_ticks < recs[0].full_ticks


def test_alive_now_is_age_zero_whatever_the_clock():
    snap = base.ClusterSnapshot(taken_at=1e6, state=ConnectionState.CONNECTED,
                                connected_since=0.0, watching_since=0.0, hosts={},
                                members={}, heartbeats={"a": base.ALIVE_NOW, "b": 10.0})
    assert snap.heartbeat_age("a") == 0.0 and snap.heartbeat_age("b") == 1e6 - 10.0


def test_change_log_is_bounded_and_then_says_unknown():
    log = base.ChangeLog(keep=10)
    r0 = log.revision
    for i in range(8):
        log.record([f"h{i}"])
    assert log.since(r0, log.revision) == {f"h{i}" for i in range(8)}
    mid = log.revision
    for i in range(8, 20):
        log.record([f"h{i}", "x"])
    assert log.since(r0, log.revision) is None  # trimmed: look at everything
    assert log.since(log.revision - 1, log.revision) == {"h19", "x"}
    assert log.since(log.revision, log.revision) == frozenset()
    log.reset()
    assert log.since(mid, log.revision) is None
