"""The recovery actuator on fakes: the order of its calls, its markers, its
events. Jobs run on its real thread pools; tests wait for them (``act.wait``)."""

import dataclasses
import datetime
import logging

import pytest

from instanceha import exceptions
from instanceha.compute.evacuation import EvacuationResult, Outcome
from instanceha.compute.model import ComputeService, Migration, Server
from instanceha.controller.recovery import ActuatorSettings, Attestations, RecoveryActuator
from instanceha.engine import marker as mk
from instanceha.engine.instance_policy import Recovery
from instanceha.engine.model import HostView, Phase
from instanceha.fencing import FenceEvidence, PowerState
from instanceha.fencing import exceptions as fexc
from instanceha.notify import events
from tests.unit.clock import FakeClock
from tests.unit.fakes import FakeNova

NOW = datetime.datetime(2026, 11, 21, 12, 0, 0, tzinfo=datetime.timezone.utc)


def at_now():
    """A clock whose wall stays at NOW: the markers written say ``at=NOW``."""
    return FakeClock(wall=NOW.timestamp(), frozen_wall=True)


class Log(list):
    pass


class FakeFencer:
    def __init__(self, log, error=None):
        self.log, self.error = log, error
        self.stamp = ("inventory", 1)

    def inventory_stamp(self):
        return self.stamp

    def power_on(self, host):
        self.log.append(("power_on", host))

        return evidence(host, PowerState.ON)

    def driver_name(self, host):
        return "fake"

    def power_off(self, host):
        self.log.append(("power_off", host))
        if self.error:
            raise self.error

        return evidence(host, PowerState.OFF)


def evidence(host, state):
    return FenceEvidence(host=host, driver="fake", address=f"bmc-{host}", requested=state,
                         read_back=state, attempts=1, reads=2, started_at=0.0,
                         finished_at=0.2, duration=0.2, devices=(f"fake at bmc-{host}",))


class FakeEvacuator:
    def __init__(self, log, nova):
        self.log, self.nova = log, nova

    def evacuate_host(self, host, servers, target_host=None):
        out = []
        for s in servers:
            self.nova.evacuate(s.id, target_host)  # through the leadership-guarded client
            out.append(EvacuationResult(s.id, s.name, host, Outcome.EVACUATED, 1, 3.0,
                                        dest_host="compute2", status="ACTIVE"))
        return out


class Bus:
    def __init__(self):
        self.sent = []

    enabled = True

    def emit(self, event, on_done=None):  # delivered at once
        self.sent.append(event)
        if on_done is not None:
            on_done(True)
        return f"msg-{len(self.sent)}"


def svc(host, reason=None, up=False, forced=False):
    return ComputeService(id=host, host=host, state="up" if up else "down",
                          status="disabled" if reason else "enabled", forced_down=forced,
                          disabled_reason=reason, zone="nova", updated_at=None)


def server(sid, policy, host="compute1", project="p1"):
    meta = {"instanceha:recovery": policy} if policy else {}
    return Server(id=sid, name=sid, status="ACTIVE", vm_state="active", task_state=None,
                  host=host, project_id=project, locked=False, metadata=meta,
                  flavor_extra_specs={}, image_id="img", availability_zone="nova")


def view(host, phase):
    return HostView(host, phase, 0.0, "why", "rule")


class Verify:
    def __init__(self, log, token=42):
        self.log, self.token, self.deposed = log, token, False

    def __call__(self):
        self.log.append(("verify",))
        if self.deposed:
            raise exceptions.NotLeader(reason="deposed")
        return self.token


def make(log, services, servers=(), fencer_error=None, migrations=(), dry_run=False,
         power_on=False, journal=None, attestations=None):
    nova = FakeNova(log, services, servers, migrations)
    bus = Bus()
    act = RecoveryActuator(
        ActuatorSettings(name="ctl-a", default_recovery=Recovery.IGNORE, dry_run=dry_run,
                         power_on_after_recovery=power_on),
        FakeFencer(log, fencer_error), nova, lambda guarded: FakeEvacuator(log, guarded),
        notifier=bus, events=events, clock=at_now(), journal=journal,
        attestations=attestations)
    act.nova_view.refresh()
    return act, nova, bus


def run(act, views, allowed, verify, refresh=True):
    """One tick after a fresh read of Nova (as the background refresh does)."""
    if refresh:
        act.clock.advance(1.0)
        act.nova_view.refresh()
    act.act(views, allowed, verify)
    act.wait(timeout=10)


MUTATING = ("power_off", "force_down", "disable", "enable", "unset_forced_down", "evacuate")


def mutations(log):
    return [c for c in log if c[0] in MUTATING]


def test_fence_force_down_then_recover_in_one_job():
    log = Log()
    act, nova, bus = make(log, [svc("compute1")])
    run(act, {"compute1": view("compute1", Phase.FAILED)}, ["compute1"], Verify(log))
    calls = [c[0] for c in log]
    # fence: a round trip before the incident opens, before the power-off and before
    # the force-down; then, in the same job, the markers RECOVERING and RECOVERED
    assert calls[:6] == ["verify", "verify", "power_off", "verify", "verify", "force_down"]
    fenced = mk.decode(log[5][2])
    assert fenced.state is mk.MarkerState.FENCED and fenced.token == 42 and fenced.at == NOW
    assert [mk.decode(c[2]).state for c in log[6:] if c[0] == "disable"] == [
        mk.MarkerState.RECOVERING, mk.MarkerState.RECOVERED]
    assert calls.count("verify") == 4 + 2  # every later write verified too
    assert [e.event_type for e in bus.sent] == [events.HOST_FAILED, events.FENCE_START,
                                                events.FENCE_END, events.RECOVERY_START,
                                                events.RECOVERY_END]
    act.close()


class GatedFencer(FakeFencer):
    """Holds the power-off until the recovery's list of the host's servers was
    read (proof that the read runs while the fence does); records what Nova had
    been asked by then."""

    def __init__(self, log, nova, on_power_off=None):
        super().__init__(log)
        self.nova, self.on_power_off = nova, on_power_off
        self.reads_before_power_off = None

    def power_off(self, host):
        import threading

        deadline = threading.Event()
        for _ in range(500):  # a wait for another thread (bounded), not a sleep
            if "servers_on_host" in self.nova.reads:
                break
            deadline.wait(0.01)
        self.reads_before_power_off = list(self.nova.reads)
        if self.on_power_off is not None:
            self.on_power_off()
        return super().power_off(host)


