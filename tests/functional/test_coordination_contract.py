"""One behaviour suite for every coordination backend (tooz's way).

The contract of ``instanceha.coordination.base`` as the agent, the controller
and the CLI use it, run against the in-memory backend and the ZooKeeper
backend (a real server, TLS and authentication on). A backend that passes it
can stand in for the other: the fakes of the unit tests cannot drift from
what they imitate unnoticed.
"""

from __future__ import annotations

import itertools
import math
import time

import pytest
from harness import daemons

from instanceha import coordination, exceptions
from instanceha.coordination import base

pytestmark = pytest.mark.functional
T = 2.0
_NAMES = itertools.count(1)


class Backend:
    def __init__(self, kind, zookeeper, root_path):
        self.kind = kind
        self.zk = zookeeper
        self.root = root_path
        self.url = f"memory://contract-{next(_NAMES)}-{time.monotonic_ns()}"
        self.made = []

    def make(self, role, host=None):
        if self.kind == "memory":
            c = coordination.get_coordinator(self.url, role=role, session_timeout=T)
        else:
            c = self.zk.coordinator(role, host, root_path=self.root, session_timeout=T)
        c.start()
        self.made.append(c)
        return c

    def close(self):
        for c in self.made:
            try:
                c.stop()
            except Exception:  # noqa: S110 - already stopped by the test
                pass


@pytest.fixture(params=["memory", "zookeeper"])
def backend(request, zookeeper, root_path):
    b = Backend(request.param, zookeeper, root_path)
    yield b
    b.close()


def eventually(predicate, what, timeout=15.0):
    """Poll a view until it shows ``predicate`` (ZooKeeper's arrives by watch)."""
    return daemons.wait_until(predicate, timeout, what)


def seen(ctl, predicate, what):
    def look():
        snap = ctl.snapshot()
        return snap if predicate(snap) else None

    return eventually(look, what)


def test_an_agent_joins_only_a_provisioned_host(backend):
    ctl = backend.make("controller")
    agent = backend.make("agent", "c1")
    with pytest.raises(exceptions.NotProvisioned):
        agent.join("c1", {"services": {"nova-compute": True}})
    assert ctl.provision_host("c1") is True and ctl.provision_host("c1") is False
    snap = seen(ctl, lambda s: "c1" in s.provisioned, "c1 provisioned")
    assert "c1" not in snap.hosts and "c1" not in snap.heartbeats  # never joined: unmonitored
    incarnation = agent.join("c1", {"services": {"nova-compute": True}})
    assert agent.joined() and agent.join("c1", {"services": {}}) == incarnation
    snap = seen(ctl, lambda s: "c1" in s.members, "c1 a member")
    assert snap.members["c1"].incarnation == incarnation
    assert math.isinf(snap.heartbeats["c1"]) and snap.heartbeat_age("c1") == 0.0
    assert snap.members["c1"].capabilities[base.SESSION_TIMEOUT] == T


def test_capabilities_and_stall_reports_reach_the_controller(backend):
    ctl = backend.make("controller")
    ctl.provision_host("c1")
    agent = backend.make("agent", "c1")
    agent.join("c1", {"services": {"nova-compute": True}})
    agent.update_capabilities({"services": {"nova-compute": False}})
    seen(ctl, lambda s: s.members.get("c1") and
         s.members["c1"].capabilities.get("services") == {"nova-compute": False},
         "the new capabilities")
    before = time.monotonic()
    agent.report_stall(1.5)
    snap = seen(ctl, lambda s: not math.isinf(s.heartbeats.get("c1", math.inf)),
                "the stall report")
    assert before - 1.5 - 0.1 <= snap.heartbeats["c1"] <= time.monotonic() - 1.5
    agent.report_stall(None)
    seen(ctl, lambda s: math.isinf(s.heartbeats.get("c1", 0)), "the stall cleared")


