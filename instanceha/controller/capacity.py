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
import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Mapping

from instanceha import exceptions
from instanceha.clock import SYSTEM, Clock
from instanceha.controller.capacity_reader import ModelReader, ReadStats
from instanceha.engine import capacity as cap
from instanceha.engine.capacity_coverage import Coverage, CoveragePolicy, CoverageTracker
from instanceha.engine.capacity_plan import FailurePlan
from instanceha.engine.instance_policy import priority_name

LOG = logging.getLogger(__name__)

RETRY = 30.0
MAX_FAILURES_SHOWN = 50
"""Failures (hosts, domains) listed in the published report; the rest are counted."""
MAX_SERVERS_SHOWN = 10
"""Servers without room listed per failure."""
ALL_HOSTS_UP_TO = 50
"""Up to this many hosts, every host's row is published (covered ones too)."""
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
        self.coverage: Coverage | None = None
        self.read_at: float | None = None
        self.read_wall: float | None = None
        self.error: str | None = None
        self.stats = ReadStats()
        self.seconds = 0.0
        self.revision = 0
        """Grows when what the report shows changes (the status publisher's input)."""
        self._next_at: float | None = None
        self._busy = False
        self._leading = False
        self._poked = False
        self._covered: bool | None = None
        self._pending: dict[str, tuple[cap.Server, str, float | None, float]] = {}

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
            with self._lock:
                self.reader.apply(batch)
                coverage = self.tracker.refresh()
                self._forget_landed(started)
        except Exception as e:
            self._failed(started, e)
            return
        seconds = self.clock.monotonic() - started
        with self._state:
            changed = self.coverage is None or _material(coverage) != _material(self.coverage)
            self.coverage, self.stats, self.seconds = coverage, stats, seconds
            self.read_at, self.read_wall, self.error = started, self.clock.wall(), None
            self._next_at = started + self.settings.refresh_interval
            self._busy = False
            if changed:
                self.revision += 1
            was, self._covered = self._covered, coverage.covered
        LOG.debug("capacity read: %d requests, %d providers and %d servers read, %d plans "
                  "made in %.2f s", stats.requests, stats.providers_read, stats.servers_read,
                  self.tracker.replanned, seconds)
        if was is not coverage.covered:
            self._flipped(coverage, was)

    def _failed(self, started: float, e: Exception) -> None:
        action = e.action.value if isinstance(e, exceptions.InstanceHAError) else "retry later"
        text = str(e) or type(e).__name__
        with self._state:
            first = self.error != text
            self.error = text
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
            LOG.warning("failover capacity: covered again (tolerance %s)", _tolerance(coverage))
        else:
            LOG.warning("failover capacity NOT covered (tolerance %s): %d failure(s) without "
                        "room for every server: %s", _tolerance(coverage), len(short),
                        ", ".join(short[:5]) + (" ..." if len(short) > 5 else ""))
        if self.on_change is not None:
            try:
                self.on_change(coverage, was, self.read_wall or self.clock.wall())
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
            with self._state:
                pending = [(s, t) for s, t, _, _ in self._pending.values() if s.id not in ids]
            plan = self.tracker.plan_failure({host}, servers, pending, avoid)
            now = self.clock.monotonic()
            with self._state:
                for p in plan.placed:
                    self._pending[p.server.id] = (p.server, p.target, None, now)
            return plan

    def server(self, server_id: str) -> cap.Server | None:
        """What the model knows of a server (its priority, group, need)."""
        with self._lock:
            return self.reader.model.servers.get(server_id)

    def dispatched(self, server: cap.Server, target: str) -> None:
        """An evacuation to ``target`` not planned here (sent to another target)."""
        with self._state:
            self._pending[server.id] = (server, target, None, self.clock.monotonic())

    def landed(self, server_id: str) -> None:
        """The evacuation ended: it counts as load until a read started after now."""
        with self._state:
            known = self._pending.get(server_id)
            if known is not None:
                self._pending[server_id] = (known[0], known[1], self.clock.monotonic(), known[3])

    def _forget_landed(self, read_started: float) -> None:
        with self._state:
            for sid in [k for k, (_, _, done, at) in self._pending.items()
                        if (done is not None and done < read_started)
                        or read_started - at > PENDING_MAX]:
                del self._pending[sid]

    # -- what operators see -----------------------------------------------------
    def report(self, everything: bool = False) -> dict:
        """For ``instanceha status`` and ``capacity``: bounded (see the limits
        above) unless ``everything``."""
        with self._state:
            if not self._leading:  # a standby's model is not kept current: none shown
                return {"state": "standby", "covered": None, "age": None,
                        "revision": self.revision}
            coverage, error = self.coverage, self.error
            age = None if self.read_at is None else round(self.clock.monotonic() - self.read_at, 1)
            out = {"state": "unknown" if coverage is None else ("stale" if error else "ok"),
                   "age": age, "read_at": self.read_wall, "error": error,
                   "read_seconds": round(self.seconds, 3), "requests": self.stats.requests,
                   "revision": self.revision}
        if coverage is None:
            return out
        with self._lock:
            out.update(_summary(coverage, self.reader.model, everything))
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _tolerance(coverage: Coverage) -> str:
    p = coverage.policy
    return "domain" if p.tolerance.value == "domain" else f"{p.hosts} host(s)"


