"""The recovery actuator decides again only the hosts that may have changed:
a steady cloud costs a tick nothing per host (issue 15), and nothing that
changes is missed for it."""

import dataclasses

import pytest

from instanceha.controller import recovery
from instanceha.engine.model import Phase
from tests.unit.controller.test_recovery_actuator import Log, Verify, make, svc, view


@pytest.fixture
def decided(monkeypatch):
    """The hosts ``next_stage`` was asked about, in order."""
    seen = []
    real = recovery.next_stage

    def counting(facts, policy):
        seen.append(facts)
        return real(facts, policy)

    monkeypatch.setattr(recovery, "next_stage", counting)
    return seen


def healthy(*hosts):
    return {h: view(h, Phase.HEALTHY) for h in hosts}


def tick(act, views, allowed=(), verify=None, refresh=False):
    if refresh:
        act.clock.advance(1.0)
        act.nova_view.refresh()
    act.act(views, list(allowed), verify or Verify(Log()))
    act.wait(timeout=10)


def test_a_steady_cloud_is_decided_once_then_not_again(decided):
    log = Log()
    act, _, _ = make(log, [svc(h, up=True) for h in ("c1", "c2", "c3")])
    views = healthy("c1", "c2", "c3")
    tick(act, views)
    assert len(decided) == 3
    tick(act, views)
    tick(act, views, refresh=True)  # Nova read again, nothing that decides moved
    assert len(decided) == 3
    assert act.decision("c2")[0] is recovery.Stage.IDLE


def test_only_the_host_whose_view_changed_is_decided_and_fenced(decided):
    log = Log()
    act, nova, _ = make(log, [svc(h, up=True) for h in ("c1", "c2", "c3")])
    views = healthy("c1", "c2", "c3")
    tick(act, views)
    del decided[:]
    failed = dict(views, c2=view("c2", Phase.FAILED))  # the reconciler replaces a view
    tick(act, failed, allowed=["c2"], verify=Verify(log))
    assert [f.phase for f in decided] == [Phase.FAILED]
    assert ("power_off", "c2") in log
    assert act.decision("c2")[0] is recovery.Stage.FENCE
    # a host with a recovery under way (our marker in Nova) is decided every tick
    del decided[:]
    tick(act, failed, verify=Verify(log), refresh=True)
    assert {f.marker is not None for f in decided} == {True}


def test_a_change_in_nova_alone_is_decided(decided):
    log = Log()
    act, nova, _ = make(log, [svc(h, up=True) for h in ("c1", "c2")])
    views = healthy("c1", "c2")
    tick(act, views)
    revision = act.revision
    nova.set_service("c1", status="disabled", disabled_reason="maintenance by ops")
    tick(act, views, refresh=True)
    assert act.decision("c1")[0] is recovery.Stage.LEAVE_ALONE
    assert act.revision > revision


def test_a_refresh_that_moves_only_updated_at_changes_nothing(decided):
    log = Log()
    act, nova, _ = make(log, [svc("c1", up=True)])
    tick(act, healthy("c1"))
    revision, moved = act.revision, len(decided)
    nova.svc["c1"] = dataclasses.replace(nova.svc["c1"], updated_at=act.clock.utcnow())
    tick(act, healthy("c1"), refresh=True)
    assert (act.revision, len(decided)) == (revision, moved)


def test_after_an_idle_tick_every_host_is_decided_again(decided):
    log = Log()
    act, _, _ = make(log, [svc(h, up=True) for h in ("c1", "c2")])
    views = healthy("c1", "c2")
    tick(act, views)
    act.idle()  # not leading for a while: what happened then is not known
    del decided[:]
    tick(act, views)
    assert len(decided) == 2


def test_nova_up_is_the_same_object_until_a_refresh():
    log = Log()
    act, nova, _ = make(log, [svc("c1", up=True), svc("c2", up=True, forced=True)])
    first = act.nova_up()
    assert dict(first) == {"c1": True} and act.nova_up() is first
    with pytest.raises(TypeError):
        first["c1"] = False  # read-only: the reconciler keeps it


def test_a_tick_cut_short_by_an_error_decides_every_host_next_time(monkeypatch):
    log = Log()
    act, _, _ = make(log, [svc(h, up=True) for h in ("c1", "c2", "c3")])
    views = healthy("c1", "c2", "c3")
    tick(act, views)
    real = recovery.next_stage

    def failing(facts, policy):
        raise RuntimeError("journal down")

    monkeypatch.setattr(recovery, "next_stage", failing)
    changed = dict(views, c1=view("c1", Phase.FAILED))
    with pytest.raises(RuntimeError):
        tick(act, changed)
    seen = []
    monkeypatch.setattr(recovery, "next_stage",
                        lambda facts, policy: seen.append(facts.phase) or real(facts, policy))
    tick(act, changed)  # the same views map: nothing new in it, yet c1 was never decided
    assert act.decision("c1")[0] is recovery.Stage.FENCE
    assert sorted(p.value for p in seen) == ["FAILED", "HEALTHY", "HEALTHY"]
