"""The mass-failure guard as a grid: no clock, no sleep."""

import pytest

from instanceha.engine import guard
from instanceha.engine.guard import GuardPolicy, GuardState
from instanceha.engine.model import HostView, Phase

POLICY = GuardPolicy(max_failed_hosts=3, max_failed_percent=34.0, max_fences_per_tick=2,
                     stable_after=30.0)


def views(healthy=0, suspect=0, failed=0, stopped=0, failed_since=None):
    out = {}
    spec = [(Phase.HEALTHY, healthy), (Phase.SUSPECT, suspect), (Phase.FAILED, failed),
            (Phase.STOPPED, stopped)]
    for phase, n in spec:
        for i in range(n):
            name = f"{phase.value.lower()}{i}"
            since = (failed_since or {}).get(name, 0.0)
            out[name] = HostView(name, phase, since, "r", "rule")
    return out


@pytest.mark.parametrize(
    "healthy,suspect,failed,stopped,held",
    [
        (10, 0, 1, 0, False),     # one host dead: fence
        (10, 0, 3, 0, False),     # at the absolute limit, 23%: fence
        (10, 2, 2, 0, True),      # 4 look dead > 3
        (4, 0, 3, 0, True),       # 43% > 34%
        (1, 0, 1, 0, False),      # 50% but a single host is never a mass failure
        (2, 0, 2, 20, True),      # stopped hosts are not monitored: 50%
        (0, 0, 0, 5, False),      # nothing monitored
    ],
)
def test_hold_grid(healthy, suspect, failed, stopped, held):
    state = guard.evaluate(views(healthy, suspect, failed, stopped), GuardState(), POLICY, 0.0)
    assert state.held is held
    assert bool(state.reason) is held


def test_hold_lifts_only_after_the_picture_is_stable():
    storm = views(healthy=5, failed=5)
    s1 = guard.evaluate(storm, GuardState(), POLICY, now=100.0)
    assert s1.held and s1.since == 100.0
    calm = views(healthy=9, failed=1)
    s2 = guard.evaluate(calm, s1, POLICY, now=110.0)
    assert s2.held and "waiting" in s2.reason and s2.since == 100.0
    s3 = guard.evaluate(calm, s2, POLICY, now=139.9)
    assert s3.held
    s4 = guard.evaluate(calm, s3, POLICY, now=140.0)
    assert not s4.held
    assert guard.select(calm, s4, POLICY) == ["failed0"]


def test_operator_release_lifts_at_once_and_new_storm_holds_again():
    storm = views(healthy=5, failed=5)
    s1 = guard.evaluate(storm, GuardState(), POLICY, now=1.0)
    s2 = guard.evaluate(storm, s1, POLICY, now=2.0, released=True)
    assert not s2.held and "operator" in s2.reason
    s3 = guard.evaluate(storm, s2, POLICY, now=3.0)
    assert s3.held


def test_select_nothing_while_held_and_oldest_first_capped():
    v = views(healthy=20, failed=3, failed_since={"failed0": 5.0, "failed1": 1.0,
                                                  "failed2": 3.0})
    state = guard.evaluate(v, GuardState(), POLICY, 10.0)
    assert not state.held
    assert guard.select(v, state, POLICY) == ["failed1", "failed2"]
    assert guard.select(v, GuardState(held=True, reason="x"), POLICY) == []


@pytest.mark.parametrize("kwargs", [dict(max_failed_hosts=0), dict(max_fences_per_tick=0),
                                    dict(max_failed_percent=0), dict(max_failed_percent=101)])
def test_policy_bounds(kwargs):
    with pytest.raises(ValueError):
        GuardPolicy(**kwargs)
