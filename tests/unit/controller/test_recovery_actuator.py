"""The recovery actuator on fakes: the order of its calls, its markers, its
events. Jobs run on its real thread pool; tests wait on the jobs' futures."""

import datetime

import pytest

from instanceha import exceptions
from instanceha.compute.evacuation import EvacuationResult, Outcome
from instanceha.compute.model import ComputeService, Migration, Server
from instanceha.controller.recovery import ActuatorSettings, RecoveryActuator
from instanceha.engine import marker as mk
from instanceha.engine.instance_policy import InstanceFacts, Recovery
from instanceha.engine.model import HostView, Phase
from instanceha.fencing import exceptions as fexc
from instanceha.notify import events
from tests.unit.fakes import FakeClock

NOW = datetime.datetime(2026, 11, 21, 12, 0, 0, tzinfo=datetime.timezone.utc)


class Log(list):
    pass


class FakeFencer:
    def __init__(self, log, error=None):
        self.log, self.error = log, error

    def power_on(self, host):
        self.log.append(("power_on", host))

        class Evidence:
            read_back = type("S", (), {"value": "on"})()

        return Evidence()

    def driver_name(self, host):
        return "fake"

    def power_off(self, host):
        self.log.append(("power_off", host))
        if self.error:
            raise self.error

        class Evidence:
            read_back = type("S", (), {"value": "off"})()
            attempts, duration = 1, 0.2

        return Evidence()


class FakeNova:
    def __init__(self, log, services, servers=(), migrations=()):
        self.log = log
        self.svc = {s.host: s for s in services}
        self.servers = list(servers)
        self.migrations = list(migrations)

    def services(self, host=None):
        return list(self.svc.values())

    def _set(self, host, **changes):
        import dataclasses
        self.svc[host] = dataclasses.replace(self.svc[host], **changes)

    def force_down(self, host, reason=None):
        self.log.append(("force_down", host, reason))
        self._set(host, forced_down=True, status="disabled", disabled_reason=reason)

    def disable(self, host, reason):
        self.log.append(("disable", host, reason))
        self._set(host, status="disabled", disabled_reason=reason)

    def enable(self, host, unset_forced_down=True):
        self.log.append(("enable", host))
        self._set(host, status="enabled", disabled_reason=None, forced_down=False)

    def unset_forced_down(self, host):
        self.log.append(("unset_forced_down", host))
        self._set(host, forced_down=False)

    def evacuate(self, server_id, host=None):
        self.log.append(("evacuate", server_id))

    def servers_on_host(self, host):
        return [s for s in self.servers if s.host == host]

    def instance_facts(self, servers, host):
        return {s.id: InstanceFacts(server_metadata=s.metadata) for s in servers}

    def evacuations(self, server_id=None, source_host=None):
        return self.migrations


class FakeEvacuator:
    def __init__(self, log, nova):
        self.log, self.nova = log, nova

    def evacuate_host(self, host, servers):
        out = []
        for s in servers:
            self.nova.evacuate(s.id)  # through the leadership-guarded client
            out.append(EvacuationResult(s.id, s.name, host, Outcome.EVACUATED, 1, 3.0,
                                        dest_host="compute2", status="ACTIVE"))
        return out


class Bus:
    def __init__(self):
        self.sent = []

    def emit(self, event):
        self.sent.append(event)


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
         power_on=False, journal=None):
    nova = FakeNova(log, services, servers, migrations)
    bus = Bus()
    act = RecoveryActuator(
        ActuatorSettings(name="ctl-a", default_recovery=Recovery.IGNORE, dry_run=dry_run,
                         power_on_after_recovery=power_on),
        FakeFencer(log, fencer_error), nova, lambda guarded: FakeEvacuator(log, guarded),
        notifier=bus, events=events, clock=FakeClock(), wall=lambda: NOW, journal=journal)
    act._refresh()
    return act, nova, bus


def run(act, views, allowed, verify, refresh=True):
    """One tick after a fresh read of Nova (as the background refresh does)."""
    if refresh:
        act.clock.advance(1.0)
        act._refresh()
    act.act(views, allowed, verify)
    for job in list(act.jobs.values()):
        job.result(timeout=10)


def test_fence_then_force_down_with_the_marker():
    log = Log()
    act, nova, bus = make(log, [svc("compute1")])
    run(act, {"compute1": view("compute1", Phase.FAILED)}, ["compute1"], Verify(log))
    calls = [c[0] for c in log]
    assert calls == ["verify", "verify", "power_off", "verify", "verify", "force_down"]
    m = mk.decode(nova.svc["compute1"].disabled_reason)
    assert m.state is mk.MarkerState.FENCED and m.token == 42 and m.at == NOW
    assert [e.event_type for e in bus.sent] == [events.HOST_FAILED, events.FENCE_START,
                                                events.FENCE_END]
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
    # every world-changing call comes right after a leadership round trip
    assert calls == ["verify", "disable", "verify", "evacuate", "verify", "disable"]
    assert log[1][:2] == ("disable", "compute1") and "recovering" in log[1][2]
    assert log[3] == ("evacuate", "a")
    m = mk.decode(nova.svc["compute1"].disabled_reason)
    assert m.state is mk.MarkerState.RECOVERED and m.token == 40
    assert "1 evacuated, 0 failed, 1 notified" in m.note
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


class FakeAttestations:
    def __init__(self, records):
        self.records, self.consumed = dict(records), []

    def get(self, host):
        return self.records.get(host)

    def consume(self, host):
        self.consumed.append(host)
        self.records.pop(host, None)


