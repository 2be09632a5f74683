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
keepalive_count`` seconds); an outbox (``notify.outbox.Outbox``, its own
sender thread) writes the failures to the coordinator in order, retrying with
back-off while it is away (bounded: beyond ``max_pending`` the oldest is
dropped and counted).

Which events are failures is data (``libvirt_events``); which failures are
new, not repeats, is ``guest_failures.GuestFailures``.

A lost connection is reported, not ignored: logged as an error, published in
the agent's capabilities (``instanceha status``) and in the agent's metrics.
After a reconnect the monitor scans every domain's state: a failure that
happened while it was disconnected (a QEMU killed while libvirtd was down) is
reported then (``source: reconnect_scan``). The first connection of an agent
only records the domains' states: what failed before the agent started is not
reported as new (the host path covers an absent agent).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections.abc import Callable, Mapping

from instanceha import exceptions
from instanceha.agent import libvirt_events as lv_events
from instanceha.agent.guest_failures import GuestFailures, Record
from instanceha.backoff import Backoff
from instanceha.clock import SYSTEM, Clock
from instanceha.engine import guest
from instanceha.notify.outbox import DeliveryPolicy, Outbox

LOG = logging.getLogger(__name__)

FORWARD_RETRY = 0.2
"""Seconds before the first retry of a failure the coordinator refused."""
RECONNECT_FIRST = 0.5
"""Seconds before the first new try of a libvirt connection that failed."""
ALIVE_CHECK = 5.0
"""Seconds between two looks at a connection libvirt did not say was closed."""


@dataclasses.dataclass
class Link:
    """The libvirt connection as ``status()`` shows it."""

    since: float
    state: str = "connecting"
    error: str | None = None
    losses: int = 0
    connects: int = 0


def _describe(record: dict) -> str:
    return f"guest failure {record.get('kind')} of {record.get('instance_id')}"