def test_a_planned_leave_is_marked_and_a_session_end_is_a_loss(backend):
    ctl = backend.make("controller")
    for h in ("c1", "c2"):
        ctl.provision_host(h)
    first, second = backend.make("agent", "c1"), backend.make("agent", "c2")
    inc = first.join("c1", {})
    second.join("c2", {})
    seen(ctl, lambda s: {"c1", "c2"} <= set(s.members), "both members")
    first.leave("maintenance", planned=True)
    first.stop()
    snap = seen(ctl, lambda s: "c1" not in s.members, "c1 gone")
    assert snap.hosts["c1"].planned_stop == {"reason": "maintenance", "incarnation": inc}
    ended = time.monotonic()
    second.stop()  # no leave: a crash as far as anyone can tell
    snap = seen(ctl, lambda s: "c2" not in s.members, "c2 gone")
    assert snap.hosts["c2"].planned_stop is None
    # silent since at least one session timeout before its loss was seen
    assert snap.heartbeats["c2"] <= time.monotonic() - T
    assert snap.heartbeats["c2"] >= ended - T - 1.0
    assert snap.changed_since(0) is None or "c2" in snap.changed_since(0)


def test_switches_name_the_identity_that_wrote_them(backend):
    ctl = backend.make("controller")
    operator = backend.make("operator")
    merged = operator.update_control({"paused": {"reason": "window", "by": "alice"}})
    assert merged["paused"]["identity"] == "instanceha-operator"
    ctl.update_control({"guard_hold": {"held": True}})
    snap = seen(ctl, lambda s: "paused" in s.control and "guard_hold" in s.control,
                "both switches")
    assert snap.control["guard_hold"]["identity"] == "instanceha-controller"
    ctl.update_control({"paused": None})  # a controller may remove an operator's key
    seen(ctl, lambda s: "paused" not in s.control, "the pause removed")


def test_the_journal_and_the_status_outlive_their_writer(backend):
    ctl = backend.make("controller")
    ctl.incident_write("i-1", {"host": "c1", "state": "fenced"}, [{"kind": "a"}])
    ctl.incident_write("i-1", {"host": "c1", "state": "closed"}, [{"kind": "b"}])
    ctl.publish_status({"leader": "me"})
    ctl.stop()
    reader = backend.make("controller")
    assert reader.incidents() == {"i-1": {"host": "c1", "state": "closed"}}
    assert [e["kind"] for e in reader.incident_entries("i-1")] == ["a", "b"]
    assert reader.read_status() == {"leader": "me"}
    reader.incident_delete("i-1")
    reader.incident_delete("i-1")
    with pytest.raises(exceptions.IncidentNotFound):
        reader.incident_entries("i-1")


def test_guest_failures_are_queued_as_the_agents_host(backend):
    ctl = backend.make("controller")
    ctl.provision_host("c1")
    agent = backend.make("agent", "c1")
    agent.join("c1", {})
    first = agent.guest_event_put({"host": "c9", "instance_id": "vm1", "kind": "crashed"})
    agent.stop()  # the failure outlives the agent
    (event_id, event), = eventually(ctl.guest_events, "the queued failure")
    assert event_id == first and event["host"] == "c1"  # the agent's host, whatever it says
    ctl.guest_event_delete(first)
    ctl.guest_event_delete(first)
    assert ctl.guest_events() == []
    for at in (1.0, 2.0, 3.0):
        ctl.guest_restart_record("vm1", at, keep=2)
    assert ctl.guest_restarts("vm1") == [2.0, 3.0]


def test_fence_history_and_forgetting(backend):
    ctl = backend.make("controller")
    ctl.provision_host("c1")
    agent = backend.make("agent", "c1")
    agent.join("c1", {})
    for at in (10.0, 20.0, 30.0):
        ctl.record_failure("c1", at, keep=2)
    seen(ctl, lambda s: s.hosts.get("c1") and s.hosts["c1"].failures == (20.0, 30.0),
         "the fence history")
    agent.stop()
    seen(ctl, lambda s: "c1" not in s.members, "c1 gone")
    ctl.forget_host("c1")
    seen(ctl, lambda s: "c1" not in s.hosts and "c1" not in s.provisioned, "c1 forgotten")


def test_one_leader_and_the_next_when_it_goes(backend):
    a, b = backend.make("controller"), backend.make("controller")
    la, lb = a.leadership("ctl-a"), b.leadership("ctl-b")
    la.ensure()
    lb.ensure()
    eventually(lambda: la.is_leader(), "ctl-a to lead")
    assert not lb.is_leader() and la.verify() == la.token
    with pytest.raises(exceptions.NotLeader):
        lb.verify()
    token = la.token
    a.stop()

    def b_leads():
        lb.ensure()
        return lb.is_leader()

    eventually(b_leads, "ctl-b to lead")
    assert lb.token > token and lb.leader() == "ctl-b"