@pytest.mark.parametrize("age,used", [(0, True), (5000, False)], ids=["fresh", "stale"])
def test_operator_attestation_stands_in_for_a_dead_bmc(age, used):
    log = Log()
    err = fexc.BMCUnreachable(host="compute1", address="127.0.0.1", reason="no power")
    act, nova, bus = make(log, [svc("compute1")], fencer_error=err)
    record = {"by": "alice", "reason": "PDU off", "at": NOW.timestamp() - age}
    act.attestations = FakeAttestations({"compute1": record})
    run(act, {"compute1": view("compute1", Phase.FAILED)}, ["compute1"], Verify(log))
    m = mk.decode(nova.svc["compute1"].disabled_reason)
    if used:
        assert m.state is mk.MarkerState.FENCED and "attested by alice: PDU off" in m.note
        assert act.attestations.consumed == ["compute1"]
        assert bus.sent[-1].event_type == events.FENCE_END
        assert bus.sent[-1].payload["driver"] == "operator-attestation"
    else:  # made before this failure began: never reused
        assert m is None and act.attestations.consumed == []
        assert bus.sent[-1].event_type == events.FENCE_ERROR
    act.close()


def test_the_incident_journal_tells_the_whole_failure():
    """Detected -> fenced -> recovered -> restored: one incident, every step,
    the notifications carrying its id."""
    from instanceha.controller.journal import IncidentJournal
    from tests.unit.fakes import FakeCoordinator

    log = Log()
    store = FakeCoordinator(FakeClock())
    journal = IncidentJournal(store, "ctl-a", wall=lambda: NOW.timestamp(), background=False)
    servers = [server("a", "evacuate"), server("b", "notify"), server("c", None)]
    act, nova, bus = make(log, [svc("compute1")], servers, journal=journal)
    verify = Verify(log)
    suspect = {"compute1": HostView("compute1", Phase.SUSPECT, 0.0, "heartbeat late", "r1")}
    run(act, suspect, [], verify)
    failed = {"compute1": HostView("compute1", Phase.FAILED, 1.0, "heartbeat stale", "r2")}
    run(act, failed, [], verify)  # the guard holds it once
    run(act, failed, ["compute1"], verify)  # fenced, forced down
    run(act, failed, [], verify)  # recovered
    nova._set("compute1", state="up")
    healthy = {"compute1": HostView("compute1", Phase.HEALTHY, 9.0, "back", "r3")}
    act.clock.advance(act.settings.nova_refresh)
    run(act, healthy, [], verify)  # forced-down unset
    act.clock.advance(act.settings.nova_refresh)
    run(act, healthy, [], verify)  # re-enabled
    assert journal.flush()
    (incident,) = store.incidents()
    assert incident == "compute1-42"
    entries = store.incident_entries(incident)
    assert [e["kind"] for e in entries] == [
        "decision", "held", "fence_start", "fence_ok", "forced_down", "decision",
        "recovery_start", "instance", "instance", "instance", "recovery_end", "decision",
        "unforced", "restored"]
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
    journal = IncidentJournal(store, "ctl-a", wall=lambda: NOW.timestamp(), background=False)
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
    act._refresh()
    seen = act.nova_status()
    assert seen["compute1"] == {"state": "down", "status": "disabled", "forced_down": True,
                                "marker": "fenced", "recovery": "fence"}
    assert _nova(seen["compute1"]) == "down/disabled,forced:fenced"
    assert _nova(seen["compute2"]) == "up/enabled" and _nova({}) == "-"
    snap = FakeCoordinator(FakeClock()).snapshot()
    doc = status.build("ctl-a", 42, {"compute1": view("compute1", Phase.FAILED)}, snap,
                       GuardState(),
                       now=10.0, wall=1000.0, nova=seen)
    assert doc["hosts"]["compute1"]["nova"]["marker"] == "fenced"
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
    nova._set("compute1", state="up")
    run(act, views, [], Verify(log))
    assert ("enable", "compute1") in log and bus.sent[-1].event_type == events.HOST_RESTORED
    act.close()


def test_each_evacuation_is_reported_as_it_completes_even_if_the_leader_dies_mid_batch():
    from instanceha.controller.journal import IncidentJournal
    from instanceha.controller.journal import State as Incident
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
    journal = IncidentJournal(store, "ctl-a", wall=lambda: NOW.timestamp(), background=False)
    fenced = mk.encode(mk.MarkerState.FENCED, at=NOW, token=40)
    nova = FakeNova(log, [svc("compute1", fenced, forced=True)],
                    [server("a", "evacuate"), server("b", "evacuate")])
    bus = Bus()
    act = RecoveryActuator(ActuatorSettings(name="ctl-a"), FakeFencer(log), nova,
                           DyingEvacuator, notifier=bus, events=events, clock=FakeClock(),
                           wall=lambda: NOW, journal=journal)
    act._refresh()
    journal.open("compute1", 40, "forced_down", "fenced by this term's leader",
                 state=Incident.FENCED)
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
    journal = IncidentJournal(store, "ctl-a", wall=lambda: NOW.timestamp(), background=False)
    reason = mk.encode(marker, at=NOW, token=40) if marker else None
    act, nova, _ = make(log, [svc("compute1", reason, up=phase is Phase.HEALTHY,
                                  forced=marker is not None)], journal=journal)
    incident = journal.open("compute1", 42, "decision", "decided fence")
    act.act({"compute1": view("compute1", phase)}, [], Verify(log))
    assert journal.flush()
    assert (store.incidents()[incident]["state"] == "closed") is closed
    act.close()
