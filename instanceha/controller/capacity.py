"""The leader's failover capacity: the model kept current in the background,
the coverage it gives, and the plan a recovery follows.

``tick()`` (every controller tick, never blocking) starts a read of Placement
and Nova on a thread of its own when one is due (``refresh_interval``, or
sooner after Nova said an instance changed, at most every ``min_interval``).
Only the leader reads; a controller that becomes leader reads at once. A read
that fails keeps the last model (its age grows, the error is shown) and is
tried again after ``min(30 s, refresh_interval)``.

What operators see: ``report()`` for ``instanceha status`` and ``instanceha
capacity`` (bounded: counts, the shortfall, and the failures not covered with
the servers that would find no room and why), the gauges, and one
``instanceha.capacity.changed`` notification each time coverage flips.

What recoveries use: ``plan()`` (the failed host's servers in dispatch order,
each with its planned target, and those without room), ``dispatched()`` /
``landed()`` (evacuations in flight count as load on their target until a read
after they ended shows them in Placement's usage).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import gc
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping

from instanceha import exceptions
from instanceha.clock import SYSTEM, Clock
from instanceha.controller import capacity_report as rep
from instanceha.controller.capacity_reader import ModelReader, ReadStats
from instanceha.engine import capacity as cap
from instanceha.engine.capacity_coverage import Coverage, CoveragePolicy, CoverageTracker
from instanceha.engine.capacity_plan import FailurePlan

LOG = logging.getLogger(__name__)

RETRY = 30.0
PENDING_MAX = 900.0
"""Seconds a planned evacuation counts as load at most (one never sent: the
recovery stopped; one never ended: three attempts of 300 s)."""


@dataclasses.dataclass(frozen=True)
class CapacitySettings:
    enabled: bool = True
    refresh_interval: float = 60.0
    min_interval: float = 5.0
    coverage: CoveragePolicy = CoveragePolicy()
    plan_targets: bool = True
    defer_without_room: bool = True
    max_concurrent_evacuations: int = 64
    max_evacuations_per_host: int = 16


@dataclasses.dataclass(frozen=True)
class LastRead:
    """What the last read gave (the coverage stays that of the last good one)."""

    coverage: Coverage | None = None
    read_at: float | None = None
    """Monotonic time the last good read started."""
    read_wall: float | None = None
    error: str | None = None
    """Why the last read failed (None: it did not)."""
    stats: ReadStats = dataclasses.field(default_factory=ReadStats)
    seconds: float = 0.0


class InFlight:
    """Evacuations planned or sent, counted as load on their target until a
    read started after they ended (or ``PENDING_MAX`` seconds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[cap.Server, str, float | None, float]] = {}
        """server id -> (server, target, ended at, planned at)."""

    def others(self, ids: set[str]) -> list[tuple[cap.Server, str]]:
        """(server, target) of those in flight but ``ids``."""
        with self._lock:
            return [(s, t) for s, t, _, _ in self._entries.values() if s.id not in ids]

    def add(self, server: cap.Server, target: str, now: float) -> None:
        with self._lock:
            self._entries[server.id] = (server, target, None, now)

    def ended(self, server_id: str, now: float) -> None:
        with self._lock:
            known = self._entries.get(server_id)
            if known is not None:
                self._entries[server_id] = (known[0], known[1], now, known[3])

    def forget(self, read_started: float) -> None:
        """Those a read started at ``read_started`` sees in Placement's usage."""
        with self._lock:
            for sid in [k for k, (_, _, done, at) in self._entries.items()
                        if (done is not None and done < read_started)
                        or read_started - at > PENDING_MAX]:
                del self._entries[sid]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """CPython's cyclic collector paused for a bulk update of the model.

    Applying a full read of 5,000 hosts allocates about half a million
    objects that all live on; each 700 allocations start a young collection
    and the older generations are traversed again and again, about 40 % of
    the update's CPU time (measured: 1.7 s with the collector, 1.0 s
    without). The model holds no reference cycles (its objects are freed by
    their reference counts), so nothing waits for the collector meanwhile; it
    runs again as usual once the update is done."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class CapacityMonitor:
    def __init__(self, reader: ModelReader, settings: CapacitySettings = CapacitySettings(),
                 clock: Clock = SYSTEM,
                 submit: Callable[[Callable[[], None]], object] | None = None,
                 on_change: Callable[[Coverage, bool | None, float], None] | None = None
                 ) -> None:
        """``submit`` runs a read (a one-thread pool by default; tests run it
        inline). ``on_change(coverage, was, read_at)``: coverage flipped (was:
        the previous answer, None on the first; read_at: the wall time of the
        read that gave it)."""
        self.reader = reader
        self.settings = settings
        self.clock = clock
        self.on_change = on_change
        self._pool = None
        if submit is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, "capacity")
            submit = self._pool.submit
        self._submit = submit
        self._lock = threading.Lock()  # the model and the tracker
        self._state = threading.Lock()  # the fields below
        self.tracker = CoverageTracker(reader.model, settings.coverage)
        self.last = LastRead()
        self.revision = 0
        """Grows when what the report shows changes (the status publisher's input)."""
        self._next_at: float | None = None
        self._busy = False
        self._leading = False
        self._poked = False
        self.in_flight = InFlight()

    @property
    def coverage(self) -> Coverage | None:
        return self.last.coverage

    @property
    def read_at(self) -> float | None:
        return self.last.read_at

    @property
    def error(self) -> str | None:
        return self.last.error

    # -- when to read -----------------------------------------------------------
    def tick(self, leading: bool) -> None:
        if not leading:
            self._leading = False
            return
        now = self.clock.monotonic()
        with self._state:
            if not self._leading:
                self._leading, self._next_at = True, None  # new term: read at once
            due = self._next_at is None or now >= self._next_at or (
                self._poked and self.read_at is not None
                and now - self.read_at >= self.settings.min_interval)
            if self._busy or not due:
                return
            self._busy, self._poked = True, False
        try:
            self._submit(self._refresh)
        except RuntimeError:  # the pool is shut down: stopping
            with self._state:
                self._busy = False

    def poke(self) -> None:
        """Nova said an instance changed: read sooner (at most every min_interval)."""
        self._poked = True

    def _refresh(self) -> None:
        started = self.clock.monotonic()
        try:
            batch, stats = self.reader.read()
            if batch is None:  # Nova's services not read yet: soon
                with self._state:
                    self._next_at, self._busy = started + 1.0, False
                return
            coverage = self.update(batch, started)
        except Exception as e:
            self._failed(started, e)
            return
        seconds = self.clock.monotonic() - started
        with self._state:
            before = self.last.coverage
            changed = before is None or rep.material(coverage) != rep.material(before)
            was = None if before is None else before.covered
            self.last = LastRead(coverage, started, self.clock.wall(), None, stats, seconds)
            self._next_at = started + self.settings.refresh_interval
            self._busy = False
            if changed:
                self.revision += 1
        LOG.debug("capacity read: %d requests, %d providers and %d servers read, %d plans "
                  "made in %.2f s", stats.requests, stats.providers_read, stats.servers_read,
                  self.tracker.replanned, seconds)
        if was is not coverage.covered:
            self._flipped(coverage, was)

    def update(self, batch: dict, started: float) -> Coverage:
        """A read applied to the model and the coverage kept current (the
        cyclic collector paused meanwhile: ``gc_paused``); ``started``: when
        the read started (the evacuations that ended before it are in it)."""
        with self._lock, gc_paused():
            self.reader.apply(batch)
            coverage = self.tracker.refresh()
            self.in_flight.forget(started)
        return coverage

    def _failed(self, started: float, e: Exception) -> None:
        action = e.action.value if isinstance(e, exceptions.InstanceHAError) else "retry later"
        text = str(e) or type(e).__name__
        with self._state:
            first = self.last.error != text
            self.last = dataclasses.replace(self.last, error=text)
            self._next_at = started + min(RETRY, self.settings.refresh_interval)
            self._busy = False
            self.revision += 1
        (LOG.warning if first else LOG.debug)(
            "capacity model not read: %s (%s); %s", text, action,
            "the last model stays in use" if self.coverage is not None
            else "coverage unknown until a read succeeds",
            exc_info=not isinstance(e, exceptions.InstanceHAError))

    def _flipped(self, coverage: Coverage, was: bool | None) -> None:
        counted = coverage.counted()
        short = [name for name, p in counted.items() if not p.covered]
        if coverage.covered:
            LOG.warning("failover capacity: covered again (tolerance %s)", rep.tolerance(coverage))
        else:
            LOG.warning("failover capacity NOT covered (tolerance %s): %d failure(s) without "
                        "room for every server: %s", rep.tolerance(coverage), len(short),
                        ", ".join(short[:5]) + (" ..." if len(short) > 5 else ""))
        if self.on_change is not None:
            try:
                self.on_change(coverage, was, self.last.read_wall or self.clock.wall())
            except Exception:  # a report must never stop the model
                LOG.exception("capacity change report failed")

    # -- what recoveries use ----------------------------------------------------
    @property
    def known(self) -> bool:
        return self.coverage is not None

    def plan(self, host: str, servers: Iterable[cap.Server],
             avoid: Mapping[str, Iterable[str]] | None = None) -> FailurePlan | None:
        """The plan for ``host`` failed now, for ``servers`` (as the recovery read
        them); None while the model is unknown. Its placements count as load on
        their targets for the plans made after it (hosts failing together
        spread instead of all choosing the same room), until a read after their
        evacuation ended (``landed``), or ``PENDING_MAX`` seconds."""
        if self.coverage is None:
            return None
        servers = list(servers)
        ids = {s.id for s in servers}
        with self._lock:
            pending = self.in_flight.others(ids)
            plan = self.tracker.plan_failure({host}, servers, pending, avoid)
            now = self.clock.monotonic()
            for p in plan.placed:
                self.in_flight.add(p.server, p.target, now)
            return plan

    def server(self, server_id: str) -> cap.Server | None:
        """What the model knows of a server (its priority, group, need)."""
        with self._lock:
            return self.reader.model.servers.get(server_id)

    def dispatched(self, server: cap.Server, target: str) -> None:
        """An evacuation to ``target`` not planned here (sent to another target)."""
        self.in_flight.add(server, target, self.clock.monotonic())

    def landed(self, server_id: str) -> None:
        """The evacuation ended: it counts as load until a read started after now."""
        self.in_flight.ended(server_id, self.clock.monotonic())

    # -- what operators see -----------------------------------------------------
    def report(self, everything: bool = False) -> dict:
        """For ``instanceha status`` and ``capacity``: bounded (see the limits
        above) unless ``everything``."""
        with self._state:
            if not self._leading:  # a standby's model is not kept current: none shown
                return {"state": "standby", "covered": None, "age": None,
                        "revision": self.revision}
            last = self.last
            coverage, error = last.coverage, last.error
            age = None if last.read_at is None else round(self.clock.monotonic() - last.read_at, 1)
            out = {"state": "unknown" if coverage is None else ("stale" if error else "ok"),
                   "age": age, "read_at": last.read_wall, "error": error,
                   "read_seconds": round(last.seconds, 3), "requests": last.stats.requests,
                   "revision": self.revision}
        if coverage is None:
            return out
        with self._lock:
            out.update(rep.summary(coverage, self.reader.model, everything))
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
