"""The controller's view of the cluster: four children watches and what they name.

What is watched (kazoo's one-shot watches, each re-armed by the read that a
change makes necessary anyway; layout in ``zk_layout``):

* ``live`` (children): one entry per agent session holding a membership;
* ``stalls`` (children), and the data of each entry (few): stall reports;
* ``hosts`` (children): the provisioned slots;
* ``history`` (children), and the data of each entry (hosts fenced lately);
* the member node of every live host (data): its capabilities;
* the two control nodes (data).

A connection loss (kazoo drops every watch) or a new session costs four
re-lists, whatever the number of hosts, plus a read per host that changed
meanwhile: the view is current again after one refresh (``reads`` counts
these). Capabilities are refreshed behind it (their data watches re-armed
from the next refresh on, ``REARM_BATCH`` per refresh, counted as
``rearm_reads``); they tell DEGRADED from HEALTHY, never life from death.

Trust: an entry of ``live`` or ``stalls`` is believed only once verified
against the host's member node in its own slot (``zk_trust.Members``, which
also reports forgeries and tampering).

Liveness (``ClusterSnapshot.heartbeats``), on the controller's clock
(``zk_trust.liveness()``):

* member: ``ALIVE_NOW``; while its session reports a stall of ``S`` seconds
  (seen at ``t``): ``t - S``;
* membership gone, seen by a watch at ``t``: ``t - T`` (T: the session timeout
  it was granted; an agent closes its session on purpose only after marking a
  planned stop, so a loss without one is ZooKeeper's expiry, after T of
  silence), or earlier if it had reported a stall; found by a re-read: ``t``
  (proves nothing about when);
* provisioned and joined once, never seen a member by this view: when the
  view first saw it.
"""

from __future__ import annotations

import collections
import logging
import threading
import types
from collections.abc import Iterable
from typing import NamedTuple

from kazoo import exceptions as kz_exc
from kazoo.protocol.states import EventType

from instanceha.clock import Clock
from instanceha.coordination import base
from instanceha.coordination import zk_layout as L
from instanceha.coordination.zk_codec import loads
from instanceha.coordination.zk_control import ControlNode
from instanceha.coordination.zk_hosts import failures, record
from instanceha.coordination.zk_index import ChildrenIndex, Diff
from instanceha.coordination.zk_session import TRANSIENT, ZooKeeperSession
from instanceha.coordination.zk_trust import AlertLog, Members, liveness

__all__ = ["ClusterView", "liveness"]

LOG = logging.getLogger(__name__)

