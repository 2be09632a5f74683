"""The guest actuator on fakes: a scripted Nova, the fake coordinator, a
synchronous pool, the real incident journal (no writer thread)."""

import concurrent.futures
import dataclasses
import datetime

import pytest

from instanceha import exceptions
from instanceha.compute import exceptions as nova_exc
from instanceha.compute.model import InstanceAction
from instanceha.controller.executor import Verifier
from instanceha.controller.guests import GuestActuator, GuestActuatorSettings
from instanceha.controller.journal import IncidentJournal
from instanceha.engine.guest import GuestSettings
from instanceha.engine.model import HostView, Phase
from instanceha.notify import events
from tests.unit.clock import FakeClock
from tests.unit.compute.fakes import server
from tests.unit.fakes import FakeCoordinator, FakeLeadership
from tests.unit.nova import FakeNova

WALL = 1.7e9


class SyncPool:
    def submit(self, fn, *args):
        f = concurrent.futures.Future()
        f.set_result(fn(*args))
        return f

    def shutdown(self, **kw):
        pass


class Notifier:
    def __init__(self):
        self.sent = []

    enabled = True

    def emit(self, event, on_done=None):  # delivered at once
        self.sent.append(event)
        if on_done is not None:
            on_done(True)
        return f"msg-{len(self.sent)}"


@pytest.fixture
def rig():
    clock = FakeClock(wall=WALL)
    coord = FakeCoordinator(clock)
    lead = FakeLeadership()
    nova = FakeNova()
    notifier = Notifier()
    journal = IncidentJournal(coord, "ctl-1", clock=clock, background=False)
    act = GuestActuator(coord, nova, GuestActuatorSettings(
        "ctl-1", guest=GuestSettings(max_restarts=2, window=600, task_state_wait=30,
                                     coalesce=5)),
        notifier=notifier, events=events, journal=journal, clock=clock,
        pool=SyncPool())

    class Rig:
        pass

    r = Rig()
    r.clock, r.coord, r.lead, r.nova, r.notifier, r.journal, r.act = \
        clock, coord, lead, nova, notifier, journal, act
    r.views = {"c1": HostView("c1", Phase.HEALTHY, clock(), "ok", "fresh")}
    r.verify = Verifier(lead)

    def tick(control=None):
        act.tick(r.views, control or {}, r.verify)
        journal.flush()

    r.tick = tick
    return r


def put(rig, sid, kind="watchdog", at=WALL - 1, **detail):
    return rig.coord.guest_event_put({"host": "c1", "instance_id": sid, "kind": kind, "at": at,
                                      "detail": detail or {"event": "watchdog",
                                                           "action": "none"}})


def guest_server(sid, policy, **kw):
    return dataclasses.replace(server(sid, host="c1", **kw),
                               metadata={"instanceha:guest": policy})


def boot(rig, sid, policy, **kw):
    rig.nova.servers[sid] = guest_server(sid, policy, **kw)


def test_restart_reboots_through_nova_records_notifies_and_dequeues(rig):
    boot(rig, "vm1", "restart")
    put(rig, "vm1")
    rig.tick()
    assert rig.nova.calls == [("reboot", "vm1")]
    assert rig.coord.guest_restarts("vm1") == [WALL]
    assert rig.coord.guest_events() == []
    (e,) = rig.notifier.sent
    p = e.payload_dict()
    assert (e.event_type, p["policy"], p["action"], p["reason"], p["project_id"]) == \
        (events.INSTANCE_FAILED, "restart", "reboot", "watchdog", "p")
    (incident,) = rig.coord.incidents().values()
    assert (incident["instance_id"], incident["state"], incident["restarted"]) == \
        ("vm1", "closed", 1)
    assert incident["id"] == p["incident_id"]
    kinds = [x["kind"] for x in rig.coord.incident_entries(incident["id"])]
    assert kinds == ["failure", "restarted"]


def test_leadership_is_verified_before_the_nova_call_and_before_dequeuing(rig):
    boot(rig, "vm1", "restart")
    put(rig, "vm1")
    rig.lead.verify_error = exceptions.NotLeader(reason="lost")
    rig.tick()
    assert rig.nova.calls == [] and len(rig.coord.guest_events()) == 1  # left to the next one


def test_not_leading_means_not_even_reading_the_queue(rig):
    rig.coord.guests_down = True  # would be logged if read
    rig.act.tick(rig.views, {"paused": {"reason": "maintenance"}}, rig.verify)
    assert rig.act.pending_count == 0


def test_notify_policy_only_notifies(rig):
    boot(rig, "vm1", "notify")
    put(rig, "vm1", kind="stopped_failed", event="lifecycle", state="stopped", detail="failed")
    rig.tick()
    assert rig.nova.calls == []
    (e,) = rig.notifier.sent
    assert (e.payload["policy"], e.payload["action"]) == ("notify", "none")


def test_owner_stopped_server_is_left_alone(rig):
    boot(rig, "vm1", "restart", vm_state="stopped")
    rig.nova.actions["vm1"] = [InstanceAction("stop", "user-1", "req", datetime.datetime.now(
        datetime.timezone.utc))]
    put(rig, "vm1", kind="stopped_failed")
    rig.tick()
    assert rig.nova.calls == [] and rig.notifier.sent == []
    (incident,) = rig.coord.incidents().values()
    assert incident["left_alone"] == 1


