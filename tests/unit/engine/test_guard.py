"""The mass-failure guard as a grid: no clock, no sleep."""

import dataclasses

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


def test_the_phase_index_gives_what_the_views_give():
    """The controller hands the guard its phase index; same state, same choice."""
    v = views(healthy=6, suspect=1, failed=3, stopped=2,
              failed_since={"failed0": 5.0, "failed1": 1.0, "failed2": 3.0})
    plain = guard.evaluate(v, GuardState(), POLICY, 10.0)
    indexed = guard.evaluate(v, GuardState(), POLICY, 10.0, phases=guard.index(v))
    assert indexed == plain and plain.held
    calm = views(healthy=20, failed=3, failed_since={"failed0": 5.0, "failed1": 1.0,
                                                     "failed2": 3.0})
    state = guard.evaluate(calm, GuardState(), POLICY, 10.0, phases=guard.index(calm))
    assert guard.select(calm, state, POLICY, phases=guard.index(calm)) == \
        guard.select(calm, state, POLICY) == ["failed1", "failed2"]


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


# -- per-aggregate limits ---------------------------------------------------------------

AGG = GuardPolicy(max_failed_hosts=100, max_failed_percent=100, max_fences_per_tick=5,
                  stable_after=30.0, max_failed_percent_per_aggregate=50.0,
                  aggregate_min_hosts=4, max_vanished_per_tick=0)


def cloud(dead=(), stopped=(), healthy_extra=20):
    """rack-a: a1..a4, rack-b: b1..b4 (b1 is also in rack-a's 'gpu' aggregate),
    pair: p1, p2, trio: t1..t3; plus ``healthy_extra`` hosts in no aggregate."""
    names = [f"a{i}" for i in range(1, 5)] + [f"b{i}" for i in range(1, 5)] + \
        ["p1", "p2", "t1", "t2", "t3"] + [f"x{i}" for i in range(healthy_extra)]
    out = {}
    for n in names:
        phase = Phase.FAILED if n in dead else Phase.STOPPED if n in stopped else Phase.HEALTHY
        out[n] = HostView(n, phase, 0.0, "r", "rule")
    return out


AGGREGATES = {
    "rack-a": frozenset({"a1", "a2", "a3", "a4"}),
    "rack-b": frozenset({"b1", "b2", "b3", "b4"}),
    "gpu": frozenset({"a3", "a4", "b1", "b2"}),
    "pair": frozenset({"p1", "p2"}),
    "trio": frozenset({"t1", "t2", "t3"}),
    "with-strangers": frozenset({"t1", "t2", "nova-only-1", "nova-only-2"}),
}


@pytest.mark.parametrize(
    "dead,stopped,policy,over",
    [
        ((), (), AGG, []),
        (("a1", "a2"), (), AGG, []),                          # 50% of rack-a: not more
        (("a1", "a2", "a3"), (), AGG, ["rack-a"]),            # 75% of rack-a
        (("a4", "b1"), (), AGG, []),                          # 2 of gpu, 1 of each rack
        (("a3", "a4", "b1"), (), AGG, ["gpu"]),               # overlapping: gpu over, racks not
        (("a3", "a4", "b1", "b2"), (), AGG, ["gpu"]),         # 2 of each rack: 50%, gpu 100%
        (("a2", "a3", "a4", "b1"), (), AGG, ["gpu", "rack-a"]),
        (("p1", "p2"), (), AGG, []),                          # 2-host aggregate: too small
        (("t1", "t2", "t3"), (), AGG, []),                    # 3 < aggregate_min_hosts
        (("t1", "t2", "t3"), (), dataclasses.replace(AGG, aggregate_min_hosts=3), ["trio"]),
        (("a1", "a2"), ("a3",), AGG, []),                     # a3 stopped: 3 monitored < 4
        (("a1", "a2"), ("a3",), dataclasses.replace(AGG, aggregate_min_hosts=3),
         ["rack-a"]),                                         # 2 of 3 monitored: 67%
        (("x1", "x2", "x3", "x4", "x5"), (), AGG, []),        # in no aggregate
        (("a1",), (), dataclasses.replace(AGG, aggregate_min_hosts=1), []),  # one is never mass
        (("b2", "b3", "b4"), (), dataclasses.replace(AGG, max_failed_percent_per_aggregate=100),
         []),                                                 # 100: no percent limit
        (("b2", "b3"), (), dataclasses.replace(AGG, max_failed_hosts_per_aggregate=1,
                                               max_failed_percent_per_aggregate=100),
         ["rack-b"]),                                         # absolute: 2 > 1
        (("b2", "b3"), (), dataclasses.replace(AGG, max_failed_hosts_per_aggregate=2), []),
    ],
)
def test_per_aggregate_grid(dead, stopped, policy, over):
    state = guard.evaluate(cloud(dead, stopped), GuardState(), policy, 0.0, aggregates=AGGREGATES)
    assert sorted(b.aggregate for b in state.breaches) == sorted(over)
    assert state.held is bool(over)
    for name in over:
        assert f"aggregate {name}:" in state.reason
    assert state.aggregates_known