class ClusterView:
    def __init__(self, session: ZooKeeperSession, control: ControlNode,
                 consistency_interval: float = 60.0,
                 clock: Clock | None = None) -> None:
        self.session = session
        self.control_node = control
        self.clock = clock or session.clock
        self.changes = base.ChangeLog()
        self.counters: collections.Counter = collections.Counter()
        self.alerts = AlertLog(self.clock, self.counters)
        self.members = Members(session, self.clock, self.counters, self.alerts)
        self.index = Indexes(*(ChildrenIndex(session.client, session.path(parent), self.clock)
                               for parent in (L.HOSTS, L.LIVE, L.STALLS, L.HISTORY)))
        self._audit = ConsistencyAudit(consistency_interval, self.index)
        self.history = History(session)
        self._refresh_lock = threading.Lock()
        self._needs_resync = True
        self.watching_since: float | None = None
        # published (replaced, never mutated under a snapshot handed out)
        self._published = _Published()
        # what the view knows beside membership
        self._slot: dict[str, dict] = {}
        self._first_seen: dict[str, float] = {}
        self._control_dirty = True  # (kazoo's thread)
        session.add_state_listener(self._on_state)

    # -- kazoo's thread: record facts only, never block ------------------------------------
    def _on_state(self, state: base.ConnectionState) -> None:
        self._needs_resync = True  # kazoo dropped every watch

    def _on_control(self, event) -> None:
        if event.type != EventType.NONE:
            self.counters["watch_events"] += 1
            self._control_dirty = True

    # -- the snapshot ------------------------------------------------------------------------
    def snapshot(self) -> base.ClusterSnapshot:
        with self._refresh_lock:
            if self.session.connected:
                try:
                    self._refresh()
                except TRANSIENT:
                    self._needs_resync = True
            p = self._published
            return base.ClusterSnapshot(
                taken_at=self.clock.monotonic(),
                state=self.session.state,
                connected_since=self.session.connected_since,
                watching_since=self.watching_since,
                hosts=types.MappingProxyType(p.hosts),
                members=types.MappingProxyType(p.members),
                heartbeats=types.MappingProxyType(p.alive),
                control=types.MappingProxyType(p.control),
                revision=self.changes.revision,
                changes=self.changes,
                provisioned=p.provisioned,
                alerts=tuple(self.alerts.kept),
            )

    def _refresh(self) -> None:
        resync = self._needs_resync
        if resync:
            self._needs_resync = False
            self.watching_since = None
            for index in self.index:
                index.invalidate()
            self._control_dirty = True
            self.members.resync()
            self.history.resync()
            self.counters["resyncs"] += 1
        now = self.clock.monotonic()
        if self._control_dirty:
            self._control_dirty = False
            self._published.control = self.control_node.read(watch=self._on_control)
        if self._audit.due(now):
            self.members.audit()
        changed: set[str] = set()
        changed |= self._apply_slots(self._poll(self.index.slots), now)
        changed |= self.history.apply(self._poll(self.index.history), self.index.history.names)
        changed |= self._apply_live(self._poll(self.index.live), now)
        changed |= self.members.apply_stalls(self._poll(self.index.stalls), now)
        # the re-listing refresh publishes the lists at once; the capabilities'
        # watches are re-armed from the next one on (they never tell life from death)
        changed |= self.members.member_changes(rearm_watches=not resync)
        self._settle(changed)
        if resync or self.watching_since is None:
            self.watching_since = self.clock.monotonic()

    def _poll(self, index: ChildrenIndex) -> Diff:
        diff = index.poll()
        if self._audit.auditing and diff:
            self.counters["repairs"] += 1
            LOG.warning("consistency read: %s differed from the watched view (+%d -%d) and "
                        "no watch event had said so; corrected", index.path, len(diff.added),
                        len(diff.removed))
        return diff

    # -- slots and history ------------------------------------------------------------------------
    def _apply_slots(self, diff: Diff, now: float) -> set[str]:
        if not diff:
            return set()
        self._published.provisioned = frozenset(self.index.slots.names)
        changed = set(diff.removed)
        for host in diff.removed:
            self._forget(host)
        changed |= self._read_slots(diff.added, now)
        return changed

    def _read_slots(self, hosts: Iterable[str], now: float) -> set[str]:
        pending = {h: self.session.client.get_async(self.session.path(L.HOSTS, h))
                   for h in hosts}
        self.counters["reads"] += len(pending)
        changed = set()
        for host, result in pending.items():
            try:
                raw, _ = result.get()
            except kz_exc.NoNodeError:
                continue
            data = loads(raw)
            if self._slot.get(host) != data:
                self._slot[host] = data
                changed.add(host)
                self._first_seen.setdefault(host, now)
        return changed

    def _forget(self, host: str) -> None:
        for book in (self._slot, self._first_seen):
            book.pop(host, None)
        self.members.forget(host)
        self.history.forget(host)

    def _apply_live(self, diff: Diff, now: float) -> set[str]:
        changed, lost = self.members.apply_live(diff, self.index.live.path, now)
        for host in changed:
            if self.members.present(host):
                self._first_seen.setdefault(host, now)
        self._read_slots(lost, now)  # a planned stop is marked before the session closes
        return changed

    # -- publishing -------------------------------------------------------------------------
    def _settle(self, changed: set[str]) -> None:
        if not changed:
            return
        p = self._published
        hosts, members, alive = dict(p.hosts), dict(p.members), dict(p.alive)
        for h in changed:
            slot = self._slot.get(h)
            if slot is None and not self.members.present(h):
                hosts.pop(h, None)
                members.pop(h, None)
                alive.pop(h, None)
                continue
            joined = self.members.joined(h) or (slot or {}).get("first_join")
            if joined:
                hosts[h] = record(h, slot or {}, {"failures": list(self.history.of(h))})
            else:
                hosts.pop(h, None)
            member = self.members.record(h)
            if member is not None:
                members[h] = member
            else:
                members.pop(h, None)
            value = self.members.liveness(h, self._first_seen.get(h),
                                          self.session.session_timeout) if joined else None
            if value is None:
                alive.pop(h, None)
            else:
                alive[h] = value
        p.hosts, p.members, p.alive = hosts, members, alive
        self.changes.record(changed)

    def stats(self) -> dict:
        p = self._published
        return dict(self.counters, hosts=len(p.hosts), members=len(p.members),
                    provisioned=len(p.provisioned), pending=self.members.pending())


