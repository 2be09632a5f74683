"""Nova's versioned notifications, read by the leading controller: each one
about an instance being evacuated wakes the evacuation waiting on it, which
then reads Nova at once instead of at its next scheduled read.

An optimisation, never a dependency: the evacuations read Nova on their own
schedule whether or not a notification comes. Only the leader listens (one
queue for all controllers, see ``[nova_notifications]``); starting and
stopping happen in a background thread, so a broker that is down never stalls
a tick, and a failed start is tried again ``retry`` seconds later.

That thread is a daemon of its own, not a ``ThreadPoolExecutor``'s: with the
broker down, oslo.messaging's ``start()`` keeps trying to connect for ever,
and the interpreter joins an executor's threads at exit, so a controller told
to stop never exited. ``close()`` waits for it at most ``close_timeout``
seconds.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable, Mapping
from typing import Protocol

from instanceha.clock import SYSTEM, Clock

LOG = logging.getLogger(__name__)

RETRY = 10.0  # seconds between two tries to start listening
CLOSE_TIMEOUT = 5.0  # seconds close() waits for a start or stop in flight
# the notifications that end an action (instance.rebuild.end, ...error): each
# one read of Nova; the many progress notifications of an evacuation wake
# nothing (each would cost a read and restart the short waits)
ENDS = (".end", ".error")


def instance_uuid(payload: object) -> str | None:
    """The instance a versioned notification is about (its payload's
    ``nova_object.data.uuid``), or None."""
    if not isinstance(payload, Mapping):
        return None
    data = payload.get("nova_object.data")
    uuid = data.get("uuid") if isinstance(data, Mapping) else None
    return uuid if isinstance(uuid, str) else None


class Listener(Protocol):
    """A notification listener (``notify.listener``), made stopped."""

    def start(self) -> object: ...

    def stop(self) -> object: ...


class _Worker:
    """One daemon thread running what is submitted, in order (started with the
    first submission)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[[], None]) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        self._queue.put((future, fn))
        return future

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as e:  # handed to whoever waits on the future
                future.set_exception(e)

    def shutdown(self, timeout: float) -> bool:
        """Stop once what was submitted has run; True when it did within
        ``timeout`` seconds."""
        if self._thread is None:
            return True
        self._queue.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()


class NovaEventFeed:
    def __init__(self, make_listener: Callable[[Callable[[str, object], None]], Listener],
                 watch, clock: Clock = SYSTEM,
                 retry: float = RETRY, close_timeout: float = CLOSE_TIMEOUT) -> None:
        """``make_listener(on_event)``: a stopped listener that calls
        ``on_event(event_type, payload)`` for each notification; ``watch``: the
        evacuations' ``CompletionWatch``."""
        self._make = make_listener
        self.watch = watch
        self.clock = clock
        self.retry = retry
        self.close_timeout = close_timeout
        self._worker = _Worker("nova-events")
        self._lock = threading.Lock()
        self._want = False
        self._listener: Listener | None = None
        self._pending: concurrent.futures.Future | None = None
        self._failed_at: float | None = None
        self.error: str | None = None
        self.received = 0
        self.woke = 0
        self.on_end: Callable[[str], None] | None = None
        """Told of every action that ended (the capacity model reads sooner)."""

    @property
    def listening(self) -> bool:
        return self._listener is not None

    def on_event(self, event_type: str, payload: object) -> None:
        self.received += 1
        if not event_type.endswith(ENDS):
            return  # progress (instance.update, ...start): nothing to read yet
        if self.on_end is not None:
            self.on_end(event_type)
        uuid = instance_uuid(payload)
        if uuid is not None and self.watch.poke(uuid):
            self.woke += 1
            LOG.debug("nova %s for %s: its evacuation reads Nova now", event_type, uuid)

    def ensure(self) -> None:
        """Called every tick while leading: listen (started in the background)."""
        with self._lock:
            self._want = True
            if self._listener is not None or self._busy():
                return
            failed_at = self._failed_at
            if failed_at is not None and self.clock.monotonic() - failed_at < self.retry:
                return
            self._pending = self._worker.submit(self._start)

    def stop(self) -> None:
        """Called every tick while not leading: stop listening (in the background)."""
        with self._lock:
            self._want = False
            if self._listener is None or self._busy():
                return
            self._pending = self._worker.submit(self._stop)

    def settle(self, timeout: float | None = None) -> bool:
        """Wait for the start or stop in flight, if any (at most ``timeout``
        seconds); True when none is left: ``listening`` and ``error`` then
        tell the outcome of the last ``ensure`` or ``stop``."""
        with self._lock:
            pending = self._pending
        if pending is None:
            return True
        try:
            pending.result(timeout)
        except concurrent.futures.TimeoutError:
            return False
        return True

    def _busy(self) -> bool:
        return self._pending is not None and not self._pending.done()

    def _start(self) -> None:
        try:
            listener = self._make(self.on_event)
            listener.start()
        except Exception as e:  # the bus is away: the evacuations read Nova anyway
            with self._lock:
                first = self.error is None
                self.error, self._failed_at = f"{type(e).__name__}: {e}", self.clock.monotonic()
            (LOG.warning if first else LOG.debug)(
                "not listening to Nova's notifications (%s); evacuations are checked by "
                "reading Nova; trying again in %.0f s", type(e).__name__, self.retry)
            return
        with self._lock:
            self._listener, self.error, self._failed_at = listener, None, None
            keep = self._want
        LOG.info("listening to Nova's versioned notifications")
        if not keep:  # leadership lost while starting
            self._stop()

    def _stop(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is None:
            return
        try:
            listener.stop()
        except Exception as e:  # stopping: report, nothing else to do
            LOG.warning("stopping the Nova notification listener failed: %s", type(e).__name__)
        LOG.info("stopped listening to Nova's notifications (not leading)")

    def close(self) -> None:
        """Stop listening and end the background thread; a start still trying
        to reach the broker after ``close_timeout`` seconds is left behind (a
        daemon thread: it does not keep the process alive)."""
        with self._lock:
            self._want = False
        self._worker.submit(self._stop)
        if not self._worker.shutdown(self.close_timeout):
            LOG.warning("the Nova notification listener did not stop within %.0f s (is its "
                        "broker reachable?); going on without waiting for it",
                        self.close_timeout)