def make_gated(log, servers, on_power_off=None, relisted=(), **settings):
    class Relisting(FakeNova):
        listed = 0

        def servers_on_host(self, host):
            self.listed += 1
            if self.listed == 2:
                self.servers.extend(relisted)
            return super().servers_on_host(host)

    nova = Relisting(log, [svc("compute1")], servers)
    fencer = GatedFencer(log, nova, on_power_off)
    bus = Bus()
    act = RecoveryActuator(
        ActuatorSettings(name="ctl-a", default_recovery=Recovery.IGNORE, **settings), fencer,
        nova, lambda guarded: FakeEvacuator(log, guarded), notifier=bus, events=events,
        clock=at_now())
    act.nova_view.refresh()
    return act, nova, fencer, bus


def test_the_plan_is_read_while_the_fence_runs_and_nothing_moves_before_it():
    log = Log()
    servers = [server("a", "evacuate"), server("b", "evacuate")]
    act, nova, fencer, bus = make_gated(log, servers)
    run(act, {"compute1": view("compute1", Phase.FAILED)}, ["compute1"], Verify(log))
    assert "servers_on_host" in fencer.reads_before_power_off
    calls = [c[0] for c in log]
    assert [c for c in calls[:calls.index("power_off")] if c != "verify"] == []
    # the first evacuate leaves after the force-down, before the host is listed again
    assert calls.index("force_down") < calls.index("evacuate")
    assert [c[1] for c in log if c[0] == "evacuate"] == ["a", "b"]
    assert mk.decode(nova.svc["compute1"].disabled_reason).state is mk.MarkerState.RECOVERED
    act.close()


def test_a_server_that_landed_during_the_fence_is_recovered_too():
    log = Log()
    act, nova, _, bus = make_gated(log, [server("a", "evacuate")],
                                   relisted=[server("late", "evacuate")])
    run(act, {"compute1": view("compute1", Phase.FAILED)}, ["compute1"], Verify(log))
    assert [c[1] for c in log if c[0] == "evacuate"] == ["a", "late"]
    m = mk.decode(nova.svc["compute1"].disabled_reason)
    assert m.state is mk.MarkerState.RECOVERED and "2 evacuated" in m.note
    ends = [e.payload["instance_id"] for e in bus.sent if e.event_type == events.EVACUATE_END]
    assert ends == ["a", "late"]
    act.close()


def test_a_host_back_alive_during_its_fence_is_left_to_the_next_tick():
    log = Log()
    act = None

    def back():  # the detector sees the host again while its BMC answers (a tick)
        act.act({"compute1": view("compute1", Phase.HEALTHY)}, [], Verify(Log()))

    act, nova, _, bus = make_gated(log, [server("a", "evacuate")], on_power_off=back)
    run(act, {"compute1": view("compute1", Phase.FAILED)}, ["compute1"], Verify(log))
    assert "evacuate" not in [c[0] for c in log]
    assert mk.decode(nova.svc["compute1"].disabled_reason).state is mk.MarkerState.FENCED
    nova.set_service("compute1", state="up")
    run(act, {"compute1": view("compute1", Phase.HEALTHY)}, [], Verify(log))
    assert mk.decode(nova.svc["compute1"].disabled_reason).state is mk.MarkerState.HELD
    act.close()


def test_a_plan_read_that_failed_during_the_fence_is_read_again():
    from instanceha.compute import exceptions as cexc

    class Blip(FakeNova):
        failures = 1

        def servers_on_host(self, host):
            if self.failures:
                self.failures -= 1
                raise cexc.NovaServerError(operation="list servers", status=503, reason="x")
            return super().servers_on_host(host)

    log = Log()
    nova = Blip(log, [svc("compute1")], [server("a", "evacuate")])
    act = RecoveryActuator(ActuatorSettings(name="ctl-a"), FakeFencer(log), nova,
                           lambda guarded: FakeEvacuator(log, guarded), clock=at_now())
    act.nova_view.refresh()
    run(act, {"compute1": view("compute1", Phase.FAILED)}, ["compute1"], Verify(log))
    assert [c[1] for c in log if c[0] == "evacuate"] == ["a"]
    act.close()


def test_fence_failure_never_forces_down_and_backs_off():
    log = Log()
    err = fexc.BMCUnreachable(host="compute1", address="127.0.0.1", reason="timeout")
    act, nova, bus = make(log, [svc("compute1")], fencer_error=err)
    views = {"compute1": view("compute1", Phase.FAILED)}
    run(act, views, ["compute1"], Verify(log))
    assert "force_down" not in [c[0] for c in log]
    assert nova.svc["compute1"].disabled_reason is None
    assert bus.sent[-1].event_type == events.FENCE_ERROR
    n = len(log)
    run(act, views, ["compute1"], Verify(log))  # within the back-off: no new attempt
    assert len(log) == n
    act.close()


def test_guard_withholds_the_fence():
    log = Log()
    act, nova, _ = make(log, [svc("compute1")])
    run(act, {"compute1": view("compute1", Phase.FAILED)}, [], Verify(log))
    assert log == []
    act.close()


def test_deposed_leader_stops_before_the_power_off():
    log = Log()
    act, nova, _ = make(log, [svc("compute1")])
    v = Verify(log)
    v.deposed = True
    run(act, {"compute1": view("compute1", Phase.FAILED)}, ["compute1"], v)
    assert "power_off" not in [c[0] for c in log]
    act.close()