def test_stopped_by_novas_power_sync_is_started(rig):
    boot(rig, "vm1", "restart", vm_state="stopped")
    rig.nova.actions["vm1"] = [InstanceAction("stop", None, "req", None)]  # no user: Nova
    put(rig, "vm1", kind="stopped_failed")
    rig.tick()
    assert rig.nova.calls == [("start", "vm1")]


def test_a_reboot_nova_recorded_since_the_failure_is_not_repeated(rig):
    """The leader that rebooted died before dequeuing: its successor sees the reboot."""
    boot(rig, "vm1", "restart")
    at = datetime.datetime.fromtimestamp(WALL, datetime.timezone.utc)
    rig.nova.actions["vm1"] = [InstanceAction("reboot", "instanceha", "req", at)]
    put(rig, "vm1")
    rig.tick()
    assert rig.nova.calls == [] and rig.coord.guest_events() == []


def test_a_task_state_waits_and_keeps_the_failure_queued(rig):
    boot(rig, "vm1", "restart", task_state="rebooting_hard")
    put(rig, "vm1")
    rig.tick()
    assert rig.nova.calls == [] and len(rig.coord.guest_events()) == 1
    rig.nova.servers["vm1"] = guest_server("vm1", "restart")
    rig.clock.advance(5)
    rig.tick()
    assert rig.nova.calls == [("reboot", "vm1")] and rig.coord.guest_events() == []


def test_gives_up_after_max_restarts_in_the_window_and_says_so(rig):
    boot(rig, "vm1", "restart")
    for i in range(3):
        put(rig, "vm1", at=WALL - 100 + 10 * i)
        rig.tick()
        rig.act.last.clear()  # not coalesced: separate failures
    assert rig.nova.calls == [("reboot", "vm1")] * 2
    last = rig.notifier.sent[-1].payload
    assert last["action"] == "none" and last["note"].startswith("gave up")
    states = sorted(i["state"] for i in rig.coord.incidents().values())
    assert states == ["closed", "closed", "gave-up"]


def test_failures_within_coalesce_join_the_first_incident(rig):
    boot(rig, "vm1", "restart")
    put(rig, "vm1", at=WALL - 3)
    put(rig, "vm1", kind="paused_io_error", at=WALL - 1)
    rig.tick()
    rig.tick()
    assert rig.nova.calls == [("reboot", "vm1")]
    (incident,) = rig.coord.incidents().values()
    kinds = [x["kind"] for x in rig.coord.incident_entries(incident["id"])]
    assert kinds == ["failure", "restarted", "coalesced"]


def test_a_failure_after_the_restart_requested_is_a_new_one_even_within_coalesce(rig):
    boot(rig, "vm1", "restart")
    put(rig, "vm1", at=WALL - 1)
    rig.tick()
    rig.clock.wall_now = WALL + 2
    put(rig, "vm1", kind="stopped_failed", at=WALL + 1)  # the rebooted guest died again
    rig.tick()
    assert rig.nova.calls == [("reboot", "vm1")] * 2
    assert rig.coord.guest_restarts("vm1") == [WALL, WALL + 2]


def test_a_failed_host_is_left_to_the_host_recovery(rig):
    boot(rig, "vm1", "restart")
    rig.views["c1"] = HostView("c1", Phase.FAILED, rig.clock(), "dead", "gone")
    put(rig, "vm1")
    rig.tick()
    assert rig.nova.calls == [] and rig.coord.guest_events() == []


def test_a_domain_nova_does_not_know_is_dropped(rig):
    put(rig, "not-nova")
    rig.tick()
    assert rig.nova.calls == [] and rig.coord.guest_events() == []


def test_nova_errors_are_retried_with_backoff(rig):
    boot(rig, "vm1", "restart")
    rig.nova.errors.append(nova_exc.NovaConflict(operation="reboot", status=409, reason="busy"))
    put(rig, "vm1")
    rig.tick()
    assert rig.nova.calls == [] and len(rig.coord.guest_events()) == 1
    rig.tick()  # backing off: not tried again yet
    assert rig.nova.calls == []
    rig.clock.advance(2)
    rig.tick()
    assert rig.nova.calls == [("reboot", "vm1")]


def test_dry_run_requests_nothing_and_says_so(rig):
    rig.act.settings = GuestActuatorSettings("ctl-1", dry_run=True)
    boot(rig, "vm1", "restart")
    put(rig, "vm1")
    rig.tick()
    assert rig.nova.calls == []
    (e,) = rig.notifier.sent
    assert e.payload["dry_run"] is True and e.payload["note"].startswith("DRY-RUN")


def test_report_for_status(rig):
    boot(rig, "vm1", "notify")
    put(rig, "vm1")
    rig.tick()
    report = rig.act.report()
    assert report["pending"] == 1  # read before it was handled
    (recent,) = report["recent"]
    assert (recent["instance_id"], recent["outcome"]) == ("vm1", "notified")
