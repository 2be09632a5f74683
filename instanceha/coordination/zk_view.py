"""The controller's view of the cluster, kept by watches on changes only.

What is watched, with kazoo's one-shot watches (kazoo 2.11 has no persistent
watches), each re-armed by the read that a change makes necessary anyway:

* ``<root>/hosts`` (children): a host registered or forgotten, the only
  event that costs a read of the whole list;
* ``<root>/hosts/<host>`` (data): planned stop, recent fences;
* ``<root>/members/<host>`` (exists/data) of every registered host: join,
  leave, expiry, capabilities, a stall the agent's watchdog reports;
* ``<root>/heartbeats/<host>`` (exists) only for members that announce
  ``liveness = heartbeat`` (the mechanism before);
* ``<root>/control`` (data): the operators' switches.

A steady cluster sends no event at all: a member's liveness is its session,
which ZooKeeper keeps with pings that change nothing. Watch callbacks run on
kazoo's thread and only record facts (a name, the time of an event); every
read happens in the caller's thread in ``snapshot()``, which applies what
changed and appends the changed hosts to a :class:`ChangeLog`, so that the
controller re-decides only those.

Liveness (``ClusterSnapshot.heartbeats``) as this view derives it, on the
controller's clock:

* member with ``liveness = session``: ``ALIVE_NOW``; while its watchdog
  reports ``stalled_for = S`` (written when the event arrived at ``t``):
  ``t - S``;
* member gone, its deletion seen by a watch at ``t``: when it had reported a
  stall, as above; else ``t - T``, T the session timeout it was granted: an
  agent only ever closes its session on purpose after marking a planned
  stop, so a deletion without one is ZooKeeper's expiry, which comes after T
  without a packet from the agent; a deletion found by a read, not by an
  event, proves nothing (``t``);
* ``liveness = heartbeat``: when the data heartbeat last changed.

Safety net: every ``consistency_interval`` seconds each host's registry entry
and membership are read again (a slice per refresh, not all at once) and the
lists compared; a difference no event explains is corrected and logged.
kazoo drops every watch on a connection loss: the next refresh re-reads
everything and re-arms each watch (level-triggered).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import types
from collections.abc import Callable, Iterable

from kazoo import exceptions as kz_exc
from kazoo.protocol.states import EventType

from instanceha.coordination import base
from instanceha.coordination.zk_control import ControlNode
from instanceha.coordination.zk_hosts import HOSTS, record
from instanceha.coordination.zk_members import HEARTBEATS, MEMBERS
from instanceha.coordination.zk_session import TRANSIENT, ZooKeeperSession, loads

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class _Seen:
    """The last state of a host's membership this view read."""

    caps: dict
    at: float
    """When it was written (the watch event's arrival) or, without an event, read."""


def _number(value) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