def test_recover_evacuates_opted_in_and_notifies_notify_only():
    log = Log()
    fenced = mk.encode(mk.MarkerState.FENCED, at=NOW, token=40)
    servers = [server("a", "evacuate"), server("b", "notify"), server("c", None)]
    act, nova, bus = make(log, [svc("compute1", fenced, forced=True)], servers)
    run(act, {"compute1": view("compute1", Phase.FAILED)}, [], Verify(log))
    calls = [c[0] for c in log]
    # every world-changing call has its own leadership round trip (the RECOVERING
    # marker is written beside the evacuation: their order may vary)
    assert sorted(c for c in calls if c != "verify") == ["disable", "disable", "evacuate"]
    assert calls.count("verify") == 3
    changes = mutations(log)
    assert "recovering" in changes[0][2] or "recovering" in changes[1][2]
    assert ("evacuate", "a", None) in changes
    m = mk.decode(nova.svc["compute1"].disabled_reason)
    assert changes[-1][0] == "disable" and m.state is mk.MarkerState.RECOVERED
    assert m.token == 40 and "1 evacuated, 0 failed, 1 notified" in m.note
    types = [e.event_type for e in bus.sent]
    assert types == [events.RECOVERY_START, events.RECOVERY_REQUIRED, events.EVACUATE_START,
                     events.EVACUATE_END, events.RECOVERY_END]
    required = bus.sent[1].payload
    assert (required["instance_id"], required["project_id"], required["host"]) == \
        ("b", "p1", "compute1")
    assert all(e.payload["incident_id"] == "compute1-40" for e in bus.sent)
    act.close()


def test_repaired_host_is_reenabled_once_clean():
    log = Log()
    recovered = mk.encode(mk.MarkerState.RECOVERED, at=NOW, token=40)
    pending = Migration(1, "u", "a", "evacuation", "done", "compute1", "compute2", None, None)
    act, nova, bus = make(log, [svc("compute1", recovered, up=True)], migrations=[pending])
    views = {"compute1": view("compute1", Phase.HEALTHY)}
    run(act, views, [], Verify(log))
    assert "enable" not in [c[0] for c in log]  # waiting for the clean-up
    nova.migrations = [Migration(1, "u", "a", "evacuation", "completed", "compute1",
                                 "compute2", None, None)]
    n = len(log)
    run(act, views, [], Verify(log))  # asked again only after [nova] refresh seconds
    assert len(log) == n
    act.clock.advance(act.settings.nova_refresh)
    run(act, views, [], Verify(log))
    assert ("enable", "compute1") in log
    assert bus.sent[-1].event_type == events.HOST_RESTORED
    act.close()


def test_host_back_mid_recovery_is_held():
    log = Log()
    fenced = mk.encode(mk.MarkerState.FENCED, at=NOW, token=40)
    act, nova, _ = make(log, [svc("compute1", fenced, up=True, forced=True)])
    run(act, {"compute1": view("compute1", Phase.HEALTHY)}, [], Verify(log))
    m = mk.decode(nova.svc["compute1"].disabled_reason)
    assert m.state is mk.MarkerState.HELD and "may run twice" in m.note
    act.close()


def test_operator_disabled_host_is_left_alone():
    log = Log()
    act, nova, bus = make(log, [svc("compute1", "maintenance by ops")])
    run(act, {"compute1": view("compute1", Phase.FAILED)}, ["compute1"], Verify(log))
    assert log == [] and bus.sent == []
    act.close()


def test_dry_run_touches_nothing_and_says_what_it_would_do_once():
    log = Log()
    act, nova, bus = make(log, [svc("compute1")], dry_run=True)
    views = {"compute1": view("compute1", Phase.FAILED)}
    run(act, views, ["compute1"], Verify(log))
    act.clock.advance(act.settings.retry_backoff_max)
    run(act, views, ["compute1"], Verify(log))
    assert log == []  # not even a leadership round trip: nothing is about to change
    assert [(e.event_type, e.payload["dry_run"]) for e in bus.sent] == \
        [(events.HOST_FAILED, True)]
    assert bus.sent[0].payload["incident_id"] == "compute1-42"
    act.close()


def test_no_second_step_until_nova_was_read_after_the_first():
    log = Log()
    act, nova, bus = make(log, [svc("compute1")])
    views = {"compute1": view("compute1", Phase.FAILED)}
    run(act, views, ["compute1"], Verify(log))
    n = len(log)
    # the cached view still says "not fenced": acting on it would fence twice
    run(act, views, ["compute1"], Verify(log), refresh=False)
    assert len(log) == n
    assert [e.event_type for e in bus.sent].count(events.FENCE_START) == 1
    act.close()


@pytest.mark.parametrize("power_on", [False, True])
def test_power_on_after_recovery_is_optional(power_on):
    log = Log()
    fenced = mk.encode(mk.MarkerState.FENCED, at=NOW, token=40)
    act, nova, _ = make(log, [svc("compute1", fenced, forced=True)], [server("a", "evacuate")],
                        power_on=power_on)
    run(act, {"compute1": view("compute1", Phase.FAILED)}, [], Verify(log))
    calls = [c[0] for c in log]
    assert ("power_on" in calls) is power_on
    if power_on:  # only once the RECOVERED marker is written
        assert calls.index("power_on") > max(i for i, c in enumerate(log)
                                             if c[0] == "disable" and "recovered" in c[2])
    act.close()


class FakeAttestations(Attestations):
    def __init__(self, records):
        self.records, self.consumed = dict(records), []

    def get(self, host):
        return self.records.get(host)

    def consume(self, host):
        self.consumed.append(host)
        self.records.pop(host, None)


@pytest.mark.parametrize("age,used", [(0, True), (5000, False)], ids=["fresh", "stale"])
def test_operator_attestation_stands_in_for_a_dead_bmc(age, used, caplog):
    caplog.set_level("WARNING", "instanceha.controller.stages.fence")
    log = Log()
    err = fexc.BMCUnreachable(host="compute1", address="127.0.0.1", reason="no power")
    record = {"by": "alice", "identity": "instanceha-operator", "reason": "PDU off",
              "at": NOW.timestamp() - age}
    attestations = FakeAttestations({"compute1": record})
    act, nova, bus = make(log, [svc("compute1")], fencer_error=err, attestations=attestations)
    run(act, {"compute1": view("compute1", Phase.FAILED)}, ["compute1"], Verify(log))
    m = mk.decode(nova.svc["compute1"].disabled_reason)
    if used:
        fenced = mk.decode(next(c[2] for c in log if c[0] == "force_down"))
        assert fenced.state is mk.MarkerState.FENCED
        assert "attested by instanceha-operator (login alice): PDU off" in fenced.note
        assert m.state is mk.MarkerState.RECOVERED  # and recovered right after
        assert attestations.consumed == ["compute1"]
        ends = [e for e in bus.sent if e.event_type == events.FENCE_END]
        assert [e.payload["driver"] for e in ends] == ["operator-attestation"]
        assert "host=compute1 forced down and marked fenced on attestation" in caplog.text
    else:  # made before this failure began: never reused
        assert m is None and attestations.consumed == []
        assert bus.sent[-1].event_type == events.FENCE_ERROR
    act.close()


