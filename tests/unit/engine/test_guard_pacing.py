"""guard.select paces new fences; it never caps how many failed hosts get fenced.

Found by the chaos suite (tests/functional/chaos/test_mass_failure_chaos.py):
with 4 hosts failed and max_fences_per_tick = 1, the same longest-failed host
was selected every tick and the 3 others were never handed over.
"""

from instanceha.engine import guard
from instanceha.engine.guard import GuardPolicy, GuardState
from instanceha.engine.model import HostView, Phase

POLICY = GuardPolicy(max_failed_hosts=100, max_failed_percent=100.0, max_fences_per_tick=1)


def failed(*names):
    return {n: HostView(n, Phase.FAILED, float(i), "dead", "dead") for i, n in enumerate(names)}


def test_admitted_hosts_stay_selected_and_one_more_per_tick():
    views = dict(failed("a", "b", "c", "d"),
                 ok=HostView("ok", Phase.HEALTHY, 0.0, "alive", "alive"))
    admitted: dict[str, float] = {}
    per_tick = []
    for _ in range(6):
        selected = guard.select(views, GuardState(), POLICY, admitted)
        per_tick.append([h for h in selected if h not in admitted])
        admitted = {h: views[h].since for h in selected}
    assert per_tick == [["a"], ["b"], ["c"], ["d"], [], []]
    assert sorted(admitted) == ["a", "b", "c", "d"]


def test_a_new_failure_of_an_admitted_host_is_paced_again():
    views = failed("a", "b")
    admitted = {"a": 0.0}
    assert guard.select(views, GuardState(), POLICY, admitted) == ["a", "b"]
    again = dict(views, a=HostView("a", Phase.FAILED, 9.0, "dead", "dead"))  # failed anew
    assert guard.select(again, GuardState(), POLICY, admitted) == ["b"]


def test_nothing_while_held_and_the_old_call_still_caps():
    views = failed("a", "b", "c")
    assert guard.select(views, GuardState(held=True, reason="x"), POLICY, {"a": 0.0}) == []
    assert guard.select(views, GuardState(), POLICY) == ["a"]


def test_the_wait_for_companions_counts_from_the_first_dead_look():
    """The second source may make a host FAILED up to its timeout after the host
    fell silent: the guard's wait (vanish_window) counts from the silence, so the
    answer costs a dead host no extra time when it comes within that wait."""
    policy = GuardPolicy(max_failed_hosts=100, max_failed_percent=100.0, vanish_window=0.7)
    late = {"a": HostView("a", Phase.FAILED, 10.5, "dead", "dead", lost_since=10.0)}
    assert guard.select(late, GuardState(), policy, now=10.6) == []
    assert guard.select(late, GuardState(), policy, now=10.71) == ["a"]
    no_record = {"a": HostView("a", Phase.FAILED, 10.5, "dead", "dead")}  # as before
    assert guard.select(no_record, GuardState(), policy, now=10.71) == []


def test_hosts_whose_agent_alone_is_dead_never_hold_the_fences_of_dead_hosts():
    """A bad agent upgrade takes many agents down at once: those hosts are
    AGENT_DOWN (the second source shows them alive), not dead-looking."""
    policy = GuardPolicy(max_failed_hosts=2, max_failed_percent=100.0)
    views = {f"h{i}": HostView(f"h{i}", Phase.AGENT_DOWN, 0.0, "agent dead, host alive",
                               "agent-dead") for i in range(20)}
    views["dead"] = HostView("dead", Phase.FAILED, 0.0, "dead", "dead")
    state = guard.evaluate(views, GuardState(), policy, now=1.0)
    assert not state.held and state.dead == {"dead"}
    assert guard.select(views, state, policy, now=1.0) == ["dead"]