def _material(coverage: Coverage) -> tuple:
    return (coverage.covered, tuple(coverage.uncovered_hosts()),
            tuple(coverage.uncovered_domains()), tuple(sorted(coverage.shortfall().items())),
            None if coverage.worst is None else coverage.worst.covered)


def _summary(coverage: Coverage, model: cap.Model, everything: bool) -> dict:
    hosts = coverage.hosts
    rows = []
    show_all = everything or len(hosts) <= ALL_HOSTS_UP_TO
    for name in sorted(hosts):
        p = hosts[name]
        if show_all or not p.covered:
            rows.append(_row("host", name, p, model, None if everything else MAX_SERVERS_SHOWN))
    for name in sorted(coverage.domains):
        p = coverage.domains[name]
        if show_all or not p.covered:
            rows.append(_row("domain", name, p, model,
                             None if everything else MAX_SERVERS_SHOWN))
    if coverage.worst is not None:
        rows.append(_row("hosts", ", ".join(sorted(coverage.worst.failed)), coverage.worst,
                         model))
    shown = rows if everything else rows[:MAX_FAILURES_SHOWN]
    return {"tolerance": coverage.policy.tolerance.value, "hosts": coverage.policy.hosts,
            "covered": coverage.covered,
            "counts": {"hosts": len(hosts), "uncovered_hosts": len(coverage.uncovered_hosts()),
                       "domains": len(coverage.domains),
                       "uncovered_domains": len(coverage.uncovered_domains()),
                       "servers": len(model.servers)},
            "shortfall": coverage.shortfall(), "failures": shown,
            "more_failures": len(rows) - len(shown)}


def _row(kind: str, name: str, p: FailurePlan, model: cap.Model,
         limit: int | None = MAX_SERVERS_SHOWN) -> dict:
    servers = len(p.placed) + len(p.unplaced)
    return {"kind": kind, "name": name, "covered": p.covered, "servers": servers,
            "placed": len(p.placed), "short": p.shortfall(),
            "failed": sorted(p.failed) if kind != "host" else [name],
            "spares": list(p.spares),
            "without_room": [{"id": u.server.id, "name": u.server.name,
                              "host": u.server.host,
                              "priority": priority_name(u.server.priority),
                              "reason": u.reason}
                             for u in p.unplaced[:limit]],
            "more_without_room": max(0, len(p.unplaced) - (limit or len(p.unplaced)))}


def change_event(coverage: Coverage, was: bool | None, dry_run: bool = False,
                 change_id: str = "0"):
    """The ``instanceha.capacity.changed`` notification for a flip."""
    from instanceha.notify import events

    short = [(name, p) for name, p in coverage.counted().items() if not p.covered]
    reason = ("covered: every counted failure finds room" if coverage.covered else
              "; ".join(f"{name}: {len(p.unplaced)} server(s) without room"
                        for name, p in short[:3]) + (f"; {len(short) - 3} more" if
                                                      len(short) > 3 else ""))
    return events.capacity_changed(
        covered=coverage.covered, previous=was, tolerance=coverage.policy.tolerance.value,
        hosts=coverage.policy.hosts,
        failures=[{"name": name, "without_room": len(p.unplaced), "short": p.shortfall()}
                  for name, p in short[:20]],
        uncovered=len(short), shortfall=coverage.shortfall(), reason=reason, dry_run=dry_run,
        change_id=change_id)