def test_the_incident_journal_tells_the_whole_failure():
    """Detected -> fenced -> recovered -> restored: one incident, every step,
    the notifications carrying its id."""
    from instanceha.controller.journal import IncidentJournal
    from tests.unit.fakes import FakeCoordinator

    log = Log()
    store = FakeCoordinator(FakeClock())
    journal = IncidentJournal(store, "ctl-a", clock=at_now(), background=False)
    servers = [server("a", "evacuate"), server("b", "notify"), server("c", None)]
    act, nova, bus = make(log, [svc("compute1")], servers, journal=journal)
    verify = Verify(log)
    suspect = {"compute1": HostView("compute1", Phase.SUSPECT, 0.0, "heartbeat late", "r1")}
    run(act, suspect, [], verify)
    failed = {"compute1": HostView("compute1", Phase.FAILED, 1.0, "heartbeat stale", "r2")}
    run(act, failed, [], verify)  # the guard holds it once
    run(act, failed, ["compute1"], verify)  # fenced, forced down, recovered at once
    run(act, failed, [], verify)  # nothing more to do while it is down
    nova.set_service("compute1", state="up")
    healthy = {"compute1": HostView("compute1", Phase.HEALTHY, 9.0, "back", "r3")}
    act.clock.advance(act.settings.nova_refresh)
    run(act, healthy, [], verify)  # forced-down unset
    act.clock.advance(act.settings.nova_refresh)
    run(act, healthy, [], verify)  # re-enabled
    assert journal.flush()
    (incident,) = store.incidents()
    assert incident == "compute1-42"
    entries = store.incident_entries(incident)
    # recovered in the fence's job (no "decided recover" in between); then the
    # decisions "recovered, waiting for the host" and "re-enable"
    assert [e["kind"] for e in entries] == [
        "decision", "held", "fence_start", "fence_ok", "forced_down",
        "recovery_start", "instance", "instance", "instance", "recovery_end", "decision",
        "decision", "unforced", "restored"]
    assert [s["phase"] for s in entries[0]["signals"]] == ["SUSPECT", "FAILED"]
    assert entries[3]["fence"]["read_back"] == "off"
    outcomes = {e["instance_id"]: e["outcome"] for e in entries if e["kind"] == "instance"}
    assert outcomes == {"a": "evacuated", "b": "notified", "c": "ignored"}
    summary = store.incidents()[incident]
    assert summary["state"] == "closed"
    assert (summary["evacuated"], summary["notified"], summary["ignored"]) == (1, 1, 1)
    assert {e.payload["incident_id"] for e in bus.sent} == {incident}
    act.close()


def test_a_failed_fence_is_in_the_journal_and_the_incident_stays_open():
    from instanceha.controller.journal import IncidentJournal
    from tests.unit.fakes import FakeCoordinator

    log = Log()
    store = FakeCoordinator(FakeClock())
    journal = IncidentJournal(store, "ctl-a", clock=at_now(), background=False)
    err = fexc.BMCUnreachable(host="compute1", address="127.0.0.1", reason="timeout")
    act, nova, bus = make(log, [svc("compute1")], fencer_error=err, journal=journal)
    run(act, {"compute1": view("compute1", Phase.FAILED)}, ["compute1"], Verify(log))
    assert journal.flush()
    (incident,) = store.incidents()
    summary = store.incidents()[incident]
    assert summary["state"] == "fence-failed" and "unreachable" in summary["reason"]
    last = store.incident_entries(incident)[-1]
    assert last["kind"] == "fence_error" and last["action"] == "retry later"
    act.close()


def test_status_shows_novas_view_and_the_recovery_decision():
    from instanceha.cmd.ops_cli import _nova
    from instanceha.controller import status
    from instanceha.engine.guard import GuardState
    from tests.unit.fakes import FakeCoordinator

    log = Log()
    act, nova, _ = make(log, [svc("compute1"), svc("compute2", up=True)])
    run(act, {"compute1": view("compute1", Phase.FAILED),
              "compute2": view("compute2", Phase.HEALTHY)}, ["compute1"], Verify(log))
    act.clock.advance(1.0)
    act.nova_view.refresh()
    seen = act.nova_status()
    assert seen["compute1"] == {"state": "down", "status": "disabled", "forced_down": True,
                                "marker": "recovered", "recovery": "fence"}
    assert _nova(seen["compute1"]) == "down/disabled,forced:recovered"
    assert _nova(seen["compute2"]) == "up/enabled" and _nova({}) == "-"
    snap = FakeCoordinator(FakeClock()).snapshot()
    doc = status.build("ctl-a", 42, {"compute1": view("compute1", Phase.FAILED)}, snap,
                       GuardState(),
                       now=10.0, wall=1000.0, nova=seen)
    assert doc["hosts"]["compute1"]["nova"]["marker"] == "recovered"
    act.close()


def test_a_forced_down_host_is_enabled_only_once_nova_itself_sees_it_up():
    """Forced down, Nova reads the service down whatever runs: the agent's word
    lets instanceha unset forced-down; enabling waits for nova-compute's own
    report, so nova-api clears placement's COMPUTE_STATUS_DISABLED trait at once."""
    log = Log()
    recovered = mk.encode(mk.MarkerState.RECOVERED, at=NOW, token=40)
    act, nova, bus = make(log, [svc("compute1", recovered, up=False, forced=True)])
    views = {"compute1": view("compute1", Phase.HEALTHY)}
    run(act, views, [], Verify(log))
    assert [c for c in log if c[0] != "verify"] == [("unset_forced_down", "compute1")]
    assert nova.svc["compute1"].disabled  # still out of service
    run(act, views, [], Verify(log))  # nova-compute has not reported yet: wait
    assert ("enable", "compute1") not in log
    nova.set_service("compute1", state="up")
    run(act, views, [], Verify(log))
    assert ("enable", "compute1") in log and bus.sent[-1].event_type == events.HOST_RESTORED
    act.close()


