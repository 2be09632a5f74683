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
these). Capabilities are refreshed behind it (their data watches re-armed,
``REARM_BATCH`` per refresh, counted as ``rearm_reads``); they tell DEGRADED
from HEALTHY, never life from death.

Trust: an entry of ``live`` or ``stalls`` names a host, but any agent identity
may create one. The view believes it only once it has read the entry's owner
(its session) and the host's member node in the host's own slot, which only
that host's identity can create: same session, verified; another, forged
(ignored, counted, and reported as an alert the leader journals). When a
verified entry vanishes while the member node of the same session still
exists, someone deleted the entry, not ZooKeeper's expiry: the host stays a
member (its agent creates the entry again) and the tampering is reported.

Liveness (``ClusterSnapshot.heartbeats``), on the controller's clock
(``liveness()``):

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
import dataclasses
import logging
import threading
import types
from collections.abc import Iterable

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

LOG = logging.getLogger(__name__)

REARM_BATCH = 2000
"""Member data watches re-armed per refresh after a connection loss."""
ALERTS_KEPT = 200


def _number(value) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def liveness(present: bool, stall: tuple[float, float] | None,
             lost: tuple[float, bool] | None, session_timeout: float,
             first_seen: float | None) -> float | None:
    """The last instant a host is known alive (``ALIVE_NOW``: now). ``stall``:
    (stalled_for, seen at) of its session; ``lost``: (at, seen by a watch event)."""
    if present:
        return base.ALIVE_NOW if stall is None else stall[1] - stall[0]
    if lost is not None:
        at, by_event = lost
        if stall is not None:
            return min(stall[1] - stall[0], at)
        return at - session_timeout if by_event else at
    return first_seen


@dataclasses.dataclass
class _Entry:
    """An entry of ``live`` or ``stalls``."""

    host: str
    owner: int | None = None
    verified: bool | None = None
    """None: not read yet; False: forged (another session than the host's)."""
    stalled_for: float | None = None
    at: float = 0.0


@dataclasses.dataclass
class _Member:
    owner: int
    caps: dict
    czxid: int


