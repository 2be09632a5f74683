"""The reconciler asks the second source before failing a host whose agent looks
dead, and the leader journals "agent dead, host alive" (fake coordinator, fake
second source, fake clock: no I/O, no sleep)."""

from instanceha.controller.agent_alerts import AgentDownAlerts
from instanceha.controller.executor import Executor
from instanceha.controller.journal import IncidentJournal
from instanceha.controller.reconciler import Reconciler
from instanceha.coordination import base
from instanceha.engine.guard import GuardPolicy
from instanceha.engine.model import DetectionPolicy, HostView, Phase, SecondSource
from tests.unit.fakes import FakeClock, FakeCoordinator, FakeLeadership

POLICY = DetectionPolicy()
NO_GUARD = GuardPolicy(max_failed_hosts=100, max_failed_percent=100)


class FakeSecondSource:
    """Answers what the test sets; records who was asked and dropped."""

    def __init__(self):
        self.answers: dict[str, SecondSource] = {}
        self.asked: list[str] = []
        self.dropped: list[str] = []
        self._changed: set[str] = set()

    def want(self, host):
        if host not in self.answers:
            self.asked.append(host)
            self.answers[host] = SecondSource.ASKING
        return self.answers[host]

    def drop(self, host):
        if self.answers.pop(host, None) is not None:
            self.dropped.append(host)

    def changed(self):
        out, self._changed = self._changed, set()
        return out

    def answer(self, host, value):
        self.answers[host] = value
        self._changed.add(host)


class Handed:
    def __init__(self):
        self.hosts = []

    def act(self, views, fence_allowed, verify):
        self.hosts.extend(h for h in fence_allowed if h not in self.hosts)


def world(second=None):
    clock = FakeClock()
    coord = FakeCoordinator(clock)
    clock.advance(60)
    for h in ("compute1", "compute2"):
        coord.add_member(h, session=True)
    handed = Handed()
    second = second or FakeSecondSource()
    rec = Reconciler(coord, POLICY, Executor(FakeLeadership(), handed, NO_GUARD),
                     second_source=second)
    rec.tick()
    return clock, coord, rec, second, handed


def vanish(clock, coord, host):
    """ZooKeeper expired the session: the view dates the last sign of life T ago."""
    del coord.members[host]
    coord.heartbeats[host] = clock() - 2.0


def test_healthy_hosts_are_never_asked():
    clock, coord, rec, second, _ = world()
    clock.advance(5)
    rec.tick()
    assert second.asked == [] and rec.views["compute1"].phase is Phase.HEALTHY


def test_a_vanished_agent_is_asked_about_and_held_while_its_host_answers():
    clock, coord, rec, second, handed = world()
    vanish(clock, coord, "compute1")
    rec.tick()
    v = rec.views["compute1"]
    assert (v.phase, v.rule) == (Phase.SUSPECT, "asking") and second.asked == ["compute1"]
    second.answer("compute1", SecondSource.ANSWERS)
    clock.advance(0.2)
    rec.tick()
    v = rec.views["compute1"]
    assert (v.phase, v.rule) == (Phase.AGENT_DOWN, "agent-dead")
    assert v.reason.startswith("agent dead, host alive")
    clock.advance(30)  # held as long as the host answers: nothing changes, nothing fenced
    rec.tick()
    assert rec.views["compute1"].phase is Phase.AGENT_DOWN and handed.hosts == []


def test_a_silent_host_is_failed_and_handed_over():
    clock, coord, rec, second, handed = world()
    vanish(clock, coord, "compute1")
    rec.tick()
    second.answer("compute1", SecondSource.SILENT)
    clock.advance(0.5)
    rec.tick()
    assert rec.views["compute1"].phase is Phase.FAILED
    clock.advance(0.3)  # the guard's wait for companions counts from the vanish (0.7 s)
    rec.tick()
    assert handed.hosts == ["compute1"]
    assert "compute1" in second.dropped  # FAILED: the answer changes nothing any more
    second.answer("compute1", SecondSource.ANSWERS)  # a late answer takes nothing back
    rec.tick()
    assert rec.views["compute1"].phase is Phase.FAILED


def test_a_held_host_that_stops_answering_is_failed():
    clock, coord, rec, second, handed = world()
    vanish(clock, coord, "compute1")
    rec.tick()
    second.answer("compute1", SecondSource.ANSWERS)
    rec.tick()
    clock.advance(10)
    second.answer("compute1", SecondSource.SILENT)
    rec.tick()
    assert rec.views["compute1"].phase is Phase.FAILED