def test_each_evacuation_is_reported_as_it_completes_even_if_the_leader_dies_mid_batch():
    from instanceha.controller.journal import IncidentJournal, IncidentState
    from tests.unit.fakes import FakeCoordinator

    class DyingEvacuator:
        """Reports its first result through the hook, then leadership is lost."""

        on_result = None

        def __init__(self, nova):
            self.nova = nova

        def evacuate_host(self, host, servers, target_host=None):
            first = servers[0]
            self.nova.evacuate(first.id)
            self.on_result(EvacuationResult(first.id, first.name, host, Outcome.EVACUATED, 1,
                                            2.0, dest_host="compute2", status="ACTIVE"))
            raise exceptions.NotLeader(reason="deposed mid-batch")

    log = Log()
    store = FakeCoordinator(FakeClock())
    journal = IncidentJournal(store, "ctl-a", clock=at_now(), background=False)
    fenced = mk.encode(mk.MarkerState.FENCED, at=NOW, token=40)
    nova = FakeNova(log, [svc("compute1", fenced, forced=True)],
                    [server("a", "evacuate"), server("b", "evacuate")])
    bus = Bus()
    act = RecoveryActuator(ActuatorSettings(name="ctl-a"), FakeFencer(log), nova,
                           DyingEvacuator, notifier=bus, events=events, clock=at_now(),
                           journal=journal)
    act.nova_view.refresh()
    journal.open("compute1", 40, "forced_down", "fenced by this term's leader",
                 state=IncidentState.FENCED)
    run(act, {"compute1": view("compute1", Phase.FAILED)}, [], Verify(log))
    ends = [e.payload["instance_id"] for e in bus.sent if e.event_type == events.EVACUATE_END]
    assert ends == ["a"]
    assert journal.flush()
    (incident,) = store.incidents()
    done = [e for e in store.incident_entries(incident) if e["kind"] == "instance"]
    assert [(e["instance_id"], e["outcome"]) for e in done] == [("a", "evacuated")]
    assert mk.decode(nova.svc["compute1"].disabled_reason).state is mk.MarkerState.RECOVERING
    act.close()


@pytest.mark.parametrize("phase,marker,closed", [
    (Phase.HEALTHY, None, True),  # back before any fence: over
    (Phase.FAILED, mk.MarkerState.FENCED, False),  # fenced (entries lost): recovering
])
def test_only_a_host_back_before_its_fence_closes_a_detected_incident(phase, marker, closed):
    from instanceha.controller.journal import IncidentJournal
    from tests.unit.fakes import FakeCoordinator

    log = Log()
    store = FakeCoordinator(FakeClock())
    journal = IncidentJournal(store, "ctl-a", clock=at_now(), background=False)
    reason = mk.encode(marker, at=NOW, token=40) if marker else None
    act, nova, _ = make(log, [svc("compute1", reason, up=phase is Phase.HEALTHY,
                                  forced=marker is not None)], journal=journal)
    incident = journal.open("compute1", 42, "decision", "decided fence")
    act.act({"compute1": view("compute1", phase)}, [], Verify(log))
    assert journal.flush()
    assert (store.incidents()[incident]["state"] == "closed") is closed
    act.close()


def test_journal_notifications_and_metrics_say_which_level_fenced():

    from prometheus_client import CollectorRegistry

    from instanceha.controller.journal import IncidentJournal
    from instanceha.controller.metrics import ControllerMetrics
    from tests.unit.fakes import FakeCoordinator

    log = Log()
    store = FakeCoordinator(FakeClock())
    journal = IncidentJournal(store, "ctl-a", clock=at_now(), background=False)
    act, nova, bus = make(log, [svc("compute1")], journal=journal)
    pdus = ("fence_apc_snmp at pdu-a plug 3", "fence_apc_snmp at pdu-b plug 3")
    by_pdu = dataclasses.replace(evidence("compute1", PowerState.OFF), driver="fence_agent",
                                 level=2, levels=2, devices=pdus,
                                 failed_levels=("level 1 (fence_ipmilan at bmc3): "
                                                "AgentTimeout",))
    act.fencer.power_off = lambda host: by_pdu
    act.metrics = ControllerMetrics(service=None, registry=CollectorRegistry())
    run(act, {"compute1": view("compute1", Phase.FAILED)}, ["compute1"], Verify(log))
    assert journal.flush()
    (incident,) = store.incidents()
    ok = next(e for e in store.incident_entries(incident) if e["kind"] == "fence_ok")
    assert (ok["fence"]["level"], ok["fence"]["devices"]) == (2, list(pdus))
    assert ok["fence"]["failed_levels"] == ["level 1 (fence_ipmilan at bmc3): AgentTimeout"]
    assert "level 2 of 2" in ok["text"] and "AgentTimeout" in ok["text"]
    (end,) = [e for e in bus.sent if e.event_type == events.FENCE_END]
    assert end.payload["level"] == 2 and end.payload_dict()["devices"] == list(pdus)
    assert act.metrics.registry.get_sample_value(
        "instanceha_fence_level_total", {"level": "2", "devices": ", ".join(pdus)}) == 1