def test_aggregate_hosts_unknown_to_instanceha_are_not_counted():
    # with-strangers: t1, t2 monitored, the two others known to Nova only
    state = guard.evaluate(cloud(("t1", "t2")), GuardState(), AGG, 0.0, aggregates=AGGREGATES)
    assert not state.held  # 2 monitored hosts < aggregate_min_hosts
    state = guard.evaluate(cloud(("t1", "t2")), GuardState(),
                           dataclasses.replace(AGG, aggregate_min_hosts=2), 0.0,
                           aggregates=AGGREGATES)
    assert {b.aggregate for b in state.breaches} == {"with-strangers", "trio"}
    assert "aggregate with-strangers: 2 of 2 monitored hosts look dead (100% > 50%)" \
        in state.reason


def test_per_aggregate_reason_names_a_few_and_counts_the_rest():
    aggregates = {f"agg{i}": frozenset({f"h{i}-{j}" for j in range(4)}) for i in range(6)}
    views_ = {f"h{i}-{j}": HostView(f"h{i}-{j}", Phase.FAILED if j < 3 else Phase.HEALTHY,
                                    0.0, "r", "rule") for i in range(6) for j in range(4)}
    views_.update({f"ok{i}": HostView(f"ok{i}", Phase.HEALTHY, 0.0, "r", "rule")
                   for i in range(200)})
    state = guard.evaluate(views_, GuardState(), AGG, 0.0, aggregates=aggregates)
    assert state.held and len(state.breaches) == 6
    assert state.reason.count("aggregate agg") == 3
    assert "3 more aggregate limits exceeded" in state.reason
    assert state.rules == ("max_failed_percent_per_aggregate",)


@pytest.mark.parametrize(
    "n_dead,policy,held",
    [
        (1, AGG, False),
        (2, AGG, False),       # 2 of an aggregate of (at least) 4: 50%, not more
        (3, AGG, True),        # 3 may be 75% of one aggregate of 4
        (3, dataclasses.replace(AGG, aggregate_min_hosts=6), False),   # 3 of 6: 50%
        (4, dataclasses.replace(AGG, aggregate_min_hosts=6), True),
        (9, dataclasses.replace(AGG, max_failed_percent_per_aggregate=100), False),
        (2, dataclasses.replace(AGG, max_failed_hosts_per_aggregate=1,
                                max_failed_percent_per_aggregate=100), True),
    ],
)
def test_unknown_aggregates_assume_the_worst_grouping(n_dead, policy, held):
    dead = [f"x{i}" for i in range(n_dead)]
    state = guard.evaluate(cloud(dead), GuardState(), policy, 0.0, aggregates=None)
    assert state.held is held
    assert not state.aggregates_known
    if held:
        assert "host aggregates unknown" in state.reason
        assert all(b.aggregate is None for b in state.breaches)


