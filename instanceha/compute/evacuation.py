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
``concurrency`` servers move at once. Within an attempt, a Nova call that
fails in a way that may pass (5xx, 409, Nova unreachable or timing out) is
retried with exponential back-off (from ``poll_interval``, doubling up to
``RETRY_BACKOFF_MAX``) until the attempt's deadline: a Nova API blip never
uses up the attempts. Before an evacuate request is sent again, the migration
records say whether the failed one was accepted after all (its answer lost,
then a transport retry refused), so it is never sent twice. A server that
cannot be moved is reported (``on_result``), never raised: the others
continue. An evacuation found in progress (a controller restarted mid-way) is
awaited, not repeated.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import enum
import logging
import time
from collections.abc import Callable, Iterable

from instanceha.compute import exceptions as exc
from instanceha.compute.model import Migration, Server
from instanceha.exceptions import InstanceHAError

LOG = logging.getLogger(__name__)

EVACUABLE_VM_STATES = ("active", "stopped")  # anything else is reset to active first
NO_VALID_HOST = "No valid host"
RETRY_BACKOFF_MAX = 30.0  # seconds between two tries of a failing Nova call, at most


@dataclasses.dataclass(frozen=True)
class EvacuationSettings:
    concurrency: int = 4
    attempts: int = 3
    timeout: float = 300.0  # seconds, per attempt
    poll_interval: float = 2.0  # seconds

    @classmethod
    def from_conf(cls, conf, group: str = "nova") -> EvacuationSettings:
        c = conf[group]
        return cls(concurrency=c.evacuation_concurrency, attempts=c.evacuation_attempts,
                   timeout=c.evacuation_timeout, poll_interval=c.poll_interval)


class Outcome(enum.Enum):
    EVACUATED = "evacuated"
    FAILED = "failed"
    NO_CAPACITY = "no capacity"


@dataclasses.dataclass(frozen=True)
class EvacuationResult:
    server_id: str
    name: str
    source_host: str
    outcome: Outcome
    attempts: int
    seconds: float
    dest_host: str | None = None
    status: str | None = None  # the server's final status
    migration_id: int | None = None
    migration_status: str | None = None
    error: InstanceHAError | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.EVACUATED