def test_status_names_the_api_call_a_recovery_waits_on_without_republishing_for_it():
    from instanceha.controller import status

    log = Log()
    act, _, _ = make(log, [svc("compute1"), svc("compute2", up=True)])
    act.clock.advance(1.0)
    act.nova_view.refresh()
    with act.calls.scope("compute1"):
        act.calls.begin("compute", "GET", "/os-migrations?source_compute=compute1")
    assert "waiting_on" not in act.nova_status()["compute1"]  # not slow yet
    act.clock.advance(3.0)
    seen = act.nova_status()
    assert seen["compute1"]["waiting_on"] == "compute GET /os-migrations for 3.0 s"
    assert "waiting_on" not in seen["compute2"]
    before = dict(seen["compute1"], waiting_on="compute GET /os-migrations for 1.0 s")
    doc = lambda nova: {"leader": "a", "token": 1, "guard": {}, "control": {},  # noqa: E731
                        "hosts": {"compute1": {"phase": "FAILED", "rule": "r", "member": False,
                                               "incarnation": 1, "services": {},
                                               "nova": nova}}}

    class Store:  # what the publisher writes to
        def __init__(self):
            self.published = []

        def publish_status(self, doc):
            self.published.append(doc)

    store = Store()
    publisher = status.StatusPublisher(store, refresh=5.0)
    assert publisher.maybe_publish(doc(before), now=0.0)
    assert not publisher.maybe_publish(doc(seen["compute1"]), now=1.0)  # only the wait grew
    assert store.published == [doc(before)]
    act.close()


def test_nova_is_read_again_while_every_worker_runs_a_recovery():
    # one worker, held by a fence that waits on the BMC: the services refresh
    # has a thread of its own and still runs
    import threading

    log = Log()
    release = threading.Event()
    act, nova, fencer, _ = make_gated(log, [server("a", "evacuate")],
                                      on_power_off=lambda: release.wait(10), workers=1,
                                      fence_workers=1)
    act.act({"compute1": view("compute1", Phase.FAILED)}, ["compute1"], Verify(log))
    assert act.running() == ["compute1"]
    act.clock.advance(act.settings.nova_refresh)
    before = act.nova_view.read_at
    act.nova_view.maybe_refresh().result(timeout=10)
    assert act.nova_view.read_at > before and act.running() == ["compute1"]
    release.set()
    act.wait(timeout=10)
    act.close()


def test_a_host_the_guard_holds_has_its_plan_read_ahead_and_its_fence_uses_it(caplog):
    from instanceha.controller import recovery

    log = Log()
    act, nova, bus = make(log, [svc("compute1")], [server("a", "evacuate")])
    failed = {"compute1": view("compute1", Phase.FAILED)}
    run(act, failed, [], Verify(log))  # held by the guard's wait for companions
    act.wait(timeout=10)  # the plan read ahead
    assert nova.reads.count("servers_on_host") == 1
    assert mutations(log) == []  # read-only: nothing moves before the fence
    run(act, failed, [], Verify(log))  # still held: read once per failure
    assert nova.reads.count("servers_on_host") == 1
    act.clock.advance(recovery.READ_AHEAD_MAX_AGE / 2 - 1.0)
    with caplog.at_level(logging.INFO, logger="instanceha.controller.read_ahead"):
        run(act, failed, ["compute1"], Verify(log))  # handed to fencing
    assert "host=compute1 fence uses the recovery plan read ahead 6.0 s ago" in caplog.text
    # the plan read ahead, then the one list after the force-down (late arrivals)
    assert nova.reads.count("servers_on_host") == 2
    calls = [c[0] for c in log]
    assert calls.index("power_off") < calls.index("force_down") < calls.index("evacuate")
    assert [c[1] for c in log if c[0] == "evacuate"] == ["a"]
    act.close()


def test_a_plan_read_ahead_too_long_before_the_fence_is_read_again(caplog):
    from instanceha.controller import recovery

    log = Log()
    act, nova, bus = make(log, [svc("compute1")], [server("a", "evacuate")])
    failed = {"compute1": view("compute1", Phase.FAILED)}
    run(act, failed, [], Verify(log))
    act.wait(timeout=10)  # the plan read ahead
    act.clock.advance(recovery.READ_AHEAD_MAX_AGE + 1.0)
    with caplog.at_level(logging.INFO, logger="instanceha.controller.read_ahead"):
        run(act, failed, ["compute1"], Verify(log))
    assert "host=compute1 recovery plan read ahead 12.0 s ago is not used (older than " \
        "10 s)" in caplog.text
    assert nova.reads.count("servers_on_host") == 3  # ahead (stale), beside the fence, after
    assert [c[1] for c in log if c[0] == "evacuate"] == ["a"]
    act.close()


def test_at_most_workers_hosts_are_read_ahead_while_the_guard_holds_them():
    log = Log()
    hosts = [f"compute{i}" for i in range(1, 40)]
    act, nova, _ = make(log, [svc(h) for h in hosts])
    run(act, {h: view(h, Phase.FAILED) for h in hosts}, [], Verify(log))
    act.wait(timeout=10)
    assert len(act.read_ahead.hosts()) == act.settings.workers < len(hosts)
    assert nova.reads.count("servers_on_host") == act.settings.workers
    run(act, {h: view(h, Phase.HEALTHY) for h in hosts}, [], Verify(log))  # all back
    assert act.read_ahead.hosts() == []
    assert mutations(log) == []
    act.close()


def test_a_host_forgotten_while_held_frees_its_read_ahead():
    log = Log()
    act, nova, _ = make(log, [svc("compute1")])
    run(act, {"compute1": view("compute1", Phase.FAILED)}, [], Verify(log))
    assert act.read_ahead.hosts() == ["compute1"]
    run(act, {}, [], Verify(log))  # no longer registered
    assert act.read_ahead.hosts() == []
    act.close()


