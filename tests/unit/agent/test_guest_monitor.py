"""The instance monitor on a fake libvirt binding: no thread, no sleep."""

import pytest

from instanceha import exceptions
from instanceha.agent import guest_monitor as gm
from instanceha.agent import libvirt_events as le
from instanceha.engine.guest import GuestFailure
from tests.unit.clock import FakeClock


class LibvirtError(Exception):
    pass


class FakeDomain:
    def __init__(self, uuid, name, state=(1, 1)):
        self.uuid, self._name, self._state = uuid, name, state

    def UUIDString(self):
        return self.uuid

    def name(self):
        return self._name

    def state(self):
        return list(self._state)


class FakeConn:
    def __init__(self, domains):
        self.domains = domains
        self.callbacks = {}
        self.close_cb = None
        self.closed = False
        self.keepalive = None

    def setKeepAlive(self, interval, count):
        self.keepalive = (interval, count)

    def registerCloseCallback(self, cb, opaque):
        self.close_cb = cb

    def unregisterCloseCallback(self):
        self.close_cb = None

    def domainEventRegisterAny(self, dom, event_id, cb, opaque):
        self.callbacks[event_id] = cb
        return event_id

    def domainEventDeregisterAny(self, cb_id):
        self.callbacks.pop(cb_id, None)

    def listAllDomains(self, flags):
        return list(self.domains.values())

    def isAlive(self):
        return not self.closed

    def close(self):
        self.closed = True


class FakeLibvirt:
    libvirtError = LibvirtError

    def __init__(self):
        self.domains = {}
        self.down = False
        self.conns = []

    def open(self, uri):
        if self.down:
            raise LibvirtError(f"Failed to connect socket to '{uri}': Connection refused")
        conn = FakeConn(self.domains)
        self.conns.append(conn)
        return conn


@pytest.fixture
def lv():
    return FakeLibvirt()


def make_monitor(lv, **kw):
    sent = []
    clock = FakeClock(wall=1.7e9 + 1000.0)
    m = gm.GuestMonitor("qemu:///system", "compute1", lambda r: sent.append(r) or f"e-{len(sent)}",
                        libvirt_module=lv, clock=clock, coalesce=5, **kw)
    m.sent, m.test_clock = sent, clock
    return m


@pytest.fixture
def monitor(lv):
    return make_monitor(lv)


def test_lifecycle_mapping_matches_the_libvirt_binding():
    import libvirt  # the [test] extra installs libvirt-python: never skipped
    assert (le.STOPPED, le.STOPPED_FAILED) == (libvirt.VIR_DOMAIN_EVENT_STOPPED,
                                               libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED)
    assert (le.CRASHED, le.STARTED) == (libvirt.VIR_DOMAIN_EVENT_CRASHED,
                                        libvirt.VIR_DOMAIN_EVENT_STARTED)
    assert le.SUSPENDED_IOERROR == libvirt.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR
    assert le.SHUTDOWN_GUEST == libvirt.VIR_DOMAIN_EVENT_SHUTDOWN_GUEST
    assert le.EVENT_ID_WATCHDOG == libvirt.VIR_DOMAIN_EVENT_ID_WATCHDOG
    assert le.EVENT_ID_IO_ERROR_REASON == libvirt.VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON
    assert (le.STATE_SHUTOFF, le.SHUTOFF_CRASHED) == (libvirt.VIR_DOMAIN_SHUTOFF,
                                                       libvirt.VIR_DOMAIN_SHUTOFF_CRASHED)
    assert le.PAUSED_IOERROR == libvirt.VIR_DOMAIN_PAUSED_IOERROR
    assert le.PAUSED_CRASHED == libvirt.VIR_DOMAIN_PAUSED_CRASHED


