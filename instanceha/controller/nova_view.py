"""What Nova says of each compute service, read in the background.

A slow Nova never stalls detection: the services are read on a thread of
their own (never queued behind the recoveries that wait on a busy API), at
most every ``interval`` seconds, and the tick reads the last answer. The
view keeps which hosts' records changed in what a recovery decision reads
(``take_moved``), Nova's own liveness per host for the detector's DEGRADED
phase (``nova_up``), and a revision that grows when a host's record changes
(so that the leader's status is rebuilt only then).

A read that fails is tried again under the one back-off (``interval``, then
twice as long each time, at most ``RETRY_MAX`` seconds), not at every tick,
and the log says so once: a warning at the first failure and whenever the
error changes, a line when Nova answers again.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import types
from collections.abc import Mapping

from instanceha import exceptions
from instanceha.backoff import Backoff
from instanceha.clock import SYSTEM, Clock
from instanceha.compute.model import ComputeService

LOG = logging.getLogger(__name__)

RETRY_MAX = 10.0
"""Seconds, at most, between two reads while Nova does not answer: how late
the view can be once Nova is back (a write of ours re-reads at once)."""


def decided_by(svc) -> tuple | None:
    """What of Nova's record of a service a recovery decision reads (not its
    ``updated_at``, which changes with every report of a live compute)."""
    if svc is None:
        return None
    return (svc.state, svc.status, svc.forced_down, svc.disabled_reason)


class NovaView:
    def __init__(self, nova, interval: float, clock: Clock = SYSTEM) -> None:
        self.nova = nova
        self.interval = interval
        self.clock = clock
        self.services: Mapping[str, ComputeService] = types.MappingProxyType({})
        """host -> ComputeService, replaced by each refresh (never mutated)."""
        self.read_at: float | None = None
        """When the last good read *started*; None: read again at once."""
        self.error: str | None = None
        self.revision = 0
        self._moved: set[str] = set()
        self._nova_up: Mapping[str, bool] = types.MappingProxyType({})
        self._lock = threading.Lock()
        self._thread = concurrent.futures.ThreadPoolExecutor(1, "nova-refresh")
        self._reading: concurrent.futures.Future | None = None
        self._retries = Backoff(interval, max(interval, RETRY_MAX)).start()
        self._due_at: float | None = None
        """When the next read is due (monotonic): ``interval`` after a good read
        started, the back-off's wait after a failed one; None: at once."""

    def refresh(self) -> None:
        """Read Nova's services now (the background thread calls this)."""
        started = self.clock.monotonic()
        try:
            services = {s.host: s for s in self.nova.services()}
        except exceptions.InstanceHAError as e:
            self._failed(started, e)
            return
        nova_up = types.MappingProxyType(
            {h: s.up for h, s in services.items() if not s.forced_down})
        old = self.services  # only this thread replaces it: compared outside the lock
        moved = {h for h in services.keys() | old.keys()
                 if decided_by(services.get(h)) != decided_by(old.get(h))}
        with self._lock:
            self.services = types.MappingProxyType(services)
            self._moved |= moved
            self._nova_up = nova_up
            if moved:
                self.revision += 1
            # when the read *started*: a read begun before a job ended may miss its write
            self.read_at = started
            self._due_at = started + self.interval
            failures = self._retries.failures
            self._retries.reset()
            self.error = None
        if failures:
            LOG.info("nova services read again, after %d failed reads", failures)

    def _failed(self, started: float, e: exceptions.InstanceHAError) -> None:
        error = str(e)
        with self._lock:
            wait = self._retries.next()
            self._due_at = started + wait
            changed, self.error = error != self.error, error
            failures = self._retries.failures
        if changed:
            LOG.warning("nova services not refreshed: %s (%s; next read in %.1f s, "
                        "then less often while this lasts)", e, e.action.value, wait)
        else:
            LOG.debug("nova services not refreshed, %d reads in a row: %s (next in %.1f s)",
                      failures, e, wait)

    def maybe_refresh(self) -> concurrent.futures.Future | None:
        """Start a background read if one is due and none runs; returns it."""
        busy = self._reading is not None and not self._reading.done()
        due = self._due_at is None or self.clock.monotonic() >= self._due_at
        if due and not busy:
            self._reading = self._thread.submit(self.refresh)
            return self._reading
        return None

    def invalidate(self) -> None:
        """A step wrote to Nova: read its new state at once."""
        with self._lock:
            self.read_at = None
            self._due_at = None  # even while backing off: Nova took a write, it answers

    def read_after(self, t: float | None) -> bool:
        """The last read started after ``t`` (None: nothing to wait for)."""
        return t is None or (self.read_at is not None and self.read_at > t)

    def take(self) -> tuple[Mapping[str, ComputeService], set[str]]:
        """The services and the hosts whose record moved since the last take."""
        with self._lock:
            moved, self._moved = self._moved, set()
            return self.services, moved

    def nova_up(self) -> Mapping[str, bool]:
        """Nova's liveness view of each host, for the detector's DEGRADED phase.
        A forced-down service reads "down" whatever runs: unknown, so left out.
        Read-only, and the same object until a refresh reads a new one."""
        with self._lock:
            return self._nova_up

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)