class ClusterView:
    def __init__(self, session: ZooKeeperSession, control: ControlNode,
                 consistency_interval: float = 60.0,
                 clock: Callable[[], float] | None = None) -> None:
        self.session = session
        self.client = session.client
        self.control_node = control
        self.clock = clock or session.clock
        self.consistency_interval = consistency_interval
        self.changes = base.ChangeLog()
        self._lock = threading.Lock()  # what kazoo's thread records
        self._refresh_lock = threading.Lock()  # one refresh at a time
        self._needs_resync = True
        self.watching_since: float | None = None
        # published: replaced (copied) by the refresh that changes them, never
        # mutated under a snapshot already handed out
        self._hosts: dict[str, base.HostRecord] = {}
        self._members: dict[str, base.MemberRecord] = {}
        self._alive: dict[str, float] = {}
        self._control: dict = {}
        # bookkeeping
        self._watched: set[str] = set()  # hosts whose membership is watched
        self._beating: set[str] = set()  # members whose data heartbeat is watched
        self._seen: dict[str, _Seen] = {}  # last membership data, kept after it is gone
        self._lost: dict[str, tuple[float, bool]] = {}  # gone: (when, seen by an event)
        self._first_seen: dict[str, float] = {}
        # recorded by kazoo's thread
        self._p_list = True
        self._p_control = True
        self._p_hosts: set[str] = set()
        self._p_members: set[str] = set()
        self._p_beats: set[str] = set()
        self._event_at: dict[str, float] = {}  # membership created/changed: when
        self._gone_at: dict[str, float] = {}  # membership deleted: when
        self._beat_at: dict[str, float] = {}
        self._events: collections.Counter = collections.Counter()  # per host
        # the consistency read
        self._audit: list[str] = []
        self._audit_owed = 0.0
        self._audit_last: float | None = None
        self._lists_at: float | None = None
        self._suspect: dict[str, int] = {}
        self.counters = collections.Counter()
        session.add_state_listener(self._on_state)

    def _on_state(self, state: base.ConnectionState) -> None:
        # kazoo drops every watch on any connection loss: re-arm at next refresh
        self._needs_resync = True

    # -- paths ---------------------------------------------------------------
    def _host_path(self, h: str) -> str:
        return self.session.path(HOSTS, h)

    def _member_path(self, h: str) -> str:
        return self.session.path(MEMBERS, h)

    # -- watches: record facts only, never block -------------------------------
    def _on_hosts_list(self, event) -> None:
        if event.type != EventType.NONE:
            self.counters["watch_events"] += 1
            with self._lock:
                self._p_list = True

    def _on_control(self, event) -> None:
        if event.type != EventType.NONE:
            self.counters["watch_events"] += 1
            with self._lock:
                self._p_control = True

    def _on_host(self, event) -> None:
        if event.type in (EventType.CHANGED, EventType.DELETED):
            name = event.path.rsplit("/", 1)[1]
            self.counters["watch_events"] += 1
            with self._lock:
                self._p_hosts.add(name)
                self._events[name] += 1

    def _on_member(self, event) -> None:
        if event.type == EventType.NONE:
            return
        name = event.path.rsplit("/", 1)[1]
        now = self.clock()
        self.counters["watch_events"] += 1
        with self._lock:
            self._p_members.add(name)
            self._events[name] += 1
            if event.type == EventType.DELETED:
                self._gone_at[name] = now
            else:
                self._event_at[name] = now
                self._gone_at.pop(name, None)

    def _on_beat(self, event) -> None:
        if event.type == EventType.NONE:
            return  # connection lost: the next refresh re-arms every watch
        name = event.path.rsplit("/", 1)[1]
        self.counters["watch_events"] += 1
        if event.type in (EventType.CHANGED, EventType.CREATED):
            now = self.clock()
            with self._lock:
                self._beat_at[name] = now
                self._p_beats.add(name)
        if self.session.connected and name in self._beating:
            self._arm_beat(name)

    def _arm_beat(self, name: str) -> None:
        try:
            self.client.exists_async(self.session.path(HEARTBEATS, name), watch=self._on_beat)
        except (kz_exc.ConnectionClosedError, kz_exc.ConnectionLoss):
            self._needs_resync = True

    # -- the snapshot ------------------------------------------------------------
    def snapshot(self) -> base.ClusterSnapshot:
        with self._refresh_lock:
            if self.session.connected:
                try:
                    self._refresh()
                except TRANSIENT:
                    self._needs_resync = True
            return base.ClusterSnapshot(
                taken_at=self.clock(),
                state=self.session.state,
                connected_since=self.session.connected_since,
                watching_since=self.watching_since,
                hosts=types.MappingProxyType(self._hosts),
                members=types.MappingProxyType(self._members),
                heartbeats=types.MappingProxyType(self._alive),
                control=types.MappingProxyType(self._control),
                revision=self.changes.revision,
                changes=self.changes,
            )

    def _refresh(self) -> None:
        if self._needs_resync:
            self._needs_resync = False
            self._resync()
            return
        self._cow: set[str] = set()
        with self._lock:
            hosts, self._p_hosts = self._p_hosts, set()
            members, self._p_members = self._p_members, set()
            beats, self._p_beats = self._p_beats, set()
            p_list, self._p_list = self._p_list, False
            p_control, self._p_control = self._p_control, False
        if p_control:
            self._control = self.control_node.read(watch=self._on_control)
        changed: set[str] = beats & self._beating
        if p_list:
            names = set(self.client.get_children(self.session.path(HOSTS),
                                                 watch=self._on_hosts_list))
            new = names - set(self._hosts)
            for gone in set(self._hosts) - names:
                self._w("_hosts").pop(gone, None)
                changed.add(gone)
                if gone not in self._members:
                    self._watched.discard(gone)
            hosts |= new
            members |= new - self._watched
        now = self.clock()
        changed |= self._read_hosts(hosts, now)
        changed |= self._read_members(members, now)
        changed |= self._consistency(now)
        self._settle(changed, now)

    def _w(self, name: str) -> dict:
        """The published dict ``name``, copied once per refresh before a change."""
        if name not in self._cow:
            setattr(self, name, dict(getattr(self, name)))
            self._cow.add(name)
        return getattr(self, name)

    def _settle(self, changed: set[str], now: float) -> None:
        """Recompute the liveness of ``changed`` hosts and log the changes."""
        for h in changed:
            if h not in self._hosts and h not in self._members:  # forgotten
                for book in (self._seen, self._lost, self._first_seen):
                    book.pop(h, None)
                self._watched.discard(h)
                self._beating.discard(h)
                with self._lock:
                    self._beat_at.pop(h, None)
                    self._events.pop(h, None)
                if h in self._alive:
                    self._w("_alive").pop(h)
                continue
            alive = self._liveness(h)
            if alive != self._alive.get(h):
                if alive is None:
                    self._w("_alive").pop(h, None)
                else:
                    self._w("_alive")[h] = alive
        self.changes.record(changed)

    def _resync(self) -> None:
        self.watching_since = None
        with self._lock:
            self._p_hosts, self._p_members, self._p_beats = set(), set(), set()
            self._p_list = self._p_control = False
        self._cow = set()
        self._beating = set()
        self._control = self.control_node.read(watch=self._on_control)
        names = set(self.client.get_children(self.session.path(HOSTS),
                                             watch=self._on_hosts_list))
        now = self.clock()
        for gone in set(self._hosts) - names:
            self._w("_hosts").pop(gone)
        self._watched = set(names) | (self._watched & set(self._members))
        self._read_hosts(names, now)
        self._read_members(set(self._watched), now, resync=True)
        for h in set(self._alive) - set(self._hosts) - set(self._members):
            self._w("_alive").pop(h)
        self._settle(set(self._hosts) | set(self._members), now)
        self.changes.reset()
        self._audit = []
        self.watching_since = self.clock()
        self.counters["resyncs"] += 1

    # -- reads ---------------------------------------------------------------------
    def _read_hosts(self, names: Iterable[str], now: float) -> set[str]:
        names = list(names)
        pending = {h: self.client.get_async(self._host_path(h), watch=self._on_host)
                   for h in names}
        self.counters["reads"] += len(pending)
        changed = set()
        for h, res in pending.items():
            try:
                raw, _ = res.get()
            except kz_exc.NoNodeError:
                if h in self._hosts:
                    self._w("_hosts").pop(h)
                    changed.add(h)
                continue
            rec = record(h, raw)
            if self._hosts.get(h) != rec:
                if h not in self._hosts:
                    # a host first seen now gets one full window from now, never
                    # from when this controller started watching
                    self._first_seen.setdefault(h, now)
                    self._watched.add(h)
                self._w("_hosts")[h] = rec
                changed.add(h)
        return changed

    def _read_members(self, names: Iterable[str], now: float,
                      resync: bool = False) -> set[str]:
        names = [m for m in names if m in self._watched or m in self._members]
        pending = {m: self.client.get_async(self._member_path(m), watch=self._on_member)
                   for m in names}
        changed, absent = set(), []
        for m, res in pending.items():
            try:
                raw, stat = res.get()
            except kz_exc.NoNodeError:
                absent.append(m)
                continue
            changed |= self._present(m, loads(raw), stat, now, resync)
        # a missing node keeps no data watch: an exists watch sees it come
        probes = {m: self.client.exists_async(self._member_path(m), watch=self._on_member)
                  for m in absent}
        self.counters["reads"] += len(pending) + len(probes)
        for m, res in probes.items():
            if res.get() is not None:
                with self._lock:
                    self._p_members.add(m)  # created meanwhile: read at next refresh
            changed |= self._absent(m, now, resync)
        return changed

    def _present(self, m: str, caps: dict, stat, now: float, resync: bool) -> set[str]:
        with self._lock:
            at = self._event_at.pop(m, None)
            self._gone_at.pop(m, None)
        old_seen = self._seen.get(m)
        old = self._members.get(m)
        if at is None:  # no event: keep the time of the data we already had
            at = old_seen.at if old_seen is not None and old_seen.caps == caps else now
        self._seen[m] = _Seen(caps=caps, at=at)
        self._lost.pop(m, None)
        self._first_seen.setdefault(m, now)
        rec = base.MemberRecord(member_id=m, incarnation=stat.czxid, capabilities=caps)
        if _session_mode(caps):
            self._beating.discard(m)
        else:
            if old is None or old.incarnation != rec.incarnation:
                # a join is a sign of life: its heartbeat window starts there
                with self._lock:
                    self._beat_at[m] = max(self._beat_at.get(m, at), at)
            if resync or m not in self._beating:
                self._beating.add(m)
                self._arm_beat(m)
        if old == rec and old_seen is not None and old_seen.at == at:
            return set()
        self._w("_members")[m] = rec
        return {m}

    def _absent(self, m: str, now: float, resync: bool) -> set[str]:
        with self._lock:
            at = self._gone_at.pop(m, None)
            self._event_at.pop(m, None)
        if m not in self._members:
            return set()
        self._w("_members").pop(m)
        self._lost[m] = (at, True) if at is not None and not resync else (now, False)
        return {m}

    def _liveness(self, h: str) -> float | None:
        member = self._members.get(h)
        seen = self._seen.get(h)
        if member is not None:
            caps = member.capabilities
            if _session_mode(caps):
                stalled = _number(caps.get(base.STALLED_FOR))
                return base.ALIVE_NOW if stalled is None else seen.at - stalled
            return self._beat_at.get(h, self._first_seen.get(h))
        lost = self._lost.get(h)
        if seen is not None and _session_mode(seen.caps) and lost is not None:
            at, by_event = lost
            stalled = _number(seen.caps.get(base.STALLED_FOR))
            if stalled is not None:
                return min(seen.at - stalled, at)
            vouched = _number(seen.caps.get(base.SESSION_TIMEOUT)) or 0.0
            return at - vouched if by_event else at
        if h in self._beat_at:
            return self._beat_at[h]
        return self._first_seen.get(h)

    # -- the consistency read (safety net) -------------------------------------------
    def _consistency(self, now: float) -> set[str]:
        changed = set()
        if self._suspect:
            with self._lock:
                events = dict(self._events)
            for h, count in list(self._suspect.items()):
                del self._suspect[h]
                if events.get(h, 0) == count:
                    self.counters["repairs"] += 1
                    LOG.warning("consistency read: %s differed from the watched view and no "
                                "watch event followed (one was missed); corrected", h)
        if self.consistency_interval <= 0:
            return changed
        if self._lists_at is None or now - self._lists_at >= self.consistency_interval:
            self._lists_at = now
            changed |= self._compare_lists(now)
        if self._audit_last is None:
            self._audit_last = now
            return changed
        n = len(self._watched)
        self._audit_owed = min(self._audit_owed + n * (now - self._audit_last)
                               / self.consistency_interval, float(n))
        self._audit_last = now
        take = int(self._audit_owed)
        if not take:
            return changed
        self._audit_owed -= take
        batch = []
        while len(batch) < take:
            if not self._audit:
                self._audit = sorted(self._watched, reverse=True)
                if not self._audit:
                    break
            batch.append(self._audit.pop())
        with self._lock:
            busy = self._p_hosts | self._p_members
            counts = {h: self._events.get(h, 0) for h in batch}
        batch = [h for h in batch if h not in busy]
        self.counters["audited"] += len(batch)
        before = {h: (self._hosts.get(h), self._members.get(h)) for h in batch}
        found = self._read_hosts(batch, now) | self._read_members(batch, now)
        for h in found:
            if before.get(h, (None, None)) != (self._hosts.get(h), self._members.get(h)):
                self._suspect[h] = counts.get(h, 0)
        return changed | found

    def _compare_lists(self, now: float) -> set[str]:
        """Registry and membership lists against the view (two reads)."""
        hosts = set(self.client.get_children(self.session.path(HOSTS),
                                             watch=self._on_hosts_list))
        members = set(self.client.get_children(self.session.path(MEMBERS)))
        self.counters["reads"] += 2
        differ = (hosts ^ set(self._hosts)) | (members ^ set(self._members))
        if not differ:
            return set()
        with self._lock:
            counts = {h: self._events.get(h, 0) for h in differ}
            busy = self._p_hosts | self._p_members
            self._p_list = self._p_list or hosts != set(self._hosts)
            self._p_members |= differ & (members | self._watched)
        for h in differ:
            if h not in busy:
                self._suspect[h] = counts[h]
        self._watched |= members - self._watched  # a member without a registry entry
        return set()

    def stats(self) -> dict:
        with self._lock:
            pending = len(self._p_hosts) + len(self._p_members)
        return dict(self.counters, hosts=len(self._hosts), members=len(self._members),
                    pending=pending)


def _session_mode(caps) -> bool:
    return caps.get(base.LIVENESS) == base.SESSION
