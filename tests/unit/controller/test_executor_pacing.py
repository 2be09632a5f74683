"""The executor admits at most max_fences_per_tick new hosts per tick and keeps
handing over the ones it admitted, until every failed host was handed over."""

from instanceha.controller.executor import BaseActuator, Executor
from instanceha.engine.guard import GuardPolicy
from instanceha.engine.model import HostView, Phase
from tests.unit.fakes import FakeLeadership


class FirstHandOvers(BaseActuator):
    def __init__(self):
        self.ticks = []
        self.seen = set()

    def act(self, views, fence_allowed, verify):
        new = [h for h in fence_allowed if h not in self.seen]
        self.seen.update(new)
        self.ticks.append(new)


def test_every_failed_host_is_handed_over_one_per_tick():
    views = {f"f{i}": HostView(f"f{i}", Phase.FAILED, float(i), "dead", "dead")
             for i in range(4)}
    views.update({f"h{i}": HostView(f"h{i}", Phase.HEALTHY, 0.0, "ok", "alive")
                  for i in range(20)})
    rec = FirstHandOvers()
    leadership = FakeLeadership()
    ex = Executor(leadership, rec, GuardPolicy(max_fences_per_tick=1))
    for now in range(1, 7):
        ex.act(views, float(now))
    assert rec.ticks == [["f0"], ["f1"], ["f2"], ["f3"], [], []]
    # a controller that stops leading forgets; leading again, it paces anew
    leadership.leader_flag = False
    assert ex.act(views, 7.0) == []
    leadership.leader_flag = True
    assert ex.act(views, 8.0) == ["f0"]