@pytest.mark.parametrize("event,detail,kind", [
    (le.STOPPED, le.STOPPED_FAILED, GuestFailure.STOPPED_FAILED),
    (le.STOPPED, le.STOPPED_CRASHED, GuestFailure.CRASHED),
    (le.CRASHED, 0, GuestFailure.CRASHED),
    (le.SHUTDOWN, le.SHUTDOWN_GUEST, GuestFailure.SHUTDOWN_BY_GUEST),
    (le.SUSPENDED, le.SUSPENDED_IOERROR, GuestFailure.PAUSED_IO_ERROR),
    (le.STOPPED, 1, None),  # destroyed (Nova's stop or delete)
    (le.SHUTDOWN, 2, None),  # host-initiated
    (le.SUSPENDED, 0, None),  # paused by a user
    (le.SUSPENDED, le.SUSPENDED_WATCHDOG, None),  # its watchdog event reports it
])
def test_lifecycle_events_that_are_failures(event, detail, kind):
    assert le.lifecycle_kind(event, detail) == kind


@pytest.mark.parametrize("state,reason,kind", [
    (le.STATE_SHUTOFF, le.SHUTOFF_CRASHED, GuestFailure.STOPPED_FAILED),  # QEMU went away
    (le.STATE_CRASHED, 0, GuestFailure.CRASHED),
    (le.STATE_PAUSED, le.PAUSED_CRASHED, GuestFailure.CRASHED),
    (le.STATE_PAUSED, le.PAUSED_IOERROR, GuestFailure.PAUSED_IO_ERROR),
    (le.STATE_PAUSED, le.PAUSED_WATCHDOG, GuestFailure.WATCHDOG),
    (le.STATE_PAUSED, 1, None),  # paused by a user
    (le.STATE_SHUTOFF, 1, None),  # shut down
    (1, 1, None),  # running
])
def test_domain_states_that_are_failures(state, reason, kind):
    assert le.state_kind(state, reason) == kind


def test_events_are_forwarded_with_the_domain_uuid_as_instance_and_the_detail(monitor):
    monitor.handle_watchdog("uuid-1", "instance-1", 0)
    monitor.handle_lifecycle("uuid-2", "instance-2", le.STOPPED, le.STOPPED_FAILED)
    monitor.handle_io_error("uuid-3", "instance-3", "/d.qcow2", "virtio-disk0", 1, "enospc")
    assert monitor.pending() == 3 and monitor.forward_once()
    w, s, io = monitor.sent
    assert (w["host"], w["instance_id"], w["kind"]) == ("compute1", "uuid-1", "watchdog")
    assert w["detail"] == {"event": "watchdog", "action": "none", "source": "event",
                           "domain": "instance-1"}
    assert (s["kind"], s["detail"]["state"], s["detail"]["detail"]) == \
        ("stopped_failed", "stopped", "failed")
    assert io["detail"]["device"] == "virtio-disk0" and io["detail"]["reason"] == "enospc"
    assert monitor.pending() == 0 and monitor.forwarded == 3


def test_a_coordinator_away_keeps_the_failure_queued_in_order(monitor):
    calls = []

    def sink(record):
        calls.append(record["instance_id"])
        if len(calls) == 1:
            raise exceptions.CoordinatorUnavailable(where="zk", reason="ConnectionLoss")
        return "e-1"

    monitor.sink = sink
    monitor.handle_watchdog("a", "a", 0)
    monitor.handle_watchdog("b", "b", 0)
    assert monitor.forward_once() is False and monitor.pending() == 2
    monitor.test_clock.advance(gm.FORWARD_RETRY)  # its back-off
    assert monitor.forward_once() is True
    assert calls == ["a", "a", "b"] and monitor.forward_errors == 1


def test_the_same_failure_again_within_coalesce_is_counted_not_sent(monitor):
    monitor.handle_watchdog("a", "a", 0)
    monitor.handle_watchdog("a", "a", 0)
    monitor.test_clock.advance(6)
    monitor.handle_watchdog("a", "a", 0)
    assert monitor.pending() == 2 and monitor.coalesced == 1 and monitor.seen["watchdog"] == 3


def test_a_domain_started_again_fails_anew_within_coalesce(monitor):
    monitor.handle_lifecycle("a", "a", le.STOPPED, le.STOPPED_FAILED)
    monitor.handle_lifecycle("a", "a", le.STARTED, 0)  # Nova's hard reboot: a new QEMU
    monitor.handle_lifecycle("a", "a", le.STOPPED, le.STOPPED_FAILED)
    monitor.handle_lifecycle("a", "a", le.STOPPED, le.STOPPED_FAILED)  # no new life: same one
    assert monitor.pending() == 2 and monitor.coalesced == 1