def test_a_hold_for_want_of_the_grouping_lifts_once_it_is_known_and_nothing_exceeds():
    """A controller just started: 3 hosts die before it has read the aggregates.
    Held (they may be 75% of one aggregate); read the next moment: none are in
    one, nothing is exceeded, the hold lifts at once instead of after
    stable_after (it waited for knowledge, not for the picture to settle)."""
    dead = ("x1", "x2", "x3")
    held = guard.evaluate(cloud(dead), GuardState(), AGG, 0.0, aggregates=None)
    assert held.held and held.blind
    lifted = guard.evaluate(cloud(dead), held, AGG, 1.0, aggregates={})
    assert not lifted.held and lifted.aggregates_known
    assert "held only while they were unknown" in lifted.reason
    # still unknown a tick later: still held, still blind
    again = guard.evaluate(cloud(dead), held, AGG, 1.0, aggregates=None)
    assert again.held and again.blind


def test_a_hold_the_known_grouping_confirms_or_a_real_limit_raised_waits_to_settle():
    dead = ("a1", "a2", "a3")
    held = guard.evaluate(cloud(dead), GuardState(), AGG, 0.0, aggregates=None)
    # the grouping, once read, shows the breach: held, no longer blind
    grouped = {"rack": frozenset({"a1", "a2", "a3", "a4"})}
    confirmed = guard.evaluate(cloud(dead), held, AGG, 1.0, aggregates=grouped)
    assert confirmed.held and not confirmed.blind
    # back under the limits: the usual wait for a stable picture
    waiting = guard.evaluate(cloud(("a1",)), confirmed, AGG, 2.0, aggregates=grouped)
    assert waiting.held and "waiting for" in waiting.reason
    # a cluster-wide limit with unknown aggregates: not blind either
    policy = dataclasses.replace(AGG, max_failed_hosts=2)
    real = guard.evaluate(cloud(dead), GuardState(), policy, 0.0, aggregates=None)
    assert real.held and not real.blind
    under = guard.evaluate(cloud(("a1",)), real, policy, 1.0, aggregates={})
    assert under.held and "waiting for" in under.reason


def test_unknown_aggregates_keep_the_cluster_wide_limits():
    policy = dataclasses.replace(AGG, max_failed_hosts=1, max_failed_percent_per_aggregate=100)
    state = guard.evaluate(cloud(("x1", "x2")), GuardState(), policy, 0.0, aggregates=None)
    assert state.held and state.rules == ("max_failed_hosts",)


def test_no_grouping_means_cluster_wide_limits_only():
    dead = ("a1", "a2", "a3", "a4")
    assert guard.evaluate(cloud(dead), GuardState(), AGG, 0.0).held is False
    assert guard.evaluate(cloud(dead), GuardState(), AGG, 0.0, aggregates={}).held is False


def test_by_aggregate_inverts_nova_host_view():
    assert guard.by_aggregate({"c1": frozenset({"a", "b"}), "c2": frozenset({"b"}),
                               "c3": frozenset()}) == {"a": frozenset({"c1"}),
                                                      "b": frozenset({"c1", "c2"})}


# -- many hosts vanishing at once -----------------------------------------------------

VANISH = GuardPolicy(max_failed_hosts=100, max_failed_percent=100, stable_after=30.0,
                     max_vanished_per_tick=3, vanish_window=0.0)


def fleet(n=50, **phases):
    out = {f"h{i}": HostView(f"h{i}", Phase.HEALTHY, 0.0, "r", "rule") for i in range(n)}
    for host, phase in phases.items():
        out[host] = HostView(host, phase, 0.0, "r", "rule")
    return out


def run(policy, ticks, state=None):
    """``ticks``: (now, views) in order; returns the states."""
    state = state or GuardState()
    out = []
    for now, v in ticks:
        state = guard.evaluate(v, state, policy, now)
        out.append(state)
    return out


S, F, D = Phase.SUSPECT, Phase.FAILED, Phase.DEGRADED