class ClusterView:
    def __init__(self, session: ZooKeeperSession, control: ControlNode,
                 consistency_interval: float = 60.0,
                 clock: Clock | None = None) -> None:
        self.session = session
        self.client = session.client
        self.control_node = control
        self.clock = clock or session.clock
        self.consistency_interval = consistency_interval
        self.changes = base.ChangeLog()
        c = self.client
        self.slots = ChildrenIndex(c, session.path(L.HOSTS), self.clock)
        self.live = ChildrenIndex(c, session.path(L.LIVE), self.clock)
        self.stall_index = ChildrenIndex(c, session.path(L.STALLS), self.clock)
        self.history_index = ChildrenIndex(c, session.path(L.HISTORY), self.clock)
        self._indexes = (self.slots, self.live, self.stall_index, self.history_index)
        self._lock = threading.Lock()  # what kazoo's thread records
        self._refresh_lock = threading.Lock()
        self._needs_resync = True
        self.watching_since: float | None = None
        # published (replaced, never mutated under a snapshot handed out)
        self._hosts: dict[str, base.HostRecord] = {}
        self._members: dict[str, base.MemberRecord] = {}
        self._alive: dict[str, float] = {}
        self._control: dict = {}
        self._provisioned: frozenset[str] = frozenset()
        # what the view knows
        self._slot: dict[str, dict] = {}
        self._history: dict[str, tuple[float, ...]] = {}
        self._live: dict[str, _Entry] = {}
        self._stalls: dict[str, _Entry] = {}
        self._member: dict[str, _Member] = {}
        self._present: dict[str, int] = {}  # host -> the owner session of its membership
        self._lost: dict[str, tuple[float, bool, int]] = {}  # at, seen by an event, owner
        self._stall_now: dict[str, tuple[int, float, float]] = {}  # host -> owner, S, seen at
        self._timeout: dict[str, float] = {}
        self._first_seen: dict[str, float] = {}
        # recorded by kazoo's thread
        self._member_events: dict[str, bool] = {}  # host -> a deletion was seen
        self._stall_events: set[str] = set()
        self._history_events: set[str] = set()
        self._control_dirty = True
        self._unwatched: set[str] = set()
        self._audit_at: float | None = None
        self._auditing = False
        self.alerts: collections.deque = collections.deque(maxlen=ALERTS_KEPT)
        self._alert_seq = 0
        self.counters: collections.Counter = collections.Counter()
        session.add_state_listener(self._on_state)

    # -- kazoo's thread: record facts only, never block ------------------------------------
    def _on_state(self, state: base.ConnectionState) -> None:
        self._needs_resync = True  # kazoo dropped every watch

    def _on_member(self, event) -> None:
        if event.type == EventType.NONE:
            return
        host = event.path.rsplit("/", 2)[-2]
        self.counters["watch_events"] += 1
        with self._lock:
            deleted = self._member_events.get(host, False)
            self._member_events[host] = deleted or event.type == EventType.DELETED

    def _on_stall(self, event) -> None:
        if event.type in (EventType.CHANGED, EventType.DELETED):
            self.counters["watch_events"] += 1
            with self._lock:
                self._stall_events.add(event.path.rsplit("/", 1)[1])

    def _on_history(self, event) -> None:
        if event.type in (EventType.CHANGED, EventType.CREATED):
            with self._lock:
                self._history_events.add(event.path.rsplit("/", 1)[1])

    def _on_control(self, event) -> None:
        if event.type != EventType.NONE:
            self.counters["watch_events"] += 1
            self._control_dirty = True

    # -- paths -------------------------------------------------------------------------------
    def _member_path(self, host: str) -> str:
        return self.session.path(L.HOSTS, host, L.MEMBER)

    # -- alerts ------------------------------------------------------------------------------
    def _alert(self, kind: str, host: str, detail: str) -> None:
        self._alert_seq += 1
        self.counters[kind] += 1
        self.alerts.append(base.Alert(self._alert_seq, self.clock.monotonic(), kind, host, detail))
        LOG.error("TAMPERING (%s) about %s: %s", kind, host, detail)

    # -- the snapshot ------------------------------------------------------------------------
    def snapshot(self) -> base.ClusterSnapshot:
        with self._refresh_lock:
            if self.session.connected:
                try:
                    self._refresh()
                except TRANSIENT:
                    self._needs_resync = True
            return base.ClusterSnapshot(
                taken_at=self.clock.monotonic(),
                state=self.session.state,
                connected_since=self.session.connected_since,
                watching_since=self.watching_since,
                hosts=types.MappingProxyType(self._hosts),
                members=types.MappingProxyType(self._members),
                heartbeats=types.MappingProxyType(self._alive),
                control=types.MappingProxyType(self._control),
                revision=self.changes.revision,
                changes=self.changes,
                provisioned=self._provisioned,
                alerts=tuple(self.alerts),
            )

    def _refresh(self) -> None:
        resync = self._needs_resync
        if resync:
            self._needs_resync = False
            self.watching_since = None
            for index in self._indexes:
                index.invalidate()
            self._control_dirty = True
            self._unwatched |= set(self._member)
            with self._lock:
                self._stall_events |= set(self._stalls)
                self._history_events |= set(self._history)
            self.counters["resyncs"] += 1
        now = self.clock.monotonic()
        if self._control_dirty:
            self._control_dirty = False
            self._control = self.control_node.read(watch=self._on_control)
        self._audit(now)
        changed: set[str] = set()
        changed |= self._apply_slots(self._poll(self.slots), now)
        changed |= self._apply_history(self._poll(self.history_index))
        changed |= self._apply_live(self._poll(self.live), now)
        changed |= self._apply_stalls(self._poll(self.stall_index), now)
        changed |= self._member_changes(now)
        self._settle(changed, now)
        if resync or self.watching_since is None:
            self.watching_since = self.clock.monotonic()

    def _poll(self, index: ChildrenIndex) -> Diff:
        diff = index.poll()
        if self._auditing and diff:
            self.counters["repairs"] += 1
            LOG.warning("consistency read: %s differed from the watched view (+%d -%d) and "
                        "no watch event had said so; corrected", index.path, len(diff.added),
                        len(diff.removed))
        return diff

    def _audit(self, now: float) -> None:
        """The safety net: every ``consistency_interval`` the lists are read
        again and a pass of member reads starts (a batch per refresh)."""
        self._auditing = False
        if self.consistency_interval <= 0:
            return
        if self._audit_at is None:
            self._audit_at = now
            return
        if now - self._audit_at < self.consistency_interval:
            return
        self._audit_at = now
        self._auditing = not any(i.dirty for i in self._indexes)
        for index in self._indexes:
            index.invalidate()
        self._unwatched |= set(self._present)

    # -- slots and history ------------------------------------------------------------------------
    def _apply_slots(self, diff: Diff, now: float) -> set[str]:
        if not diff:
            return set()
        self._provisioned = frozenset(self.slots.names)
        changed = set(diff.removed)
        for host in diff.removed:
            self._forget(host)
        changed |= self._read_slots(diff.added, now)
        return changed

    def _read_slots(self, hosts: Iterable[str], now: float) -> set[str]:
        pending = {h: self.client.get_async(self.session.path(L.HOSTS, h)) for h in hosts}
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
        for book in (self._slot, self._member, self._present, self._lost, self._stall_now,
                     self._timeout, self._first_seen, self._history):
            book.pop(host, None)
        self._unwatched.discard(host)

    def _apply_history(self, diff: Diff) -> set[str]:
        with self._lock:
            events, self._history_events = self._history_events, set()
        names = (set(diff.added) | events) & set(self.history_index.names)
        for gone in diff.removed:
            self._history.pop(gone, None)
        pending = {h: self.client.get_async(self.session.path(L.HISTORY, h),
                                            watch=self._on_history) for h in names}
        changed = set(diff.removed)
        for host, result in pending.items():
            try:
                raw, _ = result.get()
            except kz_exc.NoNodeError:
                continue
            self._history[host] = failures(loads(raw))
            changed.add(host)
        return changed

    # -- membership -------------------------------------------------------------------------
    def _apply_live(self, diff: Diff, now: float) -> set[str]:
        if not diff:
            return set()
        changed: set[str] = set()
        vanished = []
        for name in diff.removed:
            entry = self._live.pop(name, None)
            if entry is not None and entry.verified:
                vanished.append(entry)
        added = {}
        for name in diff.added:
            parsed = L.parse_index(name)
            if parsed is None:
                self._alert("foreign-index-entry", name, f"{self.live.path}/{name} is not "
                            "an entry instanceha writes; ignored")
                continue
            added[name] = self._live[name] = _Entry(parsed[0])
        changed |= self._verify(added, self.session.path(L.LIVE), "membership")
        for entry in vanished:
            changed |= self._vanished(entry, diff.removed_at, now)
        return changed

    def _verify(self, entries: dict[str, _Entry], parent: str, what: str) -> set[str]:
        """Read each entry's owner and its host's member node; trust the entry
        when both belong to the same session."""
        owners = {n: self.client.exists_async(f"{parent}/{n}") for n in entries}
        hosts = {e.host for e in entries.values()}
        members = {h: self.client.get_async(self._member_path(h), watch=self._on_member)
                   for h in hosts}
        self.counters["reads"] += len(owners) + len(members)
        for host, result in members.items():
            self._store_member(host, result)
        changed = set()
        for name, result in owners.items():
            entry = entries[name]
            stat = result.get()
            if stat is None:
                continue  # gone meanwhile: the next list says so
            entry.owner = stat.ephemeralOwner
            member = self._member.get(entry.host)
            entry.verified = member is not None and member.owner == entry.owner
            if not entry.verified:
                self._alert(f"forged-{what}", entry.host, f"{parent}/{name} belongs to session "
                            f"0x{entry.owner:x}, not to the session holding "
                            f"{entry.host}'s member node "
                            f"({'none' if member is None else f'0x{member.owner:x}'}); ignored")
                continue
            if what == "membership" and self._present.get(entry.host) != entry.owner:
                self._present[entry.host] = entry.owner
                self._lost.pop(entry.host, None)
                self._first_seen.setdefault(entry.host, self.clock.monotonic())
                changed.add(entry.host)
        return changed

    def _store_member(self, host: str, result) -> bool:
        """Store a member node read; True when what the view knows changed."""
        try:
            raw, stat = result.get()
        except kz_exc.NoNodeError:
            self.client.exists_async(self._member_path(host), watch=self._on_member)
            return self._member.pop(host, None) is not None
        caps = loads(raw)
        member = _Member(stat.ephemeralOwner, caps, stat.czxid)
        timeout = _number(caps.get(base.SESSION_TIMEOUT))
        if timeout is not None:
            self._timeout[host] = timeout
        old = self._member.get(host)
        self._member[host] = member
        return old != member

    def _vanished(self, entry: _Entry, at: float | None, now: float) -> set[str]:
        host, owner = entry.host, entry.owner
        if owner is None or self._present.get(host) != owner:
            return set()
        # a session's ephemeral nodes go together (one transaction closes it): an
        # entry gone while another node of its session stands was deleted by a client
        alive = any(e.host == host and e.owner == owner and e.verified
                    for e in self._live.values())
        if not alive:
            stat = self.client.exists(self._member_path(host))
            self.counters["reads"] += 1
            alive = stat is not None and stat.ephemeralOwner == owner
        if alive:
            self._alert("tampered-membership", host, f"its index entry was deleted while its "
                        f"session 0x{owner:x} lives; still a member, its agent creates the "
                        "entry again")
            return set()
        del self._present[host]
        self._lost[host] = (at, True, owner) if at is not None else (now, False, owner)
        self._read_slots([host], now)  # a planned stop is marked before the session closes
        return {host}

    def _member_changes(self, now: float) -> set[str]:
        """Member nodes whose watch fired, and a batch of those whose watch is gone."""
        with self._lock:
            events, self._member_events = self._member_events, {}
        batch = set(events)
        rearm: set[str] = set()
        while self._unwatched and len(rearm) < REARM_BATCH:
            host = self._unwatched.pop()
            if host in self._present:
                rearm.add(host)
        batch = {h for h in batch if h in self._present or h in self._member} | rearm
        pending = {h: self.client.get_async(self._member_path(h), watch=self._on_member)
                   for h in batch}
        self.counters["reads"] += len(batch - rearm)
        self.counters["rearm_reads"] += len(batch & rearm)
        changed = set()
        for host, result in pending.items():
            owner = self._present.get(host)
            if self._store_member(host, result):
                changed.add(host)
            if events.get(host) and owner is not None and self._session_lives(host, owner):
                self._alert("tampered-membership", host, "its member node was deleted while "
                            f"its session 0x{owner:x} lives; its agent creates it again")
        return changed

    def _session_lives(self, host: str, owner: int) -> bool:
        """An index entry of ``owner``'s session still exists (read now): its
        member node's deletion was a client's, not the session's end (which
        removes both in one transaction; its list event may not be here yet)."""
        names = [n for n, e in self._live.items() if e.host == host and e.owner == owner]
        for name in names:
            self.counters["reads"] += 1
            stat = self.client.exists(self.session.path(L.LIVE, name))
            if stat is not None and stat.ephemeralOwner == owner:
                return True
        return False

    # -- stalls -----------------------------------------------------------------------------
    def _apply_stalls(self, diff: Diff, now: float) -> set[str]:
        changed = set()
        for name in diff.removed:
            entry = self._stalls.pop(name, None)
            if entry is not None and entry.verified:
                changed.add(entry.host)
        added = {}
        for name in diff.added:
            parsed = L.parse_index(name)
            if parsed is not None:
                added[name] = self._stalls[name] = _Entry(parsed[0])
        with self._lock:
            events, self._stall_events = self._stall_events, set()
        reread = (events & set(self._stalls)) | set(added)
        pending = {n: self.client.get_async(self.session.path(L.STALLS, n), watch=self._on_stall)
                   for n in reread}
        self.counters["reads"] += len(pending)
        for name, result in pending.items():
            entry = self._stalls[name]
            try:
                raw, stat = result.get()
            except kz_exc.NoNodeError:
                continue
            if entry.owner is None:
                entry.owner = stat.ephemeralOwner
                member = self._member.get(entry.host)
                entry.verified = member is not None and member.owner == entry.owner
                if not entry.verified:
                    self._alert("forged-stall", entry.host, f"{name} belongs to session "
                                f"0x{entry.owner:x}, not to {entry.host}'s; ignored")
            if not entry.verified:
                continue
            stalled = _number(loads(raw).get(base.STALLED_FOR))
            if stalled != entry.stalled_for:
                entry.stalled_for, entry.at = stalled, now
                if stalled is None:
                    self._stall_now.pop(entry.host, None)
                else:
                    self._stall_now[entry.host] = (entry.owner, stalled, now)
                changed.add(entry.host)
        return changed

    def _stall_of(self, host: str, owner: int | None) -> tuple[float, float] | None:
        """The stall last reported by ``owner``'s session (kept after it ends)."""
        found = self._stall_now.get(host)
        return (found[1], found[2]) if found is not None and found[0] == owner else None

    # -- publishing -------------------------------------------------------------------------
    def _settle(self, changed: set[str], now: float) -> None:
        if not changed:
            return
        hosts, members, alive = dict(self._hosts), dict(self._members), dict(self._alive)
        for h in changed:
            slot = self._slot.get(h)
            if slot is None and h not in self._present:
                hosts.pop(h, None)
                members.pop(h, None)
                alive.pop(h, None)
                continue
            joined = h in self._present or h in self._lost or (slot or {}).get("first_join")
            if joined:
                hosts[h] = record(h, slot or {}, {"failures": list(self._history.get(h, ()))})
            else:
                hosts.pop(h, None)
            owner = self._present.get(h)
            member = self._member.get(h)
            if owner is not None:
                caps = member.caps if member is not None and member.owner == owner else {}
                members[h] = base.MemberRecord(member_id=h, incarnation=owner, capabilities=caps)
            else:
                members.pop(h, None)
            lost = self._lost.get(h)
            stall = self._stall_of(h, owner if owner is not None else
                                   (lost[2] if lost is not None else None))
            value = liveness(owner is not None, stall, lost[:2] if lost else None,
                             self._timeout.get(h, self.session.session_timeout),
                             self._first_seen.get(h)) if joined else None
            if value is None:
                alive.pop(h, None)
            else:
                alive[h] = value
        self._hosts, self._members, self._alive = hosts, members, alive
        self.changes.record(changed)

    def stats(self) -> dict:
        return dict(self.counters, hosts=len(self._hosts), members=len(self._members),
                    provisioned=len(self._provisioned), pending=len(self._unwatched))