def test_a_fence_never_waits_for_a_recovery():
    """One recovery worker, taken by compute1's evacuation that waits on Nova:
    compute2 fails and is fenced and forced down meanwhile (fences have
    workers of their own); its recovery then waits for the recovery worker."""
    import threading

    log = Log()
    release, fenced = threading.Event(), threading.Event()

    class StuckEvacuator(FakeEvacuator):
        def evacuate_host(self, host, servers, target_host=None):
            release.wait(10)  # Nova does not answer
            return super().evacuate_host(host, servers, target_host)

    class Nova(FakeNova):
        def force_down(self, host, reason=None):
            try:
                return super().force_down(host, reason)
            finally:
                fenced.set()

    marker = mk.encode(mk.MarkerState.FENCED, at=NOW, token=40)
    nova = Nova(log, [svc("compute1", marker, forced=True), svc("compute2")],
                [server("a", "evacuate"), server("b", "evacuate", host="compute2")])
    act = RecoveryActuator(ActuatorSettings(name="ctl-a", workers=1, fence_workers=2),
                           FakeFencer(log), nova, lambda guarded: StuckEvacuator(log, guarded),
                           clock=at_now())
    act.nova_view.refresh()
    failed = {h: view(h, Phase.FAILED) for h in ("compute1", "compute2")}
    act.act(failed, [], Verify(log))  # compute1's recovery takes the only recovery worker
    assert act.running() == ["compute1"]
    act.act(failed, ["compute2"], Verify(log))
    assert fenced.wait(10), "compute2's fence waited for compute1's recovery"
    assert ("power_off", "compute2") in log and act.running() == ["compute1", "compute2"]
    assert "evacuate" not in [c[0] for c in log]  # compute1's evacuation still waits
    release.set()
    act.wait(timeout=10)
    calls = [c[:2] for c in log if c[0] in ("power_off", "force_down", "evacuate")]
    assert calls.index(("force_down", "compute2")) < calls.index(("evacuate", "a"))
    assert sorted(c[1] for c in log if c[0] == "evacuate") == ["a", "b"]
    act.close()


def test_a_failed_fence_is_retried_as_soon_as_the_inventory_changes():
    """A wrong BMC password: the fence fails and backs off; the operator fixes
    the inventory file: the next tick fences again, before the back-off ends,
    and the journal says why."""
    from instanceha.controller.journal import IncidentJournal
    from tests.unit.fakes import FakeCoordinator

    log = Log()
    store = FakeCoordinator(FakeClock())
    journal = IncidentJournal(store, "ctl-a", clock=at_now(), background=False)
    err = fexc.AuthFailed(host="compute1", driver="ipmi", address="127.0.0.1",
                          username="admin", reason="wrong password")
    act, nova, bus = make(log, [svc("compute1")], fencer_error=err, journal=journal)
    views = {"compute1": view("compute1", Phase.FAILED)}
    for _ in range(3):  # back-off 2, 4, 8 s: the third waits 8 s
        act.clock.advance(act.settings.retry_backoff_max)
        run(act, views, ["compute1"], Verify(log))
    assert [c[0] for c in log].count("power_off") == 3
    run(act, views, ["compute1"], Verify(log))
    assert [c[0] for c in log].count("power_off") == 3  # within the back-off: no try
    act.fencer.error = None
    act.fencer.stamp = ("inventory", 2)  # fixed by the operator
    run(act, views, ["compute1"], Verify(log), refresh=False)
    assert [c[0] for c in log].count("power_off") == 4 and "force_down" in [c[0] for c in log]
    assert journal.flush()
    (incident,) = store.incidents()
    kinds = [e["kind"] for e in store.incident_entries(incident)]
    changed = kinds.index("inventory_changed")
    assert kinds[changed - 1] == "fence_error" and kinds[changed + 1:changed + 3] == [
        "fence_start", "fence_ok"]
    entry = store.incident_entries(incident)[changed]
    assert entry["retry_was_due_at"] > NOW.timestamp() and "not in 7 s" in entry["text"]
    act.close()


def test_a_fence_retry_says_host_failed_once_and_numbers_its_attempts():
    from instanceha.controller.journal import IncidentJournal
    from tests.unit.fakes import FakeCoordinator

    log = Log()
    journal = IncidentJournal(FakeCoordinator(FakeClock()), "ctl-a",
                              clock=at_now(), background=False)
    err = fexc.BMCUnreachable(host="compute1", address="127.0.0.1", reason="timeout")
    act, nova, bus = make(log, [svc("compute1")], fencer_error=err, journal=journal)
    views = {"compute1": view("compute1", Phase.FAILED)}
    run(act, views, ["compute1"], Verify(log))
    act.clock.advance(act.settings.retry_backoff_max)
    act.fencer.error = None
    run(act, views, ["compute1"], Verify(log))
    types = [e.event_type for e in bus.sent]
    assert types[:5] == [events.HOST_FAILED, events.FENCE_START, events.FENCE_ERROR,
                         events.FENCE_START, events.FENCE_END]
    assert types.count(events.HOST_FAILED) == 1
    attempts = [e.payload["attempt"] for e in bus.sent
                if e.event_type in (events.FENCE_START, events.FENCE_ERROR)]
    assert attempts == [1, 1, 2]
    keys = [e.payload["idempotency_key"] for e in bus.sent]
    assert len(keys) == len(set(keys))
    act.close()


def test_a_fence_retry_after_the_journal_was_unreadable_says_host_failed_once():
    """The journal's store cannot be read when the first fence starts: its
    host.failed is sent (at least once) and delivered, the fence fails; the
    retry comes once the store reads again and must not send it a second time."""
    from instanceha.controller.journal import IncidentJournal
    from tests.unit.fakes import FakeCoordinator

    log = Log()
    store = FakeCoordinator(FakeClock())
    store.journal_unreadable = True
    journal = IncidentJournal(store, "ctl-a", clock=at_now(), background=False)
    err = fexc.BMCUnreachable(host="compute1", driver="ipmi", address="127.0.0.1",
                              reason="timeout")
    act, nova, bus = make(log, [svc("compute1")], fencer_error=err, journal=journal)
    views = {"compute1": view("compute1", Phase.FAILED)}
    run(act, views, ["compute1"], Verify(log))
    assert [e.event_type for e in bus.sent] == [events.HOST_FAILED, events.FENCE_START,
                                               events.FENCE_ERROR]
    store.journal_unreadable = False
    act.clock.advance(act.settings.retry_backoff_max)
    act.fencer.error = None
    run(act, views, ["compute1"], Verify(log))
    types = [e.event_type for e in bus.sent]
    assert types.count(events.HOST_FAILED) == 1, types
    assert types[3:5] == [events.FENCE_START, events.FENCE_END]
    keys = [e.payload["idempotency_key"] for e in bus.sent]
    assert len(keys) == len(set(keys)), keys
    assert journal.flush()
    (incident,) = store.incidents()
    assert f"{incident}/host.failed" in store.incidents()[incident]["notifications_sent"]
    act.close()