def test_burst_of_vanished_hosts_holds_and_says_how_many():
    s0, s1 = run(VANISH, [(0.0, fleet()), (0.2, fleet(h1=S, h2=S, h3=F, h4=S))])
    assert not s0.held
    assert s1.held and s1.rules == ("max_vanished_per_tick",)
    assert "4 hosts vanished together in one tick (> 3)" in s1.reason
    assert "h1, h2, h3, h4" in s1.reason
    (b,) = s1.breaches
    assert (b.limit, b.observed) == (3, 4)


@pytest.mark.parametrize(
    "after,held",
    [
        (dict(h1=S, h2=S, h3=S), False),                 # 3: not more than 3
        (dict(h1=S, h2=S, h3=S, h4=D), False),           # DEGRADED is alive
        (dict(h1=S, h2=S, h3=Phase.STOPPED, h4=Phase.STOPPED), False),  # planned stops
        (dict(h1=F, h2=F, h3=F, h4=F), True),
    ],
)
def test_vanish_grid(after, held):
    _, s1 = run(VANISH, [(0.0, fleet()), (0.2, fleet(**after))])
    assert s1.held is held


def test_degraded_hosts_vanishing_count_and_forgotten_hosts_do_not():
    before = fleet(h1=D, h2=D)
    after = {h: v for h, v in fleet(h1=F, h2=F, h3=S).items() if h not in ("h4", "h5")}
    _, s1 = run(VANISH, [(0.0, before), (0.2, after)])
    assert not s1.held and set(s1.left) == {"h1", "h2", "h3"}
    _, s1 = run(VANISH, [(0.0, before), (0.2, fleet(h1=F, h2=F, h3=S, h4=S))])
    assert s1.held


def test_slow_trickle_never_trips_the_vanish_limit():
    policy = dataclasses.replace(VANISH, vanish_window=0.7)
    ticks, lost = [(0.0, fleet())], {}
    for i in range(1, 9):  # one more host lost every second: 8 dead in the end
        lost[f"h{i}"] = S
        ticks.append((float(i), fleet(**lost)))
    states = run(policy, ticks)
    assert not any(s.held for s in states)
    assert states[-1].dead == frozenset(lost)


def test_hosts_lost_within_the_window_count_together():
    # cut off at one instant, seen going silent over ~one heartbeat interval
    ticks = [(0.0, fleet()), (0.2, fleet(h1=S, h2=S)), (0.4, fleet(h1=S, h2=S, h3=S)),
             (0.6, fleet(h1=S, h2=S, h3=S, h4=S))]
    states = run(dataclasses.replace(VANISH, vanish_window=0.7), ticks)
    assert [s.held for s in states] == [False, False, False, True]
    assert "4 hosts vanished together within 0.7 s" in states[-1].reason
    states = run(dataclasses.replace(VANISH, vanish_window=0.3), ticks)
    assert not any(s.held for s in states)  # never more than 2 within 0.3 s
    states = run(VANISH, ticks)  # one tick only
    assert not any(s.held for s in states)


def test_a_fresh_state_counts_no_vanish():
    (s,) = run(VANISH, [(0.0, fleet(h1=F, h2=F, h3=F, h4=F, h5=F))])
    assert not s.held


def test_vanish_limit_zero_is_off():
    _, s1 = run(dataclasses.replace(VANISH, max_vanished_per_tick=0),
                [(0.0, fleet()), (0.2, fleet(**{f"h{i}": F for i in range(20)}))])
    assert not s1.held


def test_vanish_hold_lifts_only_after_the_stable_period():
    burst = fleet(h1=F, h2=F, h3=F, h4=F)
    states = run(VANISH, [(0.0, fleet()), (1.0, burst), (2.0, burst), (30.9, burst),
                          (31.0, burst)])
    assert [s.held for s in states] == [False, True, True, True, False]
    assert "waiting" in states[2].reason and "4 hosts vanished" in states[2].reason
    assert states[3].since == 1.0
    assert guard.select(burst, states[-1], VANISH) == ["h1", "h2", "h3", "h4"]


