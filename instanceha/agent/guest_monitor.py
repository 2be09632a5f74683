"""The instance monitor: libvirt domain events become durable guest failures.

The agent of each compute host watches its hypervisor through libvirt's event
API (libvirt-python): lifecycle events (the guest crashed, QEMU went away,
the guest shut itself down, an I/O error paused it), watchdog events and I/O
error events. Each failure becomes one record in the coordinator's guest
failure queue (``Coordinator.guest_event_put``); the leading controller reads
it there, so a controller fail-over loses none.

The libvirt Nova driver names each domain's UUID after its instance, so the
domain UUID *is* the Nova instance id; the controller asks Nova about it.

Threads: libvirt's default event loop runs in its own thread (callbacks only
record facts and queue them, never block); a supervisor thread connects,
registers the callbacks and reconnects after libvirtd restarts (libvirt's
keepalive notices a dead daemon within ``keepalive_interval *
keepalive_count`` seconds); a forwarder thread writes queued failures to the
coordinator, retrying while it is away (bounded queue, oldest dropped and
counted beyond ``max_pending``).

A lost connection is reported, not ignored: logged as an error, published in
the agent's capabilities (``instanceha status``) and in the agent's metrics.
After a reconnect the monitor scans every domain's state: a failure that
happened while it was disconnected (a QEMU killed while libvirtd was down) is
reported then (``source: reconnect_scan``). The first connection of an agent
only records the domains' states: what failed before the agent started is not
reported as new (the host path covers an absent agent).
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Mapping

from instanceha import exceptions
from instanceha.backoff import Backoff
from instanceha.clock import SYSTEM, Clock
from instanceha.engine import guest as kinds

LOG = logging.getLogger(__name__)

# libvirt's stable enum values (libvirt.h), so the mapping is testable without libvirt
EVENT_ID_LIFECYCLE, EVENT_ID_WATCHDOG, EVENT_ID_IO_ERROR_REASON = 0, 3, 6
STARTED, SUSPENDED, RESUMED, STOPPED, SHUTDOWN, CRASHED = 2, 3, 4, 5, 6, 8
STOPPED_CRASHED, STOPPED_FAILED = 2, 5
SUSPENDED_IOERROR, SUSPENDED_WATCHDOG = 2, 3
SHUTDOWN_GUEST = 1
STATE_PAUSED, STATE_SHUTOFF, STATE_CRASHED = 3, 5, 6
PAUSED_IOERROR, PAUSED_WATCHDOG, PAUSED_CRASHED = 5, 6, 10
SHUTOFF_CRASHED = 3

LIFECYCLE_NAMES = {0: "defined", 1: "undefined", 2: "started", 3: "suspended", 4: "resumed",
                   5: "stopped", 6: "shutdown", 7: "pmsuspended", 8: "crashed"}
LIFECYCLE_DETAILS = {
    STOPPED: {0: "shutdown", 1: "destroyed", 2: "crashed", 3: "migrated", 4: "saved",
              5: "failed", 6: "from_snapshot"},
    SUSPENDED: {0: "paused", 1: "migrated", 2: "ioerror", 3: "watchdog", 4: "restored",
                5: "from_snapshot", 6: "api_error", 7: "postcopy", 8: "postcopy_failed"},
    SHUTDOWN: {0: "finished", 1: "guest", 2: "host"},
    CRASHED: {0: "panicked", 1: "crashloaded"},
}
WATCHDOG_ACTIONS = {0: "none", 1: "pause", 2: "reset", 3: "poweroff", 4: "shutdown",
                    5: "debug", 6: "inject-nmi"}
IO_ERROR_ACTIONS = {0: "none", 1: "pause", 2: "report"}
CLOSE_REASONS = {0: "error", 1: "end of file (libvirtd stopped)", 2: "keepalive timeout",
                 3: "closed by the client"}


def lifecycle_kind(event: int, detail: int) -> str | None:
    """The failure a lifecycle event means, or None (a normal transition)."""
    if event == STOPPED and detail == STOPPED_FAILED:
        return kinds.STOPPED_FAILED
    if event == STOPPED and detail == STOPPED_CRASHED or event == CRASHED:
        return kinds.CRASHED
    if event == SHUTDOWN and detail == SHUTDOWN_GUEST:
        return kinds.SHUTDOWN_BY_GUEST
    if event == SUSPENDED and detail == SUSPENDED_IOERROR:
        return kinds.PAUSED_IO_ERROR
    return None  # SUSPENDED_WATCHDOG comes with its watchdog event


def state_kind(state: int, reason: int) -> str | None:
    """The failure a domain's current state shows (reconnect scan), or None."""
    if state == STATE_SHUTOFF and reason == SHUTOFF_CRASHED:
        return kinds.STOPPED_FAILED  # QEMU went away (libvirt records it as "crashed")
    if state == STATE_CRASHED or state == STATE_PAUSED and reason == PAUSED_CRASHED:
        return kinds.CRASHED
    if state == STATE_PAUSED and reason == PAUSED_IOERROR:
        return kinds.PAUSED_IO_ERROR
    if state == STATE_PAUSED and reason == PAUSED_WATCHDOG:
        return kinds.WATCHDOG
    return None