class _AttemptFailed(Exception):
    def __init__(self, reason: str, no_capacity: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.no_capacity = no_capacity


class Evacuator:
    def __init__(self, nova, settings: EvacuationSettings = EvacuationSettings(),
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 on_result: Callable[[EvacuationResult], None] | None = None) -> None:
        self.nova = nova
        self.settings = settings
        self.clock = clock
        self.sleep = sleep
        self.on_result = on_result

    def evacuate_host(self, host: str, servers: Iterable[Server],
                      target_host: str | None = None) -> list[EvacuationResult]:
        """Evacuate ``servers`` of the fenced ``host``; one result per server."""
        servers = list(servers)
        if not servers:
            return []
        workers = min(self.settings.concurrency, len(servers))
        with concurrent.futures.ThreadPoolExecutor(workers, "evacuate") as pool:
            futures = [pool.submit(self.evacuate_server, s, host, target_host) for s in servers]
            return [f.result() for f in futures]

    # -- one server -------------------------------------------------------------

    def evacuate_server(self, server: Server, host: str,
                        target_host: str | None = None) -> EvacuationResult:
        t0 = self.clock()
        # the pre-failure power state to restore; ERROR and the rest come back ACTIVE
        want = "SHUTOFF" if server.vm_state == "stopped" else "ACTIVE"
        reason, no_capacity, attempt = "", False, 0
        for attempt in range(1, self.settings.attempts + 1):
            deadline = self.clock() + self.settings.timeout
            try:
                cur, mig = self._attempt(server.id, host, want, target_host, deadline)
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
        cls = exc.NoCapacity if no_capacity else exc.EvacuationFailed
        error = cls(server=server.id, host=host, attempts=attempt, reason=reason)
        outcome = Outcome.NO_CAPACITY if no_capacity else Outcome.FAILED
        return self._done(server, host, outcome, attempt, t0, error=error)

    def _retrying(self, deadline: float, call, *args):
        """``call(*args)``; a failure that may pass is retried with back-off until
        ``deadline`` (then raised), any other at once."""
        delay = self.settings.poll_interval
        while True:
            try:
                return call(*args)
            except InstanceHAError as e:
                left = deadline - self.clock()
                if not e.retryable or left <= 0:
                    raise
                LOG.info("%s; retrying in %.1f s", e, min(delay, left))
                self.sleep(min(delay, left))
                delay = min(delay * 2, RETRY_BACKOFF_MAX)

    def _attempt(self, server_id: str, host: str, want: str, target_host: str | None,
                 deadline: float) -> tuple[Server, Migration | None]:
        cur = self._retrying(deadline, self.nova.server, server_id)
        migrations = self._retrying(deadline, self.nova.evacuations, server_id)
        if cur.host != host:
            # moved by an earlier attempt or an earlier controller: verify, don't redo
            ours = [m for m in migrations if m.source_compute == host]
            mig = ours[0] if ours else None
            if mig is not None and mig.failed:
                raise _AttemptFailed(f"left {host} but its evacuation migration is {mig.status}")
            cur, mig = self._wait(server_id, host, (mig.id - 1) if mig else 0, deadline,
                                  need_migration=mig is not None)
            return self._restore_power(cur, want, deadline), mig
        running = [m for m in migrations if m.source_compute == host
                   and not m.succeeded and not m.failed]
        if running and cur.task_state is not None:
            floor = running[0].id - 1  # an evacuation in progress: wait for it
            LOG.info("evacuation of %s from %s already in progress (migration %s)",
                     server_id, host, running[0].id)
        else:
            floor = migrations[0].id if migrations else 0
            self._make_evacuable(cur, deadline)
            self._request(server_id, target_host, floor, deadline)
        cur, mig = self._wait(server_id, host, floor, deadline)
        return self._restore_power(cur, want, deadline), mig

    def _make_evacuable(self, cur: Server, deadline: float) -> None:
        if cur.vm_state in EVACUABLE_VM_STATES and cur.task_state is None:
            return
        LOG.info("resetting %s (vm_state %s, task_state %s) to active before evacuating",
                 cur.id, cur.vm_state, cur.task_state)
        self._retrying(deadline, self.nova.reset_state, cur.id, "active")

    def _request(self, server_id: str, target_host: str | None, floor: int,
                 deadline: float) -> None:
        delay = self.settings.poll_interval
        while True:
            try:
                self.nova.evacuate(server_id, target_host)
                return
            except InstanceHAError as e:
                # accepted after all? Its answer was lost and a transport retry was
                # refused (409 while it runs, 400 "service in use" once it is done)
                migrations = self._retrying(deadline, self.nova.evacuations, server_id)
                if any(m.id > floor for m in migrations):
                    LOG.info("evacuate of %s failed (%s) but Nova had accepted it: not "
                             "sent again", server_id, e)
                    return
                if not e.retryable:
                    raise
                # 409 (task still running, service not yet down), 5xx, Nova away
                left = deadline - self.clock()
                if left <= 0:
                    raise _AttemptFailed(f"evacuate refused until the deadline: {e}")
                LOG.info("evacuate of %s failed (%s); retrying in %.1f s", server_id, e,
                         min(delay, left))
                self.sleep(min(delay, left))
                delay = min(delay * 2, RETRY_BACKOFF_MAX)

    def _wait(self, server_id: str, host: str, floor: int, deadline: float,
              need_migration: bool = True) -> tuple[Server, Migration | None]:
        """Until a migration newer than ``floor`` is done and the server has landed."""
        while True:
            migs = [m for m in self._retrying(deadline, self.nova.evacuations, server_id)
                    if m.id > floor]
            mig = migs[-1] if migs else None  # the oldest one after floor: ours
            cur = self._retrying(deadline, self.nova.server, server_id)
            if (mig is not None and mig.failed) or (cur.status == "ERROR"
                                                     and cur.task_state is None):
                fault = cur.fault or ""
                raise _AttemptFailed(
                    f"migration {mig.status if mig else 'missing'}, server {cur.status}"
                    + (f": {fault}" if fault else ""), no_capacity=NO_VALID_HOST in fault)
            landed = (cur.host not in (None, host) and cur.task_state is None
                      and cur.status in ("ACTIVE", "SHUTOFF"))
            if landed and ((mig is not None and mig.succeeded) or not need_migration):
                return cur, mig
            if self.clock() >= deadline:
                raise _AttemptFailed(
                    f"timed out: migration {mig.status if mig else 'not created'}, server "
                    f"{cur.status} on {cur.host} (task {cur.task_state})")
            self.sleep(self.settings.poll_interval)

    def _restore_power(self, cur: Server, want: str, deadline: float) -> Server:
        if want != "SHUTOFF" or cur.status == "SHUTOFF":
            return cur
        self._retrying(deadline, self.nova.stop, cur.id)
        while True:
            cur = self._retrying(deadline, self.nova.server, cur.id)
            if cur.status == "SHUTOFF" and cur.task_state is None:
                return cur
            if self.clock() >= deadline:
                raise _AttemptFailed(f"evacuated to {cur.host} but did not stop "
                                     f"(status {cur.status}, task {cur.task_state})")
            self.sleep(self.settings.poll_interval)

    def _done(self, server: Server, host: str, outcome: Outcome, attempts: int, t0: float,
              cur: Server | None = None, mig: Migration | None = None,
              error: InstanceHAError | None = None) -> EvacuationResult:
        result = EvacuationResult(
            server_id=server.id, name=server.name, source_host=host, outcome=outcome,
            attempts=attempts, seconds=self.clock() - t0,
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
