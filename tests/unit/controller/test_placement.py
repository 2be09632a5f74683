"""Evacuation targets on fakes: reserved spares chosen, recorded, enabled under a
verified leadership, spilled over, resumed, never picked twice; the actuator
writes them into the failed host's marker."""

import dataclasses
import datetime
import threading

import pytest

from instanceha import exceptions
from instanceha.compute import exceptions as exc
from instanceha.compute.evacuation import EvacuationResult, Outcome
from instanceha.compute.model import ComputeService, Server
from instanceha.controller.placement import Placement
from instanceha.controller.recovery import ActuatorSettings, Guarded, RecoveryActuator
from instanceha.engine import marker as mk
from instanceha.engine.instance_policy import Recovery
from instanceha.engine.model import HostView, Phase
from instanceha.engine.reserved import Match, Method, TargetPolicy
from instanceha.notify import events
from tests.unit.clock import FakeClock
from tests.unit.fakes import FakeNova as SharedFakeNova

NOW = datetime.datetime(2026, 11, 21, 12, 0, 0, tzinfo=datetime.timezone.utc)
RESERVED = mk.encode(mk.MarkerState.RESERVED, at=NOW, note="spare")
FENCED = mk.encode(mk.MarkerState.FENCED, at=NOW, token=40)
SPARES = TargetPolicy(Method.RESERVED_HOSTS, Match.AVAILABILITY_ZONE, True)
STRICT = dataclasses.replace(SPARES, fallback_to_scheduler=False)


def svc(host, reason=None, up=True, forced=False, zone="az1"):
    return ComputeService(id=host, host=host, state="up" if up else "down",
                          status="disabled" if reason else "enabled", forced_down=forced,
                          disabled_reason=reason, zone=zone, updated_at=None)


def server(sid, host="c1", policy="evacuate"):
    return Server(id=sid, name=sid, status="ACTIVE", vm_state="active", task_state=None,
                  host=host, project_id="p1", locked=False,
                  metadata={"instanceha:recovery": policy}, flavor_extra_specs={},
                  image_id="img", availability_zone="az1")


def FakeNova(log, services, servers=(), aggregates=None, on_read=None):  # noqa: N802
    """The shared fake, strict about enables: here only reserved spares are enabled."""
    return SharedFakeNova(log, services, servers, aggregates=aggregates, on_read=on_read,
                          enable_only_reserved=True)


class FakeEvacuator:
    """Each target takes ``room[target]`` servers; the scheduler (no target) any."""

    def __init__(self, log, nova, room=None):
        self.log, self.nova, self.room = log, nova, dict(room or {})

    def evacuate_host(self, host, servers, target_host=None):
        self.log.append(("evacuate_host", host, tuple(s.id for s in servers), target_host))
        out = []
        for s in servers:
            left = self.room.get(target_host, 99)
            if left <= 0:
                err = exc.NoCapacity(server=s.id, host=host, attempts=1, reason="No valid host")
                out.append(EvacuationResult(s.id, s.name, host, Outcome.NO_CAPACITY, 1, 1.0,
                                            error=err))
                continue
            self.room[target_host] = left - 1
            self.nova.evacuate(s.id, target_host)
            out.append(EvacuationResult(s.id, s.name, host, Outcome.EVACUATED, 1, 2.0,
                                        dest_host=target_host or "c2", status="ACTIVE"))
        return out


class Verify:
    token = 42

    def __init__(self, log):
        self.log, self.deposed = log, False

    def __call__(self):
        self.log.append(("verify",))
        if self.deposed:
            raise exceptions.NotLeader(reason="deposed")
        return 42


def place(policy, nova, log, servers, marker=None, room=None, phases=None, verify=None):
    placement = Placement(policy, nova, lambda: dict(phases or {}))
    recorded = []
    guarded = Guarded(nova, verify or Verify(log))

    def record(spares):
        recorded.append(spares)
        guarded.disable("c1", mk.encode(mk.MarkerState.RECOVERING, token=40, spares=spares))

    results, used = placement.evacuate("c1", servers, FakeEvacuator(log, guarded, room),
                                       guarded, marker, record)
    return results, used, recorded


def names(log):
    return [c[0] for c in log]


def test_the_scheduler_method_never_names_a_target_nor_enables_a_spare():
    log = []
    nova = FakeNova(log, [svc("c1", FENCED, forced=True), svc("c3", RESERVED)])
    results, used, recorded = place(TargetPolicy(), nova, log, [server("a")])
    assert [r.ok for r in results] == [True] and used == () and recorded == []
    assert ("evacuate_host", "c1", ("a",), None) in log and "enable" not in names(log)


def test_a_spare_is_recorded_then_enabled_after_a_leadership_check_then_the_target():
    log = []
    nova = FakeNova(log, [svc("c1", FENCED, forced=True), svc("c2"), svc("c3", RESERVED)])
    results, used, recorded = place(SPARES, nova, log, [server("a"), server("b")])
    assert used == ("c3",) and recorded == [("c3",)]
    assert names(log)[:4] == ["verify", "disable", "verify", "enable"]
    assert log[1][2].startswith("instanceha:v1:recovering;token=40;spares=c3")
    assert log[3] == ("enable", "c3")
    assert log[4] == ("evacuate_host", "c1", ("a", "b"), "c3")
    assert [(r.server_id, r.dest_host) for r in results] == [("a", "c3"), ("b", "c3")]
    assert not nova.svc["c3"].disabled  # the spare stays in service