class Indexes(NamedTuple):
    slots: ChildrenIndex
    live: ChildrenIndex
    stalls: ChildrenIndex
    history: ChildrenIndex


class History:
    """The hosts fenced lately (``history``): each entry's data, watched."""

    def __init__(self, session: ZooKeeperSession) -> None:
        self.session = session
        self._lock = threading.Lock()
        self._failures: dict[str, tuple[float, ...]] = {}
        self._events: set[str] = set()  # (kazoo's thread)

    def _on_entry(self, event) -> None:
        if event.type in (EventType.CHANGED, EventType.CREATED):
            with self._lock:
                self._events.add(event.path.rsplit("/", 1)[1])

    def resync(self) -> None:
        with self._lock:
            self._events |= set(self._failures)

    def forget(self, host: str) -> None:
        self._failures.pop(host, None)

    def of(self, host: str) -> tuple[float, ...]:
        return self._failures.get(host, ())

    def apply(self, diff: Diff, listed: frozenset[str]) -> set[str]:
        with self._lock:
            events, self._events = self._events, set()
        names = (set(diff.added) | events) & set(listed)
        for gone in diff.removed:
            self._failures.pop(gone, None)
        client = self.session.client
        pending = {h: client.get_async(self.session.path(L.HISTORY, h), watch=self._on_entry)
                   for h in names}
        changed = set(diff.removed)
        for host, result in pending.items():
            try:
                raw, _ = result.get()
            except kz_exc.NoNodeError:
                continue
            self._failures[host] = failures(loads(raw))
            changed.add(host)
        return changed


class _Published:
    """What snapshots hand out: each mapping is replaced, never mutated."""

    def __init__(self) -> None:
        self.hosts: dict[str, base.HostRecord] = {}
        self.members: dict[str, base.MemberRecord] = {}
        self.alive: dict[str, float] = {}
        self.control: dict = {}
        self.provisioned: frozenset[str] = frozenset()


class ConsistencyAudit:
    """The safety net: every ``interval`` the lists are read again and a pass
    of member reads starts (a batch per refresh). ``auditing``: this refresh
    is such a read, with nothing dirty before it, so any difference it finds
    is one no watch event had reported."""

    def __init__(self, interval: float, indexes: Indexes) -> None:
        self.interval = interval
        self.indexes = indexes
        self.auditing = False
        self._at: float | None = None

    def due(self, now: float) -> bool:
        self.auditing = False
        if self.interval <= 0:
            return False
        if self._at is None:
            self._at = now
            return False
        if now - self._at < self.interval:
            return False
        self._at = now
        self.auditing = not any(i.dirty for i in self.indexes)
        for index in self.indexes:
            index.invalidate()
        return True
