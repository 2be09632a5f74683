"""Evacuate the servers of a fenced host, and verify that each one arrived.

"Nova accepted the request" is not "evacuated". A server counts as evacuated
only when its evacuation migration record is ``done`` (or ``completed``), the
server is on another host, no task is running on it, and it is in the power
state it had before the failure: an ACTIVE server is ACTIVE again, a SHUTOFF
server is SHUTOFF again (evacuated at microversion 2.94 it comes back
running, so it is stopped afterwards).

Before asking, each server is made evacuable: ERROR, a stuck task state
(``rebooting``, ``powering-on``... left by the dead host) and states Nova
refuses to evacuate (paused, suspended) are reset to ``active``. Locked
servers need nothing: the admin account bypasses the lock, which stays.

Each server is tried ``attempts`` times with a ``timeout`` each; up to
``concurrency`` servers move at once (sized so that a host's servers do not
queue behind each other: Nova does the work, the controller only waits).
Within an attempt, a Nova call that fails in a way that may pass (5xx, 409,
Nova unreachable or timing out) is retried with exponential back-off (from
``poll_interval``, doubling up to ``RETRY_BACKOFF_MAX``) until the attempt's
deadline: a Nova API blip never uses up the attempts. Before an evacuate
request is sent again, the migration records say whether the failed one was
accepted after all (its answer lost), so it is never sent twice. A server
that cannot be moved is reported (``on_result``), never raised: the others
continue. An evacuation found in progress (a controller restarted mid-way) is
awaited, not repeated.

Waiting costs Nova little and loses no time. The first attempt starts from
the state the caller read (the recovery reads the host's servers in one list
while the fence runs) and sends its evacuate at once. Completion is learned
from the failed host's evacuation records, read in **one bulk request for
the whole host** (``changes-since`` the failure) and shared by every server
waiting on it; a server itself is read only once its record is done or
failed. The wait between two reads starts at ``poll_initial`` and grows by
half up to ``poll_interval``; Nova's own word (its versioned notifications
about the instance, fed to a ``CompletionWatch``) cuts the wait short and
starts the fast reads again. Without notifications, the reads alone. The
waiting machinery is ``compute.waiting``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import logging
from collections.abc import Callable, Iterable, Mapping

from instanceha.backoff import Backoff
from instanceha.clock import SYSTEM, Clock
from instanceha.compute import calls
from instanceha.compute import exceptions as exc
from instanceha.compute.model import (  # the records of an evacuation live with the others
    EvacuationResult,
    EvacuationSettings,
    Migration,
    Outcome,
    Server,
)
from instanceha.compute.waiting import CompletionWatch, HostRecords, Pause, Waker
from instanceha.engine import evacuation as verdict
from instanceha.exceptions import InstanceHAError

LOG = logging.getLogger(__name__)

EVACUABLE_VM_STATES = ("active", "stopped")  # anything else is reset to active first
NO_VALID_HOST = "No valid host"
RETRY_BACKOFF_MAX = 30.0  # seconds between two tries of a failing Nova call, at most
SERVER_BACKSTOP = 60.0  # seconds: a server whose record does not move is read anyway
# (rare: a server gone ERROR without its record saying so; Nova's rebuild.error
# notification wakes the wait sooner)
RECORDS_MARGIN = 3600.0  # seconds before the evacuation starts that its records are read from
GROWTH = 1.5  # each wait between two reads of a running evacuation, this much longer


class _AttemptFailed(Exception):
    def __init__(self, reason: str, no_capacity: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.no_capacity = no_capacity


class Evacuator:
    def __init__(self, nova, settings: EvacuationSettings | None = None,
                 clock: Clock = SYSTEM,
                 on_result: Callable[[EvacuationResult], None] | None = None,
                 watch: CompletionWatch | None = None) -> None:
        """A wait between two reads is cut short by Nova's notifications
        (``watch``); a back-off after a failed call is not."""
        self.nova = nova
        self.settings = settings = settings or EvacuationSettings()
        self.clock = clock
        self.on_result = on_result
        self.watch = watch
        self._retry = Backoff(settings.poll_interval, RETRY_BACKOFF_MAX)
        """Between two tries of a failing Nova call."""
        self._polls = Backoff(settings.poll_initial, settings.poll_interval, GROWTH)
        """Between two reads of a running evacuation (reset by Nova's word)."""

    gate: Callable[[Server, str | None], contextlib.AbstractContextManager] | None = None
    """Wraps each server's evacuation (the capacity throttle: a slot per evacuation,
    priority first); set by the recovery after construction, like ``on_result``."""

    def evacuate_host(self, host: str, servers: Iterable[Server],
                      target_host: str | None = None,
                      targets: Mapping[str, str | None] | None = None
                      ) -> list[EvacuationResult]:
        """Evacuate ``servers`` of the fenced ``host`` (as the caller read them),
        started in the order given; one result per server, in order.
        ``targets``: server id -> its own target host (overrides ``target_host``)."""
        servers = list(servers)
        if not servers:
            return []
        waker = Waker()
        records = self._records(host)
        ids = [s.id for s in servers]
        if self.watch is not None:
            self.watch.subscribe(ids, waker)
        try:
            workers = min(self.settings.concurrency, len(servers))
            with concurrent.futures.ThreadPoolExecutor(workers, "evacuate") as pool:
                futures = [calls.submit(pool, self._gated, s, host,
                                        (targets or {}).get(s.id, target_host), records, waker)
                           for s in servers]
                return [f.result() for f in futures]
        finally:
            if self.watch is not None:
                self.watch.unsubscribe(ids)

    def _gated(self, server: Server, host: str, target: str | None, records: HostRecords,
               waker: Waker) -> EvacuationResult:
        if self.gate is None:
            return self.evacuate_server(server, host, target, records, waker)
        with self.gate(server, target):
            return self.evacuate_server(server, host, target, records, waker)

    def _records(self, host: str) -> HostRecords:
        since = self.clock.utcnow() - datetime.timedelta(seconds=RECORDS_MARGIN)
        return HostRecords(self.nova, host, since, self.clock)

    # -- one server -------------------------------------------------------------

    def evacuate_server(self, server: Server, host: str, target_host: str | None = None,
                        records: HostRecords | None = None,
                        waker: Waker | None = None) -> EvacuationResult:
        """``server`` as last read: the first attempt acts on it without reading it
        again; every later attempt reads it afresh."""
        t0 = self.clock.monotonic()
        records = records or self._records(host)
        pause = Pause(waker or Waker())
        # the pre-failure power state to restore; ERROR and the rest come back ACTIVE
        want = "SHUTOFF" if server.vm_state == "stopped" else "ACTIVE"
        reason, no_capacity, attempt = "", False, 0
        for attempt in range(1, self.settings.attempts + 1):
            deadline = self.clock.monotonic() + self.settings.timeout
            try:
                cur, mig = self._attempt(server if attempt == 1 else None, server.id, host,
                                         want, target_host, deadline, records, pause)
            except _AttemptFailed as e:
                reason, no_capacity = e.reason, e.no_capacity
            except InstanceHAError as e:
                if not e.retryable:
                    return self._done(server, host, Outcome.FAILED, attempt, t0, error=e)
                reason, no_capacity = str(e), False
            else:
                return self._done(server, host, Outcome.EVACUATED, attempt, t0, cur=cur, mig=mig)
            LOG.warning("evacuation of %s from %s, attempt %d/%d failed: %s", server.id, host,
                        attempt, self.settings.attempts, reason)
            if no_capacity and target_host is not None:
                # the scheduler found no room on the one host asked for (full, or
                # down since it was planned): asking it again cannot do better, and
                # each try leaves the server in ERROR; the caller sends it without
                break
        cls = exc.NoCapacity if no_capacity else exc.EvacuationFailed
        error = cls(server=server.id, host=host, attempts=attempt, reason=reason)
        outcome = Outcome.NO_CAPACITY if no_capacity else Outcome.FAILED
        return self._done(server, host, outcome, attempt, t0, error=error)

    def _retrying(self, deadline: float, call, *args):
        """``call(*args)``; a failure that may pass is retried with back-off until
        ``deadline`` (then raised), any other at once."""
        retries = self._retry.start()
        while True:
            try:
                return call(*args)
            except InstanceHAError as e:
                left = deadline - self.clock.monotonic()
                if not e.retryable or left <= 0:
                    raise
                delay = min(retries.next(), left)
                LOG.info("%s; retrying in %.1f s", e, delay)
                self._pause(delay)

    def _pause(self, seconds: float) -> None:
        """A back-off that nothing cuts short."""
        self.clock.wait(seconds)

    def _attempt(self, known: Server | None, server_id: str, host: str, want: str,
                 target_host: str | None, deadline: float, records: HostRecords,
                 pause: Pause) -> tuple[Server, Migration | None]:
        cur = known
        migrations = [] if known is None else \
            self._retrying(deadline, records.of, server_id, float("inf"))
        fast = not (known is None or migrations or known.task_state is not None)
        if not fast:
            # a later attempt, or the server was evacuated lately or is being
            # acted on (a controller before this one asked, maybe still running):
            # where it is, its task state and its own records decide, read now
            # (the records first: an evacuation that ends between the two reads
            # then shows as running with the server settled, never the reverse,
            # which would reset a rebuilding server)
            migrations = [m for m in self._own_records(server_id, deadline)
                          if m.source_compute in (None, host)]
            cur = self._retrying(deadline, self.nova.server, server_id)
        # else: as the caller read it moments ago, idle, no record: act at once
        assert cur is not None  # known, or read just above
        if cur.host != host:
            # moved by an earlier attempt or an earlier controller: verify, don't redo
            mig = migrations[0] if migrations else None
            if mig is not None and mig.failed:
                raise _AttemptFailed(f"left {host} but its evacuation migration is {mig.status}")
            cur, mig = self._wait(server_id, host, (mig.id - 1) if mig else 0, deadline,
                                  records, pause, need_migration=mig is not None)
            return self._restore_power(cur, want, deadline, pause), mig
        running = [m for m in migrations if not m.succeeded and not m.failed]
        if running and cur.task_state is not None:
            floor = running[0].id - 1  # an evacuation in progress: wait for it
            LOG.info("evacuation of %s from %s already in progress (migration %s)",
                     server_id, host, running[0].id)
        else:
            floor = migrations[0].id if migrations else 0
            self._make_evacuable(cur, deadline)
            # fast: the server's older records (of other hosts, or over an hour
            # old) were not read, so the floor says nothing about them
            self._request(server_id, host, target_host, None if fast else floor, deadline,
                          records)
            LOG.info("host=%s server=%s evacuate accepted by Nova", host, server_id)
        cur, mig = self._wait(server_id, host, floor, deadline, records, pause)
        return self._restore_power(cur, want, deadline, pause), mig

    def _make_evacuable(self, cur: Server, deadline: float) -> None:
        if cur.vm_state in EVACUABLE_VM_STATES and cur.task_state is None:
            return
        LOG.info("resetting %s (vm_state %s, task_state %s) to active before evacuating",
                 cur.id, cur.vm_state, cur.task_state)
        self._retrying(deadline, self.nova.reset_state, cur.id, "active")

    def _request(self, server_id: str, host: str, target_host: str | None, floor: int | None,
                 deadline: float, records: HostRecords) -> None:
        retries = self._retry.start()
        while True:
            try:
                self.nova.evacuate(server_id, target_host)
                return
            except InstanceHAError as e:
                # accepted after all? Its answer was lost (a timeout), or a retry of
                # ours was refused (409 while it runs, 400 "service in use" once done)
                if self._accepted(server_id, host, floor, records.since, deadline):
                    LOG.info("evacuate of %s failed (%s) but Nova had accepted it: not "
                             "sent again", server_id, e)
                    return
                if not e.retryable:
                    raise
                if exc.unanswered(e) and self._accepted_late(server_id, host, floor,
                                                          records.since, deadline):
                    LOG.info("evacuate of %s: its answer was lost (%s) and Nova took it "
                             "later: not sent again", server_id, e)
                    return
                # 409 (task still running, service not yet down), 5xx, Nova away
                left = deadline - self.clock.monotonic()
                if left <= 0:
                    raise _AttemptFailed(f"evacuate refused until the deadline: {e}")
                delay = min(retries.next(), left)
                LOG.info("evacuate of %s failed (%s); retrying in %.1f s", server_id, e, delay)
                self._pause(delay)

    def _own_records(self, server_id: str, deadline: float) -> list[Migration]:
        """Every evacuation record of the server, newest first, read now and
        without ``changes-since``: Nova filters that on ``updated_at``, which a
        record accepted moments ago does not have yet (it gets one at its first
        update, seconds later on a busy conductor), so the host's bulk read cannot
        tell whether an evacuate was accepted; this read can."""
        return self._retrying(deadline, self.nova.evacuations, server_id)

    def _accepted(self, server_id: str, host: str, floor: int | None,
                  since: datetime.datetime, deadline: float) -> bool:
        """Did Nova accept an evacuate of the server from ``host`` after record
        ``floor`` (None: the older records are unknown, then: one created since
        ``since``)? Read now, decided by ``engine.evacuation.accepted``."""
        return verdict.accepted(self._own_records(server_id, deadline), host, floor, since)

    def _accepted_late(self, server_id: str, host: str, floor: int | None,
                       since: datetime.datetime, deadline: float) -> bool:
        """An evacuate whose answer never came may still be queued in nova-api
        (seen: 35 s on a loaded control plane): re-sending it then makes Nova
        rebuild the server twice. Watch the server's records for
        ``lost_write_grace`` seconds (or to the deadline) before saying it was
        not taken."""
        until = min(deadline, self.clock.monotonic() + self.settings.lost_write_grace)
        polls = self._polls.start()
        while self.clock.monotonic() < until:
            self._pause(min(polls.next(), max(0.0, until - self.clock.monotonic())))
            if self._accepted(server_id, host, floor, since, deadline):
                return True
        return False

    def _wait(self, server_id: str, host: str, floor: int, deadline: float,
              records: HostRecords, pause: Pause,
              need_migration: bool = True) -> tuple[Server, Migration | None]:
        """Until a migration newer than ``floor`` is done and the server has landed.

        The host's records are read in bulk (shared); the server only once its
        record is done or failed, without a record to wait for, or every
        ``SERVER_BACKSTOP`` seconds (a server that went ERROR without its record
        saying so)."""
        polls = self._polls.start()
        cur: Server | None = None
        read_at = self.clock.monotonic()
        while True:
            pause.mark()
            # a read another waiter made within this waiter's own wait is fresh
            # enough: one bulk read per wait for the whole host, not per waiter
            migs = [m for m in self._retrying(deadline, records.of, server_id, polls.peek())
                    if m.id > floor]
            mig = migs[-1] if migs else None  # the oldest one after floor: ours
            settled = mig is not None and (mig.succeeded or mig.failed)
            if settled or not need_migration or self.clock.monotonic() - read_at >= SERVER_BACKSTOP:
                cur = self._retrying(deadline, self.nova.server, server_id)
                read_at = self.clock.monotonic()
                if verdict.broken(cur, mig):
                    fault = cur.fault or ""
                    raise _AttemptFailed(
                        f"migration {mig.status if mig else 'missing'}, server {cur.status}"
                        + (f": {fault}" if fault else ""), no_capacity=NO_VALID_HOST in fault)
                if verdict.landed(cur, host) and (
                        (mig is not None and mig.succeeded) or not need_migration):
                    return cur, mig
            if self.clock.monotonic() >= deadline:
                where = (f"server {cur.status} on {cur.host} (task {cur.task_state})"
                         if cur is not None else "server not read")
                raise _AttemptFailed(
                    f"timed out: migration {mig.status if mig else 'not created'}, {where}")
            if self.clock.wait(min(polls.next(), max(0.0, deadline - self.clock.monotonic())),
                               pause):
                polls.reset()  # Nova said something: read again soon

    def _restore_power(self, cur: Server, want: str, deadline: float, pause: Pause) -> Server:
        if want != "SHUTOFF" or cur.status == "SHUTOFF":
            return cur
        self._retrying(deadline, self.nova.stop, cur.id)
        polls = self._polls.start()
        while True:
            pause.mark()
            cur = self._retrying(deadline, self.nova.server, cur.id)
            if cur.status == "SHUTOFF" and cur.task_state is None:
                return cur
            if self.clock.monotonic() >= deadline:
                raise _AttemptFailed(f"evacuated to {cur.host} but did not stop "
                                     f"(status {cur.status}, task {cur.task_state})")
            if self.clock.wait(polls.next(), pause):
                polls.reset()

    def _done(self, server: Server, host: str, outcome: Outcome, attempts: int, t0: float,
              cur: Server | None = None, mig: Migration | None = None,
              error: InstanceHAError | None = None) -> EvacuationResult:
        result = EvacuationResult(
            server_id=server.id, name=server.name, source_host=host, outcome=outcome,
            attempts=attempts, seconds=self.clock.monotonic() - t0,
            dest_host=cur.host if cur else None, status=cur.status if cur else None,
            migration_id=mig.id if mig else None, migration_status=mig.status if mig else None,
            error=error)
        if result.ok:
            LOG.info("evacuated %s from %s to %s (%s, migration %s %s) in %.1f s", server.id,
                     host, result.dest_host, result.status, result.migration_id,
                     result.migration_status, result.seconds)
        else:
            LOG.error("failed to recover %s from %s: %s", server.id, host, error)
        if self.on_result is not None:
            try:
                self.on_result(result)
            except Exception:  # a hook must not stop the other evacuations
                LOG.exception("on_result hook failed for %s", server.id)
        return result