def test_a_deposed_leader_never_enables_the_spare():
    log = []
    nova = FakeNova(log, [svc("c1", FENCED, forced=True), svc("c3", RESERVED)])
    verify = Verify(log)
    verify.deposed = True
    with pytest.raises(exceptions.NotLeader):
        place(SPARES, nova, log, [server("a")], verify=verify)
    assert "enable" not in names(log) and nova.svc["c3"].disabled


def test_servers_without_room_spill_over_to_the_next_spare_then_the_scheduler():
    log = []
    nova = FakeNova(log, [svc("c1", FENCED, forced=True), svc("c3", RESERVED),
                          svc("c4", RESERVED)])
    servers = [server("a"), server("b"), server("c"), server("d")]
    results, used, recorded = place(SPARES, nova, log, servers, room={"c3": 2, "c4": 1})
    assert used == ("c3", "c4") and recorded == [("c3",), ("c3", "c4")]
    calls = [c for c in log if c[0] == "evacuate_host"]
    assert calls == [("evacuate_host", "c1", ("a", "b", "c", "d"), "c3"),
                     ("evacuate_host", "c1", ("c", "d"), "c4"),
                     ("evacuate_host", "c1", ("d",), None)]
    assert [r.dest_host for r in results] == ["c3", "c3", "c4", "c2"]
    assert all(r.ok for r in results)


def test_no_spare_left_without_fallback_is_reported_as_failed_to_recover():
    log = []
    nova = FakeNova(log, [svc("c1", FENCED, forced=True), svc("c3", RESERVED, zone="az2")])
    results, used, recorded = place(STRICT, nova, log, [server("a")])
    assert used == () and recorded == [] and "evacuate_host" not in names(log)
    (r,) = results
    assert r.outcome is Outcome.NO_CAPACITY and r.attempts == 0
    assert isinstance(r.error, exc.NoCapacity) and "zone az2, not az1: c3" in str(r.error)


def test_no_room_on_the_last_spare_without_fallback_keeps_nova_s_answer():
    log = []
    nova = FakeNova(log, [svc("c1", FENCED, forced=True), svc("c3", RESERVED)])
    results, used, _ = place(STRICT, nova, log, [server("a"), server("b")], room={"c3": 1})
    assert used == ("c3",)
    assert [r.outcome for r in results] == [Outcome.EVACUATED, Outcome.NO_CAPACITY]
    assert results[1].attempts == 1 and "No valid host" in str(results[1].error)


def test_no_spare_with_fallback_lets_the_scheduler_place_them():
    log = []
    nova = FakeNova(log, [svc("c1", FENCED, forced=True), svc("c3", RESERVED, up=False)])
    results, used, _ = place(SPARES, nova, log, [server("a")])
    assert used == () and [r.dest_host for r in results] == ["c2"]
    assert ("evacuate_host", "c1", ("a",), None) in log


def test_a_spare_whose_agent_is_failing_is_skipped():
    log = []
    nova = FakeNova(log, [svc("c1", FENCED, forced=True), svc("c3", RESERVED),
                          svc("c4", RESERVED)])
    _, used, _ = place(SPARES, nova, log, [server("a")], phases={"c3": Phase.SUSPECT})
    assert used == ("c4",)


def test_aggregate_match_reads_the_aggregates():
    log = []
    nova = FakeNova(log, [svc("c1", FENCED, forced=True), svc("c3", RESERVED),
                          svc("c4", RESERVED)], aggregates={"c1": ["rack1"], "c4": ["rack1"]})
    _, used, _ = place(dataclasses.replace(SPARES, match=Match.AGGREGATE), nova, log,
                       [server("a")])
    assert used == ("c4",)


@pytest.mark.parametrize("c3_reason, enables", [(None, False), (RESERVED, True)])
def test_a_new_leader_resumes_with_the_recorded_spare(c3_reason, enables):
    log = []
    recovering = mk.encode(mk.MarkerState.RECOVERING, token=40, spares=["c3"])
    nova = FakeNova(log, [svc("c1", recovering, forced=True), svc("c3", c3_reason),
                          svc("c4", RESERVED)])
    results, used, recorded = place(SPARES, nova, log, [server("a")],
                                    marker=mk.decode(recovering))
    assert used == ("c3",) and recorded == []  # nothing new to record
    assert (("enable", "c3") in log) is enables and ("enable", "c4") not in log
    assert results[0].dest_host == "c3"