class GuestMonitor:
    def __init__(self, uri: str, host: str, sink: Callable[[Mapping[str, object]], object],
                 *, libvirt_module=None, clock: Clock = SYSTEM,
                 reconnect_max_delay: float = 5.0, keepalive_interval: int = 2,
                 keepalive_count: int = 3, coalesce: float = 10.0,
                 max_pending: int = 10000) -> None:
        """``sink``: the coordinator's ``guest_event_put``; ``libvirt_module``:
        the ``libvirt`` binding (a fake in unit tests)."""
        self.uri = uri
        self.sink = sink
        self._libvirt = libvirt_module
        self.clock = clock
        self.keepalive = (keepalive_interval, keepalive_count)
        self._reconnect = Backoff(RECONNECT_FIRST, reconnect_max_delay)
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._close_reason: str | None = None
        self._conn = None
        self._callbacks: list[int] = []
        self._thread: threading.Thread | None = None
        self.link = Link(since=clock.wall())  # changed under _lock
        self.failures = GuestFailures(host, clock, coalesce)
        self.outbox = Outbox(self._write, DeliveryPolicy(
            deadline=math.inf, retry_interval=FORWARD_RETRY,
            retry_max_interval=max(FORWARD_RETRY, reconnect_max_delay),
            max_pending=max_pending, drop_oldest=True),
            clock=clock, name="guest failure queue", describe=_describe,
            what="guest failure")

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
            return {"state": self.link.state, "since": round(self.link.since, 3),
                    "error": self.link.error, "losses": self.link.losses}

    @property
    def since(self) -> float:
        return self.link.since

    @property
    def losses(self) -> int:
        return self.link.losses

    @property
    def seen(self):
        """Guest failures seen, by kind."""
        return self.failures.seen

    @property
    def coalesced(self) -> int:
        return self.failures.coalesced

    @property
    def forwarded(self) -> int:
        return self.outbox.stats.delivered

    @property
    def dropped(self) -> int:
        return self.outbox.stats.lost_overflow

    @property
    def forward_errors(self) -> int:
        return self.outbox.stats.failed_attempts

    def pending(self) -> int:
        return self.outbox.pending()

    def _set_state(self, state: str, error: str | None = None) -> None:
        with self._lock:
            if state != self.link.state:
                self.link.since = self.clock.wall()
            self.link.state, self.link.error = state, error

    # -- lifecycle of the threads ---------------------------------------------
    def start(self) -> GuestMonitor:
        _ensure_event_loop(self.libvirt)
        self.outbox.start()
        self._thread = threading.Thread(target=self._supervise, name="guest-monitor",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching; the failures still queued get one more try (the
        coordinator is still connected when the agent stops its monitor)."""
        self.stopping.set()
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.outbox.close(timeout=0)
        self._disconnect()

    def _supervise(self) -> None:
        retries = self._reconnect.start()
        while not self.stopping.is_set():
            if self._conn is None:
                if self.connect_once():
                    retries.reset()
                else:
                    self.clock.wait(retries.next(), self.stopping)
                    continue
            self.clock.wait(ALIVE_CHECK, self._closed)
            if self.stopping.is_set():
                return
            self.check_connection()

    def check_connection(self) -> None:
        """Act on a connection libvirt closed (its close callback) or that is no
        longer alive (keepalive): reported, then reconnected by the supervisor."""
        if self._conn is not None and (self._closed.is_set() or not self._alive()):
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
            if self.link.state != "lost" or self.link.error != message:
                LOG.error("libvirt connection to %s failed: %s; guest failures are not seen "
                          "until it succeeds (retrying)", self.uri, message)
            self._set_state("lost" if self.link.connects else "connecting", message)
            return False
        try:
            conn.setKeepAlive(*self.keepalive)
            conn.registerCloseCallback(self._on_close, None)
            self._callbacks = [
                conn.domainEventRegisterAny(None, lv_events.EVENT_ID_LIFECYCLE,
                                            self._on_lifecycle, None),
                conn.domainEventRegisterAny(None, lv_events.EVENT_ID_WATCHDOG,
                                            self._on_watchdog, None),
                conn.domainEventRegisterAny(None, lv_events.EVENT_ID_IO_ERROR_REASON,
                                            self._on_io_error, None),
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
        with self._lock:
            self.link.connects += 1
            reconnect = self.link.connects > 1
        for record in self.failures.scan(domains):
            self._queue(record)
        self._set_state("connected")
        (LOG.warning if reconnect else LOG.info)(
            "libvirt %s %s: watching %d domain(s) for guest failures", self.uri,
            "reconnected" if reconnect else "connected", len(domains))
        return True

    def _on_close(self, conn, reason, opaque) -> None:  # libvirt's event thread
        self._close_reason = lv_events.CLOSE_REASONS.get(reason, f"reason {reason}")
        self._closed.set()

    def on_lost(self, reason: str) -> None:
        """The connection died (libvirtd stopped or restarted, keepalive timeout)."""
        with self._lock:
            self.link.losses += 1
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

    # -- what the hypervisor says (libvirt's event thread) ------------------------
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
        self._queue(self.failures.lifecycle(uuid, name, event, detail))

    def handle_watchdog(self, uuid: str, name: str, action: int) -> None:
        self._queue(self.failures.watchdog(uuid, name, action))

    def handle_io_error(self, uuid: str, name: str, path: str, device: str, action: int,
                        reason: str) -> None:
        self._queue(self.failures.io_error(uuid, name, path, device, action, reason))

    def _queue(self, record: Record | None) -> None:
        if record is None:
            return  # not a failure, or a repeat of one on its way
        event = guest.GuestEvent.from_record(record)
        LOG.warning("guest failure: domain %s (%s) %s", event.detail.get("domain"),
                    event.instance_id, event.describe())
        self.outbox.put(dict(record))

    # -- to the coordinator ---------------------------------------------------------
    def _write(self, record: dict, sent_to: set) -> None:
        """The outbox's delivery: one failure into the coordinator's queue."""
        event_id = self.sink(record)
        LOG.info("guest failure of %s queued for the leader as %s", record["instance_id"],
                 event_id)

    def forward_once(self) -> bool:
        """Write the queued failures that are due, oldest first; False when some
        are left (the coordinator refused one: it is tried again after a back-off)."""
        return self.outbox.pump() is None


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