def _leader(name, evacuator, store, nova, log, bus):
    """A leader's actuator and journal on the shared ``store`` (a term of its own)."""
    from instanceha.controller.journal import IncidentJournal

    journal = IncidentJournal(store, name, clock=at_now(), background=False)
    act = RecoveryActuator(ActuatorSettings(name=name), FakeFencer(log), nova, evacuator,
                           notifier=bus, events=events, clock=at_now(), journal=journal)
    act.nova_view.refresh()
    return act, journal


def test_a_new_leader_resuming_an_incident_does_not_send_its_steps_again():
    """Leader A fences, starts the recovery and evacuates one server of two,
    then is deposed; B (a new term, its own journal on the same store) resumes
    from the RECOVERING marker: the consumer gets each step once."""
    from tests.unit.fakes import FakeCoordinator

    class DyingEvacuator:
        on_result = None

        def __init__(self, nova):
            self.nova = nova

        def evacuate_host(self, host, servers, target_host=None):
            first = servers[0]
            self.nova.evacuate(first.id)
            self.on_result(EvacuationResult(first.id, first.name, host, Outcome.EVACUATED, 1,
                                            2.0, dest_host="compute2", status="ACTIVE"))
            raise exceptions.NotLeader(reason="deposed mid-batch")

    log, bus = Log(), Bus()
    store = FakeCoordinator(FakeClock())
    nova = FakeNova(log, [svc("compute1")], [server("a", "evacuate"), server("b", "evacuate")])

    a, journal_a = _leader("ctl-a", DyingEvacuator, store, nova, log, bus)
    failed = {"compute1": view("compute1", Phase.FAILED)}
    run(a, failed, ["compute1"], Verify(log, token=42))
    assert journal_a.flush()
    assert mk.decode(nova.svc["compute1"].disabled_reason).state is mk.MarkerState.RECOVERING
    a.close()
    sent_by_a = len(bus.sent)
    b, journal_b = _leader("ctl-b", lambda guarded: FakeEvacuator(log, guarded), store, nova,
                           log, bus)
    run(b, failed, [], Verify(log, token=43))
    assert journal_b.flush()
    assert mk.decode(nova.svc["compute1"].disabled_reason).state is mk.MarkerState.RECOVERED
    keys = [e.payload["idempotency_key"] for e in bus.sent]
    assert len(keys) == len(set(keys)), keys
    by_b = [(e.event_type, e.payload.get("instance_id")) for e in bus.sent[sent_by_a:]]
    assert by_b == [(events.EVACUATE_END, "b"), (events.RECOVERY_END, None)]
    assert {e.payload["incident_id"] for e in bus.sent} == {"compute1-42"}
    (incident,) = store.incidents()
    assert sorted(store.incidents()[incident]["notifications_sent"]) == sorted(keys)
    b.close()


def test_a_new_leader_reports_the_end_of_an_evacuation_its_predecessor_sent_and_died_in():
    """Leader A evacuates two servers; Nova moves both, but A dies after
    reporting only the first. B resumes: the second is no longer on the host,
    yet B finds its evacuation record, verifies it and reports its end: the
    consumer told of both starts is told of both ends, each once."""
    from tests.unit.fakes import FakeCoordinator

    log, bus = Log(), Bus()
    store = FakeCoordinator(FakeClock())
    nova = FakeNova(log, [svc("compute1"), svc("compute2", up=True)],
                    [server("a", "evacuate"), server("b", "evacuate"), server("c", "evacuate")])

    def moved(sid, n):
        nova.servers = [dataclasses.replace(s, host="compute2") if s.id == sid else s
                        for s in nova.servers]
        nova.migrations.append(Migration(n, None, sid, "evacuation", "done", "compute1",
                                         "compute2", NOW, NOW))

    class DyingEvacuator:
        on_result = None

        def __init__(self, nova):
            self.nova = nova

        def evacuate_host(self, host, servers, target_host=None):
            first, second = servers[0], servers[1]
            for n, s in enumerate((first, second), 1):
                self.nova.evacuate(s.id)
                moved(s.id, n)
            self.on_result(EvacuationResult(first.id, first.name, host, Outcome.EVACUATED, 1,
                                            2.0, dest_host="compute2", status="ACTIVE"))
            raise exceptions.NotLeader(reason="deposed mid-batch")

    a, journal_a = _leader("ctl-a", DyingEvacuator, store, nova, log, bus)
    failed = {"compute1": view("compute1", Phase.FAILED)}
    run(a, failed, ["compute1"], Verify(log, token=42))
    assert journal_a.flush()
    a.close()
    sent_by_a = len(bus.sent)
    evacuated_by_b = []

    class Evacuator(FakeEvacuator):
        def evacuate_host(self, host, servers, target_host=None):
            evacuated_by_b.extend(s.id for s in servers)
            return super().evacuate_host(host, servers, target_host)

    b, journal_b = _leader("ctl-b", lambda guarded: Evacuator(log, guarded), store, nova, log, bus)
    run(b, failed, [], Verify(log, token=43))
    assert journal_b.flush()
    assert mk.decode(nova.svc["compute1"].disabled_reason).state is mk.MarkerState.RECOVERED
    # "b" is handed to the evacuator (the real one verifies a server that left
    # the host: tests/unit/compute); "a", reported by A, is not
    assert sorted(evacuated_by_b) == ["b", "c"]
    keys = [e.payload["idempotency_key"] for e in bus.sent]
    assert len(keys) == len(set(keys)), keys
    by_b = sorted((e.event_type, e.payload.get("instance_id") or "")
                  for e in bus.sent[sent_by_a:])
    assert by_b == [(events.RECOVERY_END, ""), (events.EVACUATE_END, "b"),
                    (events.EVACUATE_END, "c")]
    ends = [e.payload["instance_id"] for e in bus.sent if e.event_type == events.EVACUATE_END]
    starts = [e.payload["instance_id"] for e in bus.sent
              if e.event_type == events.EVACUATE_START]
    assert sorted(ends) == sorted(starts) == ["a", "b", "c"]
    b.close()