def test_two_hosts_failing_at_once_never_get_the_same_spare():
    """Recoveries run on a pool: the read of Nova, the choice and the enable of
    a spare happen under one lock (checked at every read), so a second
    recovery sees the first one's spare as taken."""
    log, reads = [], []
    lock = threading.Lock()
    nova = FakeNova(log, [svc("c1", FENCED, forced=True), svc("c2", FENCED, forced=True),
                          svc("c3", RESERVED), svc("c4", RESERVED)],
                    on_read=lambda: reads.append(lock.locked()))
    placement = Placement(SPARES, nova, lock=lock)
    guarded = Guarded(nova, Verify(log))
    used = {}
    for host in ("c1", "c2"):
        _, used[host] = placement.evacuate(
            host, [server(f"s-{host}", host)], FakeEvacuator(log, guarded), guarded, None,
            lambda spares: None)
    assert reads and all(reads)
    assert sorted(used.values()) == [("c3",), ("c4",)]


# -- through the actuator -----------------------------------------------------

class Bus:
    def __init__(self):
        self.sent = []

    enabled = True

    def emit(self, event, on_done=None):  # delivered at once
        self.sent.append(event)
        if on_done is not None:
            on_done(True)
        return f"msg-{len(self.sent)}"


class Metrics:
    def __init__(self):
        self.counted = []

    def evacuation(self, result, duration=None):
        self.counted.append(result)


def recover(services, servers, target, room=None):
    log = []
    nova = FakeNova(log, services, servers)
    bus, metrics = Bus(), Metrics()
    act = RecoveryActuator(
        ActuatorSettings(name="ctl-a", default_recovery=Recovery.IGNORE, target=target),
        None, nova, lambda guarded: FakeEvacuator(log, guarded, room), notifier=bus,
        events=events, metrics=metrics, clock=FakeClock(wall=NOW.timestamp(), frozen_wall=True))
    act.nova_view.refresh()
    act.act({"c1": HostView("c1", Phase.FAILED, 0.0, "why", "rule"),
             "c3": HostView("c3", Phase.HEALTHY, 0.0, "ok", "rule")}, [], Verify(log))
    act.wait(timeout=10)
    act.close()
    return log, nova, bus, metrics


def test_the_actuator_evacuates_to_the_spare_and_keeps_it_in_the_marker():
    log, nova, bus, metrics = recover(
        [svc("c1", FENCED, forced=True, up=False), svc("c2"), svc("c3", RESERVED)],
        [server("a"), server("b", policy="notify")], SPARES)
    m = nova.svc["c1"].marker
    assert m.state is mk.MarkerState.RECOVERED and m.spares == ("c3",)
    assert "1 evacuated, 0 failed, 1 notified" in m.note
    assert ("evacuate", "a", "c3") in log and not nova.svc["c3"].disabled
    end = [e for e in bus.sent if e.event_type == events.EVACUATE_END]
    assert end[0].payload["target_host"] == "c3"
    assert metrics.counted == ["evacuated"]


def test_the_actuator_reports_servers_left_without_a_spare():
    log, nova, bus, metrics = recover(
        [svc("c1", FENCED, forced=True, up=False), svc("c2")], [server("a")], STRICT)
    m = nova.svc["c1"].marker
    assert m.state is mk.MarkerState.RECOVERED and "0 evacuated, 1 failed" in m.note
    errors = [e for e in bus.sent if e.event_type == events.EVACUATE_ERROR]
    assert "no host is reserved" in errors[0].payload["error"]
    assert metrics.counted == ["no capacity"]


# -- the choice made ahead, while the failed host is fenced --------------------

def test_a_spare_chosen_ahead_is_held_for_its_host_then_recorded_after_the_fence():
    log = []
    nova = FakeNova(log, [svc("c1", FENCED, forced=True), svc("c2", FENCED, forced=True),
                          svc("c3", RESERVED), svc("c4", RESERVED)])
    placement = Placement(SPARES, nova)
    ahead = placement.prepare("c1", None)
    assert ahead.host == "c3" and log == []  # a read: nothing changed
    # another host failing meanwhile does not get the spare held for c1
    assert placement.prepare("c2", None).host == "c4"
    guarded = Guarded(nova, Verify(log))
    reads = len(nova.reads)
    recorded = []
    results, used = placement.evacuate("c1", [server("a")], FakeEvacuator(log, guarded),
                                       guarded, None, recorded.append, prepared=ahead)
    assert len(nova.reads) == reads  # no second read of Nova for the choice
    assert used == ("c3",) and recorded == [("c3",)] and ("enable", "c3") in log
    assert [r.dest_host for r in results] == ["c3"]
    placement.release("c2")
    assert placement.prepare("c2", None).host == "c4"


def test_a_released_hold_frees_the_spare():
    nova = FakeNova([], [svc("c1", FENCED, forced=True), svc("c2", FENCED, forced=True),
                         svc("c3", RESERVED)])
    placement = Placement(SPARES, nova)
    assert placement.prepare("c1", None).host == "c3"
    assert placement.prepare("c2", None).host is None  # held for c1
    placement.release("c1")  # c1's fence failed
    assert placement.prepare("c2", None).host == "c3"


def test_nothing_is_prepared_with_the_scheduler():
    nova = FakeNova([], [svc("c1", FENCED, forced=True), svc("c3", RESERVED)])
    assert Placement(TargetPolicy(), nova).prepare("c1", None) is None
    assert nova.reads == []
