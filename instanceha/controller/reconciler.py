"""One reconciliation tick: observe the hosts that changed, decide, act.

Level-triggered and incremental: the coordinator's snapshot says which hosts
changed since the previous tick (its change log); only those, plus the hosts
whose age crosses a detection window now, are observed and decided again.
A host whose liveness is its live session has nothing that changes with time
alone, so a steady cluster costs a tick nothing per host. Everything is
decided again when the snapshot cannot tell what changed (the first tick, a
re-read after a reconnection) or when the controller's own trust in its view
changes (its session state, the settle window, a new observation start).
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
from collections.abc import Callable, Mapping
from typing import Protocol

from instanceha.controller import observe
from instanceha.controller.executor import Executor
from instanceha.coordination import ClusterSnapshot, Coordinator
from instanceha.engine import detection, guard
from instanceha.engine.model import DetectionPolicy, HostView, Phase, SecondSource

LOG = logging.getLogger(__name__)


class SecondSourcePort(Protocol):
    """A source of liveness independent of the agent (controller.host_probe)."""

    def want(self, host: str) -> SecondSource:
        """The host's answer so far; the first call starts asking (never blocks)."""

    def drop(self, host: str) -> None:
        """No longer needed."""

    def changed(self) -> set[str]:
        """The hosts whose answer changed since the previous call."""


@dataclasses.dataclass(frozen=True)
class Transition:
    host: str
    before: HostView | None
    after: HostView
    at: float


class Reconciler:
    def __init__(
        self,
        coordinator: Coordinator,
        policy: DetectionPolicy,
        executor: Executor,
        nova_states: Callable[[], Mapping[str, bool]] | None = None,
        on_transition: Callable[[Transition], None] | None = None,
        second_source: SecondSourcePort | None = None,
    ) -> None:
        """``second_source``: asked about every host whose agent looks dead
        before it may be FAILED (None: hosts are judged by their agent alone)."""
        self.second_source = second_source
        self.coordinator = coordinator
        self.policy = policy
        self.executor = executor
        self.nova_states = nova_states
        self.on_transition = on_transition
        self.views: dict[str, HostView] = {}
        """Replaced, never mutated, by a tick that changes a view: safe to read
        from another thread (metrics, status)."""
        self.phases: dict[Phase, set[str]] = guard.index({})
        """The views indexed by phase, kept with them (for the guard)."""
        self.last_snapshot: ClusterSnapshot | None = None
        self.touched: frozenset[str] | None = None
        """The hosts observed again in the last tick (None: every host)."""
        self.full_ticks = 0
        self._rev: int | None = None
        self._trust: tuple | None = None
        self._nova: dict | None = None
        self._timers: list[tuple[float, str]] = []
        self._wake: dict[str, float] = {}
        self._again: set[str] = set()

    # -- which hosts to look at ------------------------------------------------
    def _woken(self, now: float) -> set[str]:
        out = set()
        while self._timers and self._timers[0][0] <= now:
            due, name = heapq.heappop(self._timers)
            if self._wake.get(name) == due:
                del self._wake[name]
                out.add(name)
        return out

    def _nova_changed(self, nova: Mapping[str, bool] | None) -> set[str]:
        old = self._nova or {}
        new = nova or {}
        if old == new:
            return set()
        return {h for h in old.keys() | new.keys() if old.get(h) != new.get(h)}

    def _schedule(self, snap, name: str, obs) -> None:
        if observe.timeless(snap, name):
            self._wake.pop(name, None)
            return
        ahead = detection.next_crossing(obs.heartbeat_age, self.policy)
        if ahead is None:
            self._wake.pop(name, None)
            return
        # woken at the crossing itself; the age must be *greater* than the window,
        # so a host woken right on it is decided once more at the next tick
        due = snap.taken_at + ahead
        self._wake[name] = due
        heapq.heappush(self._timers, (due, name))

    def _ask(self, obs, old: HostView | None):
        """The observation with the second source's answer, asked (asynchronously)
        while the host's agent looks dead; dropped once it does not."""
        if self.second_source is None:
            return obs
        if detection.asks_second_source(obs, self.policy, old):
            return dataclasses.replace(obs, second_source=self.second_source.want(obs.host))
        self.second_source.drop(obs.host)
        return obs

    # -- the tick ----------------------------------------------------------------
    def tick(self, act: bool = True) -> list[Transition]:
        snap = self.coordinator.snapshot()
        self.last_snapshot = snap
        nova = self.nova_states() if self.nova_states else None
        ctl = observe.controller(snap)
        trust = (ctl.session, detection.controller_settled(ctl, self.policy),
                 snap.watching_since)
        changed = None
        if self._rev is not None and trust == self._trust:
            changed = snap.changed_since(self._rev)
        answered = self.second_source.changed() if self.second_source is not None else set()
        if changed is not None:
            names = set(changed) | self._again | self._woken(snap.taken_at) \
                | self._nova_changed(nova) | answered
            self.touched = frozenset(names)
        else:
            self.full_ticks += 1
            names = set(snap.hosts) | set(snap.members) | set(self.views)
            self._timers, self._wake = [], {}
            self.touched = None
        self._rev, self._trust = snap.revision, trust
        self._nova = dict(nova) if nova else None

        updates: dict[str, HostView] = {}
        removed = []
        for name in sorted(names):
            obs = observe.host(snap, name, nova)
            old = self.views.get(name)
            if obs is None:
                if old is not None:
                    removed.append(name)
                self._wake.pop(name, None)
                if self.second_source is not None:
                    self.second_source.drop(name)
                continue
            obs = self._ask(obs, old)
            view = detection.decide(old, obs, ctl, self.policy, snap.taken_at)
            if self.second_source is not None and view.phase is Phase.FAILED:
                self.second_source.drop(name)  # decided: its answer changes nothing more
            self._schedule(snap, name, obs)
            if view != old:
                updates[name] = view
        self._again = {n for n, v in updates.items() if v.rejoined}
        transitions = []
        for host, view in updates.items():
            old = self.views.get(host)
            if old is None or old.phase is not view.phase or view.rejoined:
                t = Transition(host, old, view, snap.taken_at)
                transitions.append(t)
                LOG.info(
                    "host=%s phase=%s->%s rule=%s reason=%s",
                    host,
                    old.phase.value if old else "NEW",
                    view.phase.value,
                    view.rule,
                    view.reason,
                )
                if self.on_transition:
                    self.on_transition(t)
        for gone in removed:
            LOG.info("host=%s phase=%s->FORGOTTEN reason=no longer registered", gone,
                     self.views[gone].phase.value)
        if updates or removed:
            views = dict(self.views)
            for host, view in updates.items():
                old = views.get(host)
                if old is not None:
                    self.phases[old.phase].discard(host)
                self.phases[view.phase].add(host)
                views[host] = view
            for gone in removed:
                self.phases[views.pop(gone).phase].discard(gone)
            self.views = views
        if act:
            self.executor.act(self.views, snap.taken_at, snap.control, self.phases)
        return transitions