_PERSISTENT = {kinds.STOPPED_FAILED, kinds.CRASHED, kinds.PAUSED_IO_ERROR}
"""Failures that leave the domain in a state the reconnect scan sees again."""


class GuestMonitor:
    def __init__(self, uri: str, host: str, sink: Callable[[Mapping[str, object]], object],
                 *, libvirt_module=None, clock: Clock = SYSTEM,
                 reconnect_max_delay: float = 5.0, keepalive_interval: int = 2,
                 keepalive_count: int = 3, coalesce: float = 10.0,
                 max_pending: int = 10000) -> None:
        """``sink``: the coordinator's ``guest_event_put``; ``libvirt_module``:
        the ``libvirt`` binding (a fake in unit tests)."""
        self.uri = uri
        self.host = host
        self.sink = sink
        self._libvirt = libvirt_module
        self.clock = clock
        self.reconnect_max_delay = reconnect_max_delay
        self.keepalive = (keepalive_interval, keepalive_count)
        self.coalesce = coalesce
        self.max_pending = max_pending
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._queue: collections.deque = collections.deque()
        self._wake_forwarder = threading.Event()
        self._closed = threading.Event()
        self._conn = None
        self._callbacks: list[int] = []
        self._states: dict[str, str | None] = {}
        self._scanned_once = False
        self._last_sent: dict[tuple[str, str], float] = {}
        self._threads: list[threading.Thread] = []
        self.state = "connecting"
        self.since = clock.wall()
        self.error: str | None = None
        self.losses = 0
        self.connects = 0
        self.seen: collections.Counter = collections.Counter()
        self.forwarded = 0
        self.dropped = 0
        self.coalesced = 0
        self.forward_errors = 0

    # -- the binding ----------------------------------------------------------
    @property
    def libvirt(self):
        if self._libvirt is None:
            try:
                import libvirt
            except ImportError as e:
                raise exceptions.ConfigError(
                    group="guest", option="monitor", file="(the agent's host)",
                    reason=f"the libvirt python binding is missing ({e}): install "
                    "libvirt-python, or set [guest] monitor = false") from None
            self._libvirt = libvirt
        return self._libvirt

    # -- status, for capabilities and metrics -----------------------------------
    def status(self) -> dict[str, object]:
        with self._lock:
            return {"state": self.state, "since": round(self.since, 3), "error": self.error,
                    "losses": self.losses}

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def _set_state(self, state: str, error: str | None = None) -> None:
        with self._lock:
            if state != self.state:
                self.since = self.clock.wall()
            self.state, self.error = state, error

    # -- lifecycle of the threads ---------------------------------------------
    def start(self) -> GuestMonitor:
        _ensure_event_loop(self.libvirt)
        for target, name in ((self._supervise, "guest-monitor"),
                             (self._forward, "guest-forwarder")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        self._closed.set()
        self._wake_forwarder.set()
        for t in self._threads:
            t.join(timeout)
        self._disconnect()

    def _supervise(self) -> None:
        retries = Backoff(0.5, self.reconnect_max_delay).start()
        while not self.stopping.is_set():
            if self._conn is None:
                if self.connect_once():
                    retries.reset()
                else:
                    self.clock.wait(retries.next(), self.stopping)
                    continue
            self.clock.wait(5.0, self._closed)
            if self.stopping.is_set():
                return
            if self._closed.is_set() or not self._alive():
                self.on_lost(self._close_reason or "connection not alive")

    def _alive(self) -> bool:
        try:
            return bool(self._conn is not None and self._conn.isAlive())
        except Exception:
            return False

    # -- connection -----------------------------------------------------------
    def connect_once(self) -> bool:
        """Open the connection, register the callbacks, scan the domains."""
        lv = self.libvirt
        self._closed.clear()
        self._close_reason = None
        try:
            conn = lv.open(self.uri)
        except lv.libvirtError as e:
            message = _one_line(e)
            if self.state != "lost" or self.error != message:
                LOG.error("libvirt connection to %s failed: %s; guest failures are not seen "
                          "until it succeeds (retrying)", self.uri, message)
            self._set_state("lost" if self.connects else "connecting", message)
            return False
        try:
            conn.setKeepAlive(*self.keepalive)
            conn.registerCloseCallback(self._on_close, None)
            self._callbacks = [
                conn.domainEventRegisterAny(None, EVENT_ID_LIFECYCLE, self._on_lifecycle, None),
                conn.domainEventRegisterAny(None, EVENT_ID_WATCHDOG, self._on_watchdog, None),
                conn.domainEventRegisterAny(None, EVENT_ID_IO_ERROR_REASON, self._on_io_error,
                                            None),
            ]
            self._conn = conn
            domains = [(d.UUIDString(), d.name(), *d.state()) for d in conn.listAllDomains(0)]
        except lv.libvirtError as e:
            LOG.error("libvirt connection to %s: registering for domain events failed: %s",
                      self.uri, _one_line(e))
            self._conn = conn
            self._disconnect()
            self._set_state("lost", _one_line(e))
            return False
        self.connects += 1
        reconnect = self._scanned_once
        self.scan(domains, report=reconnect)
        self._set_state("connected")
        (LOG.warning if reconnect else LOG.info)(
            "libvirt %s %s: watching %d domain(s) for guest failures", self.uri,
            "reconnected" if reconnect else "connected", len(domains))
        return True

    def _on_close(self, conn, reason, opaque) -> None:  # libvirt's event thread
        self._close_reason = CLOSE_REASONS.get(reason, f"reason {reason}")
        self._closed.set()

    def on_lost(self, reason: str) -> None:
        """The connection died (libvirtd stopped or restarted, keepalive timeout)."""
        with self._lock:
            self.losses += 1
        LOG.error("libvirt connection to %s lost (%s): guest failures are not seen until it "
                  "is back; reconnecting", self.uri, reason)
        self._set_state("lost", reason)
        self._disconnect()

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        for cb in self._callbacks:
            try:
                conn.domainEventDeregisterAny(cb)
            except Exception:  # a dead connection refuses: nothing to undo there
                pass
        self._callbacks = []
        for undo in (conn.unregisterCloseCallback, conn.close):
            try:
                undo()
            except Exception:
                pass

    # -- what the hypervisor says -----------------------------------------------
    def scan(self, domains, report: bool) -> None:
        """(uuid, name, state, reason) of every domain: report the failures not
        seen yet (after a reconnect), remember each domain's state."""
        for uuid, name, state, reason in domains:
            kind = state_kind(state, reason)
            before = self._states.get(uuid)
            self._states[uuid] = kind
            if report and kind is not None and kind != before:
                detail = {"event": "state", "state": LIFECYCLE_NAMES.get(state, str(state)),
                          "reason": str(reason), "source": "reconnect_scan"}
                if kind == kinds.WATCHDOG:
                    detail["action"] = "pause"
                self._report(uuid, name, kind, detail)
        self._scanned_once = True

    def _on_lifecycle(self, conn, dom, event, detail, opaque) -> None:
        try:
            self.handle_lifecycle(dom.UUIDString(), dom.name(), event, detail)
        except Exception:  # never raise into libvirt's event loop
            LOG.exception("lifecycle event not handled")

    def _on_watchdog(self, conn, dom, action, opaque) -> None:
        try:
            self.handle_watchdog(dom.UUIDString(), dom.name(), action)
        except Exception:
            LOG.exception("watchdog event not handled")

    def _on_io_error(self, conn, dom, path, device, action, reason, opaque) -> None:
        try:
            self.handle_io_error(dom.UUIDString(), dom.name(), path, device, action, reason)
        except Exception:
            LOG.exception("I/O error event not handled")

    def handle_lifecycle(self, uuid: str, name: str, event: int, detail: int) -> None:
        if event in (STARTED, RESUMED):
            self._states[uuid] = None
            if event == STARTED:  # a new life of the domain: its failures are new ones
                with self._lock:
                    for key in [k for k in self._last_sent if k[0] == uuid]:
                        del self._last_sent[key]
            return
        kind = lifecycle_kind(event, detail)
        if kind is None:
            return
        if kind in _PERSISTENT:
            self._states[uuid] = kind
        self._report(uuid, name, kind, {
            "event": "lifecycle", "state": LIFECYCLE_NAMES.get(event, str(event)),
            "detail": LIFECYCLE_DETAILS.get(event, {}).get(detail, str(detail)),
            "source": "event"})

    def handle_watchdog(self, uuid: str, name: str, action: int) -> None:
        self._report(uuid, name, kinds.WATCHDOG, {
            "event": "watchdog", "action": WATCHDOG_ACTIONS.get(action, str(action)),
            "source": "event"})

    def handle_io_error(self, uuid: str, name: str, path: str, device: str, action: int,
                        reason: str) -> None:
        self._report(uuid, name, kinds.IO_ERROR, {
            "event": "io_error", "action": IO_ERROR_ACTIONS.get(action, str(action)),
            "path": path or None, "device": device or None, "reason": reason or None,
            "source": "event"})

    def _report(self, uuid: str, name: str, kind: str, detail: dict) -> None:
        now = self.clock.monotonic()
        key = (uuid, kind)
        with self._lock:
            self.seen[kind] += 1
            last = self._last_sent.get(key)
            if last is not None and now - last < self.coalesce:
                self.coalesced += 1
                return  # the same failure again (an I/O error storm): already on its way
            self._last_sent[key] = now
            record = {"host": self.host, "instance_id": uuid, "kind": kind,
                      "at": round(self.clock.wall(), 6), "detail": dict(detail, domain=name)}
            if len(self._queue) >= self.max_pending:
                self._queue.popleft()
                self.dropped += 1
                LOG.error("guest failure queue full (%d, the coordinator is away): the "
                          "oldest was dropped", self.max_pending)
            self._queue.append(record)
        LOG.warning("guest failure: domain %s (%s) %s", name, uuid,
                    kinds.GuestEvent.from_record(record).describe())
        self._wake_forwarder.set()

    # -- to the coordinator ---------------------------------------------------------
    def forward_once(self) -> bool:
        """Write the queued failures, oldest first; False when the coordinator
        refused (the failure stays queued)."""
        while True:
            with self._lock:
                if not self._queue:
                    return True
                record = self._queue[0]
            try:
                event_id = self.sink(record)
            except exceptions.CoordinationError as e:
                self.forward_errors += 1
                LOG.warning("guest failure of %s not written yet: %s; %s", record["instance_id"],
                            e, e.action.value)
                return False
            with self._lock:
                if self._queue and self._queue[0] is record:
                    self._queue.popleft()
                self.forwarded += 1
            LOG.info("guest failure of %s queued for the leader as %s", record["instance_id"],
                     event_id)

    def _forward(self) -> None:
        retries = Backoff(0.2, self.reconnect_max_delay).start()
        delay: float | None = None  # None: nothing to retry, wait for a failure
        while not self.stopping.is_set():
            if delay is None:
                self._wake_forwarder.wait()
            else:
                self.clock.wait(delay, self._wake_forwarder)
            self._wake_forwarder.clear()
            if self.stopping.is_set():
                return
            if self.forward_once():
                retries.reset()
                delay = None
            else:
                delay = retries.next()


_LOOP_LOCK = threading.Lock()
_LOOP_STARTED: set[int] = set()


def _ensure_event_loop(lv) -> None:
    """libvirt's default event loop, once per process (before the first open)."""
    with _LOOP_LOCK:
        if id(lv) in _LOOP_STARTED:
            return
        lv.virEventRegisterDefaultImpl()

        def run():
            while True:
                lv.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _LOOP_STARTED.add(id(lv))


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())[:300]