def test_the_agent_back_ends_the_hold_and_the_asking():
    clock, coord, rec, second, _ = world()
    vanish(clock, coord, "compute1")
    rec.tick()
    second.answer("compute1", SecondSource.ANSWERS)
    rec.tick()
    coord.add_member("compute1", incarnation=2, session=True)
    rec.tick()
    assert rec.views["compute1"].phase is Phase.HEALTHY
    assert second.dropped == ["compute1"] and "compute1" not in second.answers


def test_a_host_with_no_second_source_is_failed_as_before():
    second = FakeSecondSource()
    second.want = lambda host: SecondSource.NONE
    clock, coord, rec, _, _ = world(second)
    vanish(clock, coord, "compute1")
    rec.tick()
    assert (rec.views["compute1"].phase, rec.views["compute1"].rule) == (Phase.FAILED, "dead")


def test_a_planned_stop_is_not_asked_about():
    clock, coord, rec, second, _ = world()
    del coord.members["compute1"]
    coord.hosts["compute1"] = base.HostRecord("compute1", planned_stop={"reason": "x"})
    rec.tick()
    assert rec.views["compute1"].phase is Phase.STOPPED and second.asked == []


# -- the journal's account ---------------------------------------------------------

def journal(coord, clock):
    j = IncidentJournal(coord, "ctl-a", background=False, clock=clock)
    j.term(5)
    j.load()
    return j


def view(host, phase, rule="agent-dead", reason="agent dead, host alive: x"):
    return HostView(host, phase, 0.0, reason, rule)


def test_agent_down_opens_an_alert_incident_and_the_agent_back_closes_it():
    clock = FakeClock()
    coord = FakeCoordinator(clock)
    j = journal(coord, clock)
    alerts = AgentDownAlerts(j)
    alerts.tick({"compute1": view("compute1", Phase.HEALTHY, "alive")}, 5)
    alerts.tick({"compute1": view("compute1", Phase.AGENT_DOWN)}, 5)
    assert j.flush()
    (incident,) = coord.incidents().values()
    assert incident["state"] == "agent-down" and incident["reason"].startswith("agent dead")
    alerts.tick({"compute1": view("compute1", Phase.HEALTHY, "alive", "member")}, 5)
    assert j.flush()
    (incident,) = coord.incidents().values()
    assert incident["state"] == "closed"
    entries = coord.incident_entries(incident["id"])
    assert [e["kind"] for e in entries] == ["alert", "alert"]
    assert "the agent is back" in entries[-1]["text"]


def test_the_fence_of_a_held_host_continues_its_alert_incident():
    clock = FakeClock()
    coord = FakeCoordinator(clock)
    j = journal(coord, clock)
    alerts = AgentDownAlerts(j)
    alerts.tick({"compute1": view("compute1", Phase.AGENT_DOWN)}, 5)
    alerts.tick({"compute1": view("compute1", Phase.FAILED, "dead", "silent")}, 5)
    first = j.record("compute1", "decision", "decided fence", new_failure=True)
    assert j.flush()
    assert list(coord.incidents()) == [first]  # one story, not a new incident
    texts = [e["text"] for e in coord.incident_entries(first)]
    assert "handed to fencing" in texts[1] and texts[2] == "decided fence"


def test_a_new_leader_closes_alerts_of_agents_back_meanwhile():
    clock = FakeClock()
    coord = FakeCoordinator(clock)
    old = journal(coord, clock)
    AgentDownAlerts(old).tick({"compute1": view("compute1", Phase.AGENT_DOWN),
                               "compute2": view("compute2", Phase.AGENT_DOWN)}, 5)
    assert old.flush()
    new = IncidentJournal(coord, "ctl-b", background=False, clock=clock)
    alerts = AgentDownAlerts(new)
    views = {"compute1": view("compute1", Phase.HEALTHY, "alive", "member"),
             "compute2": view("compute2", Phase.AGENT_DOWN)}
    alerts.tick(views, 6)  # the journal is not read yet: next tick
    new.load()
    alerts.tick(dict(views), 6)
    assert new.flush()
    states = {s["host"]: s["state"] for s in coord.incidents().values()}
    assert states == {"compute1": "closed", "compute2": "agent-down"}