# -- a hold taken over from a previous leader --------------------------------------------

def test_adopted_hold_waits_for_the_stable_period_then_lifts():
    calm = views(healthy=9, failed=1)
    fresh = guard.evaluate(calm, GuardState(), POLICY, now=100.0)
    assert not fresh.held  # on its own, a new leader would fence failed0 at once
    adopted = guard.adopt(fresh, "5 hosts look dead (> 3)", since=90.0)
    assert adopted.held and adopted.since == 90.0 and "previous leader" in adopted.reason
    assert guard.select(calm, adopted, POLICY) == []
    s1 = guard.evaluate(calm, adopted, POLICY, now=101.0)
    assert s1.held and "waiting" in s1.reason and s1.cause == "5 hosts look dead (> 3)"
    s2 = guard.evaluate(calm, s1, POLICY, now=130.0)  # unchanged since 100.0 for 30 s
    assert not s2.held and guard.select(calm, s2, POLICY) == ["failed0"]


def test_adopted_hold_is_released_by_an_operator():
    calm = views(healthy=9, failed=1)
    adopted = guard.adopt(guard.evaluate(calm, GuardState(), POLICY, 1.0), "storm", 0.0)
    s = guard.evaluate(calm, adopted, POLICY, 2.0, released=True)
    assert not s.held and "operator" in s.reason


def test_adopting_keeps_a_hold_of_its_own():
    storm = views(healthy=5, failed=5)
    own = guard.evaluate(storm, GuardState(), POLICY, 1.0)
    assert guard.adopt(own, "something else", 0.0) is own


def test_cause_survives_while_waiting_and_is_cleared_on_lift():
    s1 = guard.evaluate(views(healthy=5, failed=5), GuardState(), POLICY, 0.0)
    s2 = guard.evaluate(views(healthy=9, failed=1), s1, POLICY, 1.0)
    assert s2.cause == s1.cause == s1.reason and s2.breaches == ()
    s3 = guard.evaluate(views(healthy=9, failed=1), s2, POLICY, 31.0)
    assert not s3.held and s3.cause == ""


@pytest.mark.parametrize("kwargs", [
    dict(max_failed_percent_per_aggregate=0), dict(max_failed_percent_per_aggregate=101),
    dict(max_failed_hosts_per_aggregate=-1), dict(max_vanished_per_tick=-1),
    dict(aggregate_min_hosts=0), dict(vanish_window=-0.1), dict(stable_after=-1)])
def test_new_policy_bounds(kwargs):
    with pytest.raises(ValueError):
        GuardPolicy(**kwargs)


def test_a_new_failure_waits_the_vanish_window_so_its_companions_are_counted():
    # session liveness: each host is FAILED the tick its session expires, and
    # ZooKeeper expires the sessions of hosts cut off together over a tick or two
    policy = GuardPolicy(max_failed_hosts=3, max_failed_percent=100.0, vanish_window=0.7)
    views = {f"c{i}": HostView(f"c{i}", Phase.HEALTHY, 0.0, "alive", "") for i in range(6)}
    views["c0"] = HostView("c0", Phase.FAILED, 10.0, "dead", "")
    state = guard.evaluate(views, GuardState(), policy, now=10.0)
    assert not state.held and guard.select(views, state, policy, now=10.0) == []
    assert guard.select(views, state, policy, now=10.5) == []  # still gathering
    for i in (1, 2, 3):  # the others' sessions expire a tick later
        views[f"c{i}"] = HostView(f"c{i}", Phase.FAILED, 10.5, "dead", "")
    state = guard.evaluate(views, state, policy, now=10.5)
    assert state.held and guard.select(views, state, policy, now=11.0) == []
    lone = {"c0": views["c0"], **{f"c{i}": HostView(f"c{i}", Phase.HEALTHY, 0.0, "alive", "")
                                  for i in range(1, 6)}}
    calm = guard.evaluate(lone, GuardState(), policy, now=10.8)
    assert guard.select(lone, calm, policy, now=10.8) == ["c0"]  # alone after the window
