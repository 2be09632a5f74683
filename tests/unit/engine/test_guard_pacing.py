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
