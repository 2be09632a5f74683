"""Nova's host aggregates for the mass-failure guard, read in the background.

The guard groups hosts by aggregate (``[controller]
max_failed_percent_per_aggregate`` and ``max_failed_hosts_per_aggregate``).
Aggregates change rarely, so they are read every ``refresh`` seconds on a
thread of their own; the tick only reads the cache and never waits for Nova.

A failed read keeps the last grouping read (logged, and its age and the error
shown in ``instanceha status``) and is retried after ``retry`` seconds at
most. Until a first read succeeds the grouping is *unknown* (``None``): the
guard then assumes the worst grouping possible, never "no aggregates".
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable, Mapping

from instanceha import exceptions
from instanceha.clock import SYSTEM, Clock
from instanceha.engine import guard

LOG = logging.getLogger(__name__)


class AggregateCache:
    def __init__(self, read: Callable[[], Mapping[str, frozenset[str]]],
                 refresh: float = 300.0, retry: float = 30.0,
                 clock: Clock = SYSTEM,
                 submit: Callable[[Callable[[], None]], object] | None = None) -> None:
        """``read``: host -> names of its aggregates (``NovaClient.host_aggregates``).
        ``submit`` runs a refresh (a one-thread pool by default; tests run it inline)."""
        self._read = read
        self.refresh = refresh
        self.retry = min(retry, refresh)
        self.clock = clock
        self._pool = None
        if submit is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, "aggregates")
            submit = self._pool.submit
        self._submit = submit
        self._lock = threading.Lock()
        self._grouping: dict[str, frozenset[str]] | None = None
        self.read_at: float | None = None
        self.error: str | None = None
        self._next_at: float | None = None
        self._busy = False

    def __call__(self) -> guard.Aggregates | None:
        """The last grouping read (aggregate -> hosts), None until one read succeeded."""
        self._maybe_refresh()
        with self._lock:
            return self._grouping

    def _maybe_refresh(self) -> None:
        with self._lock:
            if self._busy or (self._next_at is not None and self.clock.monotonic() < self._next_at):
                return
            self._busy = True
        try:
            self._submit(self._refresh)
        except RuntimeError:  # the pool is shut down: stopping
            with self._lock:
                self._busy = False

    def _refresh(self) -> None:
        started = self.clock.monotonic()
        try:
            grouping = guard.by_aggregate(self._read())
        except Exception as e:
            action = e.action.value if isinstance(e, exceptions.InstanceHAError) \
                else "retry later"
            text = str(e) or type(e).__name__
            with self._lock:
                first = self.error != text
                self.error = text
                self._next_at = started + self.retry
                self._busy = False
                read_at = self.read_at if self._grouping is not None else None
            if read_at is not None:
                then = f"the grouping read {started - read_at:.0f} s ago stays in use"
            else:
                then = ("the grouping is unknown: the guard assumes every host that looks "
                        "dead may share one aggregate")
            (LOG.warning if first else LOG.debug)(
                "host aggregates not read: %s (%s, next try in %.0f s); %s", text, action,
                self.retry, then, exc_info=not isinstance(e, exceptions.InstanceHAError))
            return
        with self._lock:
            changed = grouping != self._grouping
            recovered = self.error is not None
            self._grouping = grouping
            self.read_at = started
            self.error = None
            self._next_at = started + self.refresh
            self._busy = False
        if changed or recovered:
            LOG.info("host aggregates read: %d aggregates, %d hosts in at least one", len(grouping),
                     len(set().union(*grouping.values())) if grouping else 0)

    def describe(self) -> dict:
        """For ``instanceha status``: known or not, how many, how old, the last error."""
        with self._lock:
            grouping = self._grouping
            return {"known": grouping is not None,
                    "count": len(grouping) if grouping is not None else None,
                    "age": round(self.clock.monotonic() - self.read_at, 1)
                    if self.read_at is not None else None,
                    "error": self.error}

    def close(self, wait: bool = False) -> None:
        """Stop refreshing. ``wait``: until a read in flight has ended (and its
        grouping is kept); by default the edge does not wait for Nova."""
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