def test_a_full_queue_drops_the_oldest_and_counts_it(lv):
    monitor = make_monitor(lv, max_pending=2)
    for i in range(3):
        monitor.handle_watchdog(f"u{i}", "d", 0)
    assert monitor.pending() == 2 and monitor.dropped == 1
    monitor.forward_once()
    assert [r["instance_id"] for r in monitor.sent] == ["u1", "u2"]


def test_connect_registers_and_a_lost_connection_is_reported_then_reconnected(monitor, lv,
                                                                              caplog):
    lv.domains["u1"] = FakeDomain("u1", "d1")
    assert monitor.connect_once() and monitor.status()["state"] == "connected"
    conn = lv.conns[-1]
    assert set(conn.callbacks) == {le.EVENT_ID_LIFECYCLE, le.EVENT_ID_WATCHDOG,
                                   le.EVENT_ID_IO_ERROR_REASON}
    assert conn.keepalive == (2, 3)
    conn.close_cb(conn, 1, None)  # libvirtd stopped
    monitor.check_connection()
    assert monitor.status()["state"] == "lost" and monitor.losses == 1
    assert "libvirt connection to qemu:///system lost (end of file" in caplog.text
    assert conn.closed and conn.callbacks == {}
    lv.down = True
    assert not monitor.connect_once()
    assert monitor.status() == {"state": "lost", "since": monitor.since,
                                "error": "Failed to connect socket to 'qemu:///system': "
                                "Connection refused", "losses": 1}
    lv.down = False
    assert monitor.connect_once() and monitor.status()["state"] == "connected"
    assert len(lv.conns) == 2


def test_failures_missed_while_disconnected_are_found_by_the_reconnect_scan(monitor, lv):
    lv.domains["old"] = FakeDomain("old", "crashed-before", (le.STATE_SHUTOFF,
                                                             le.SHUTOFF_CRASHED))
    lv.domains["u1"] = FakeDomain("u1", "d1")
    lv.domains["u2"] = FakeDomain("u2", "d2")
    monitor.connect_once()
    monitor.forward_once()
    assert monitor.sent == []  # the first connection only records the states
    monitor.on_lost("end of file")
    lv.domains["u1"]._state = (le.STATE_SHUTOFF, le.SHUTOFF_CRASHED)  # QEMU died meanwhile
    lv.domains["u2"]._state = (le.STATE_PAUSED, le.PAUSED_IOERROR)
    monitor.connect_once()
    monitor.forward_once()
    got = {r["instance_id"]: r for r in monitor.sent}
    assert set(got) == {"u1", "u2"}
    assert got["u1"]["kind"] == "stopped_failed"
    assert got["u1"]["detail"]["source"] == "reconnect_scan"
    assert got["u2"]["kind"] == "paused_io_error"


def test_a_failure_seen_as_an_event_is_not_reported_again_by_the_scan(monitor, lv):
    lv.domains["u1"] = FakeDomain("u1", "d1")
    monitor.connect_once()
    monitor.handle_lifecycle("u1", "d1", le.STOPPED, le.STOPPED_FAILED)
    lv.domains["u1"]._state = (le.STATE_SHUTOFF, le.SHUTOFF_CRASHED)
    monitor.on_lost("keepalive timeout")
    monitor.test_clock.advance(60)
    monitor.connect_once()
    monitor.forward_once()
    assert [r["kind"] for r in monitor.sent] == ["stopped_failed"]


def test_callbacks_never_raise_into_libvirts_loop(monitor, lv):
    class Broken:
        def UUIDString(self):
            raise RuntimeError("boom")

    monitor.connect_once()
    on_watchdog = lv.conns[-1].callbacks[le.EVENT_ID_WATCHDOG]
    on_watchdog(None, Broken(), 0, None)  # logged, not raised
    assert monitor.pending() == 0
