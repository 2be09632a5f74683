"""The guard at the edge: the alert on the bus for every rule, the aggregates cache
wiring, and the hold in ``instanceha status``."""

import dataclasses
import re
import time

import pytest

from instanceha.cmd import controller_parts, ops_cli
from instanceha.coordination import base
from instanceha.engine import guard
from instanceha.engine.guard import GuardPolicy, GuardState
from instanceha.engine.model import HostView, Phase
from tests.unit.notify import samples

POLICY = GuardPolicy(max_failed_hosts=3, max_failed_percent=34, stable_after=30,
                     max_failed_percent_per_aggregate=50, aggregate_min_hosts=4,
                     max_vanished_per_tick=3)


def _views(dead, alive=20, phase=Phase.FAILED):
    out = {f"h{i}": HostView(f"h{i}", Phase.HEALTHY, 0.0, "r", "rule") for i in range(alive)}
    out.update({h: HostView(h, phase, 0.0, "r", "rule") for h in dead})
    return out


def _vanish_state():
    before = guard.evaluate(_views((), alive=30), GuardState(), POLICY, 0.0)
    after = _views((), alive=30)
    after.update({f"h{i}": HostView(f"h{i}", Phase.SUSPECT, 0.2, "r", "r") for i in range(4)})
    return guard.evaluate(after, before, dataclasses.replace(POLICY, max_failed_hosts=10),
                          0.2)


CASES = {
    "max_failed_hosts": lambda: guard.evaluate(_views(["d1", "d2", "d3", "d4"], alive=40),
                                               GuardState(), POLICY, 0.0),
    "max_failed_percent": lambda: guard.evaluate(_views(["d1", "d2"], alive=2), GuardState(),
                                                 POLICY, 0.0),
    "max_failed_percent_per_aggregate": lambda: guard.evaluate(
        _views(["d1", "d2", "d3"], alive=40), GuardState(), POLICY, 0.0,
        aggregates={"rack": frozenset({"d1", "d2", "d3", "h0"})}),
    "unknown aggregates": lambda: guard.evaluate(
        _views(["d1", "d2", "d3"], alive=40), GuardState(), POLICY, 0.0, aggregates=None),
    "max_vanished_per_tick": _vanish_state,
}


class Notifier:
    def __init__(self):
        self.events = []

    enabled = True

    def emit(self, event, on_done=None):  # delivered at once
        self.events.append(event)
        if on_done is not None:
            on_done(True)
        return f"msg-{len(self.events)}"


class Actuator:
    def __init__(self, nova=None):
        self.notifier = Notifier()
        if nova is not None:
            self.nova = nova


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_hold_reason_goes_on_the_bus_and_matches_the_schema(case):
    state = CASES[case]()
    assert state.held
    actuator = Actuator()
    controller_parts.hold_notifier(actuator.notifier, dry_run=False)(state, POLICY)
    (event,) = actuator.notifier.events
    payload = event.payload_dict()
    samples.validate("instanceha.safety.hold", payload)
    first = state.breaches[0]
    assert (payload["rule"], payload["limit"], payload["observed"]) == (
        first.rule, first.limit, first.observed)
    assert payload["reason"] == state.reason
    assert payload["hosts"] == sorted(state.dead)


def test_an_adopted_hold_without_breaches_still_builds_a_valid_event():
    state = guard.adopt(GuardState(dead=frozenset({"h1"})), "storm", 0.0)
    actuator = Actuator()
    controller_parts.hold_notifier(actuator.notifier, dry_run=True)(state, POLICY)
    payload = actuator.notifier.events[0].payload_dict()
    samples.validate("instanceha.safety.hold", payload)
    assert payload["rule"] == "mass-failure" and payload["dry_run"] is True


class Conf:
    class controller:  # noqa: N801 - stands for conf.controller
        aggregates_refresh = 300.0


def test_aggregates_come_from_the_actuators_nova_and_close_with_it():
    class Nova:
        def host_aggregates(self):
            return {}

    closers = []
    cache = controller_parts.aggregate_cache(Conf, Actuator(Nova()).nova, closers)
    assert cache.refresh == 300.0 and closers == [cache.close]
    cache.close()
    assert controller_parts.aggregate_cache(Conf, None, []) is None  # no recovery actuator: no Nova


def _snap(control):
    return base.ClusterSnapshot(taken_at=0.0, state=base.ConnectionState.CONNECTED,
                                connected_since=0.0, watching_since=0.0, hosts={},
                                members={}, heartbeats={}, control=control)


def _doc(guard_section):
    return {"leader": "ctl-b", "token": 9, "published_at": time.time(), "guard": guard_section,
            "control": {}, "hosts": {}}


def test_status_shows_the_hold_since_when_and_unknown_aggregates(capsys):
    ops_cli.print_status_table(_doc({
        "held": True, "reason": "held by a previous leader: 6 hosts look dead (> 3)",
        "since": time.time() - 42, "aggregates": {"known": False, "count": None, "age": None,
                                                  "error": "Forbidden (HTTP 403)"}}), _snap({}))
    out = capsys.readouterr().out
    assert "SAFETY HOLD for 4" in out and "held by a previous leader" in out
    assert "host aggregates UNKNOWN" in out and "Forbidden (HTTP 403)" in out


def test_status_shows_a_persisted_hold_no_leader_has_taken_yet_and_an_override(capsys):
    control = {"guard_hold": {"held": True, "reason": "4 hosts vanished together",
                              "since": time.time() - 10, "token": 8},
               "guard_override_until": time.time() + 600,
               "guard_override": {"by": "alice", "reason": "rack 4 lost power",
                                  "identity": "instanceha-operator"}}
    snap = _snap(control)
    ops_cli.print_status_table(_doc({"held": False, "reason": ""}), snap)
    out = capsys.readouterr().out
    assert "SAFETY HOLD persisted by the leader of term 8" in out
    assert "4 hosts vanished together" in out
    # who: the identity ZooKeeper let write the switch, then the login the CLI claimed
    assert re.search(r"GUARD OVERRIDDEN for another 59\ds by instanceha-operator \(login "
                     r"alice\): rack 4 lost power|GUARD OVERRIDDEN for another 600s by "
                     r"instanceha-operator \(login alice\): rack 4 lost power", out), out
    assert ops_cli.persisted_hold(snap) and not ops_cli.persisted_hold(_snap({}))
