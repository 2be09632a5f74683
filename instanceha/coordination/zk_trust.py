"""Which hosts are members, believed only once verified; their stalls; tampering.

An entry of ``live`` or ``stalls`` names a host, but any agent identity may
create one (``zk_layout``). ``Members`` believes an entry only once it has
read the entry's owner (its session) and the host's member node in the host's
own slot, which only that host's identity can create: same session, verified;
another, forged (ignored, counted, reported as an ``Alert`` the leader
journals). A session's ephemeral nodes go in one transaction when it ends,
so a verified entry or member node that vanishes while another node of the
same session stands was deleted by a client, not by ZooKeeper's expiry: the
host stays a member (its agent creates the node again) and the tampering is
reported.

``ClusterView`` (``zk_view``) owns the children indexes and hands their
diffs here; this class reads the nodes the diffs name and keeps the facts
``liveness()`` is computed from.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from typing import cast

from kazoo import exceptions as kz_exc
from kazoo.protocol.states import EventType

from instanceha.clock import Clock
from instanceha.coordination import base
from instanceha.coordination import zk_layout as L
from instanceha.coordination.zk_codec import loads
from instanceha.coordination.zk_index import Diff
from instanceha.coordination.zk_session import ZooKeeperSession

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


class AlertLog:
    """The latest tampering and forgery alerts, each counted by kind."""

    def __init__(self, clock: Clock, counters: collections.Counter) -> None:
        self.clock = clock
        self.counters = counters
        self.kept: collections.deque[base.Alert] = collections.deque(maxlen=ALERTS_KEPT)
        self._seq = 0

    def raise_(self, kind: str, host: str, detail: str) -> None:
        self._seq += 1
        self.counters[kind] += 1
        self.kept.append(base.Alert(self._seq, self.clock.monotonic(), kind, host, detail))
        LOG.error("TAMPERING (%s) about %s: %s", kind, host, detail)


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


@dataclasses.dataclass
class _Lost:
    at: float
    by_event: bool
    owner: int


class Members:
    """The membership facts of every host, from verified index entries."""

    def __init__(self, session: ZooKeeperSession, clock: Clock,
                 counters: collections.Counter, alerts: AlertLog) -> None:
        self.session = session
        self.clock = clock
        self.counters = counters
        self.alerts = alerts
        self._lock = threading.Lock()  # what kazoo's thread records
        self._live: dict[str, _Entry] = {}
        self._stalls: dict[str, _Entry] = {}
        self._member: dict[str, _Member] = {}
        self._present: dict[str, int] = {}  # host -> the owner session of its membership
        self._lost: dict[str, _Lost] = {}
        self._stall_now: dict[str, tuple[int, float, float]] = {}  # host -> owner, S, seen at
        self._timeout: dict[str, float] = {}
        self._member_events: dict[str, bool] = {}  # host -> a deletion was seen (kazoo's thread)
        # host -> the owner of the member node the view knew when it saw it deleted
        self._deleted_owner: dict[str, int | None] = {}
        self._stall_events: set[str] = set()  # (kazoo's thread)
        self._unwatched: set[str] = set()

    # -- kazoo's thread: record facts only, never block ------------------------------------
    def on_member(self, event) -> None:
        if event.type == EventType.NONE:
            return
        host = event.path.rsplit("/", 2)[-2]
        self.counters["watch_events"] += 1
        with self._lock:
            deleted = self._member_events.get(host, False)
            self._member_events[host] = deleted or event.type == EventType.DELETED
            if event.type == EventType.DELETED and host not in self._deleted_owner:
                known = self._member.get(host)
                self._deleted_owner[host] = None if known is None else known.owner

    def on_stall(self, event) -> None:
        if event.type in (EventType.CHANGED, EventType.DELETED):
            self.counters["watch_events"] += 1
            with self._lock:
                self._stall_events.add(event.path.rsplit("/", 1)[1])

    # -- what the view asks -----------------------------------------------------------------
    def resync(self) -> None:
        """Every watch is gone: re-arm the member watches (a batch per refresh)
        and read every stall entry again."""
        self._unwatched |= set(self._member)
        with self._lock:
            self._stall_events |= set(self._stalls)

    def audit(self) -> None:
        """The consistency pass: read every member node again, a batch per refresh."""
        self._unwatched |= set(self._present)

    def forget(self, host: str) -> None:
        for book in (self._member, self._present, self._lost, self._stall_now, self._timeout):
            book.pop(host, None)
        self._unwatched.discard(host)

    def joined(self, host: str) -> bool:
        return host in self._present or host in self._lost

    def present(self, host: str) -> bool:
        return host in self._present

    def pending(self) -> int:
        """Member watches still to re-arm."""
        return len(self._unwatched)

    def record(self, host: str) -> base.MemberRecord | None:
        owner = self._present.get(host)
        if owner is None:
            return None
        member = self._member.get(host)
        caps = member.caps if member is not None and member.owner == owner else {}
        return base.MemberRecord(member_id=host, incarnation=owner, capabilities=caps)

    def liveness(self, host: str, first_seen: float | None,
                 default_timeout: float) -> float | None:
        owner = self._present.get(host)
        lost = self._lost.get(host)
        stall = self._stall_of(host, owner if owner is not None else
                               (lost.owner if lost is not None else None))
        return liveness(owner is not None, stall,
                        (lost.at, lost.by_event) if lost is not None else None,
                        self._timeout.get(host, default_timeout), first_seen)

    # -- membership -------------------------------------------------------------------------
    def _path(self, host: str) -> str:
        return self.session.path(L.HOSTS, host, L.MEMBER)

    def apply_live(self, diff: Diff, index_path: str, now: float) -> tuple[set[str], set[str]]:
        """Hosts whose membership changed, and those of them it was lost by
        (their slots are read again: a planned stop is marked before the
        session closes)."""
        if not diff:
            return set(), set()
        vanished = []
        for name in diff.removed:
            entry = self._live.pop(name, None)
            if entry is not None and entry.verified:
                vanished.append(entry)
        added = {}
        for name in diff.added:
            parsed = L.parse_index(name)
            if parsed is None:
                self.alerts.raise_("foreign-index-entry", name, f"{index_path}/{name} is not "
                                   "an entry instanceha writes; ignored")
                continue
            added[name] = self._live[name] = _Entry(parsed[0])
        changed = self._verify(added, self.session.path(L.LIVE), "membership")
        lost = set()
        for entry in vanished:
            if self._vanished(entry, diff.removed_at, now):
                lost.add(entry.host)
        return changed | lost, lost

    def _verify(self, entries: dict[str, _Entry], parent: str, what: str) -> set[str]:
        """Read each entry's owner and its host's member node; trust the entry
        when both belong to the same session."""
        client = self.session.client
        owners = {n: client.exists_async(f"{parent}/{n}") for n in entries}
        hosts = {e.host for e in entries.values()}
        members = {h: client.get_async(self._path(h), watch=self.on_member) for h in hosts}
        self.counters["reads"] += len(owners) + len(members)
        for host, result in members.items():
            self._store_member(host, result)
        changed = set()
        doubtful = {}
        for name, result in owners.items():
            entry = entries[name]
            stat = result.get()
            if stat is None:
                continue  # gone meanwhile: the next list says so
            entry.owner = stat.ephemeralOwner
            member = self._member.get(entry.host)
            entry.verified = member is not None and member.owner == entry.owner
            if not entry.verified:
                doubtful[name] = client.exists_async(f"{parent}/{name}")
                continue
            if what == "membership" and self._present.get(entry.host) != entry.owner:
                self._present[entry.host] = entry.owner
                self._lost.pop(entry.host, None)
                changed.add(entry.host)
        # An entry read before its session ended and the member node after
        # (the end removes both in one transaction) is gone when read again:
        # a departure, not a forgery. One still there was not the host's.
        self.counters["reads"] += len(doubtful)
        for name, result in doubtful.items():
            entry = entries[name]
            if result.get() is None:
                continue
            member = self._member.get(entry.host)
            self.alerts.raise_(
                f"forged-{what}", entry.host, f"{parent}/{name} belongs to session "
                f"0x{entry.owner:x}, not to the session holding {entry.host}'s member node "
                f"({'none' if member is None else f'0x{member.owner:x}'}); ignored")
        return changed

    def _store_member(self, host: str, result) -> bool:
        """Store a member node read; True when what the view knows changed."""
        try:
            raw, stat = result.get()
        except kz_exc.NoNodeError:
            self.session.client.exists_async(self._path(host), watch=self.on_member)
            return self._member.pop(host, None) is not None
        caps = loads(raw)
        member = _Member(stat.ephemeralOwner, caps, stat.czxid)
        timeout = _number(caps.get(base.SESSION_TIMEOUT))
        if timeout is not None:
            self._timeout[host] = timeout
        old = self._member.get(host)
        self._member[host] = member
        return old != member

    def _vanished(self, entry: _Entry, at: float | None, now: float) -> bool:
        """True when the host's membership is lost with this entry."""
        host, owner = entry.host, entry.owner
        if owner is None or self._present.get(host) != owner:
            return False
        # a session's ephemeral nodes go together (one transaction closes it): an
        # entry gone while another node of its session stands was deleted by a client
        alive = any(e.host == host and e.owner == owner and e.verified
                    for e in self._live.values())
        if not alive:
            stat = self.session.client.exists(self._path(host))
            self.counters["reads"] += 1
            alive = stat is not None and stat.ephemeralOwner == owner
        if alive:
            self.alerts.raise_("tampered-membership", host, f"its index entry was deleted while "
                               f"its session 0x{owner:x} lives; still a member, its agent "
                               "creates the entry again")
            return False
        del self._present[host]
        self._lost[host] = _Lost(at, True, owner) if at is not None else _Lost(now, False, owner)
        return True

    def member_changes(self, rearm_watches: bool = True) -> set[str]:
        """Member nodes whose watch fired, and (``rearm_watches``) a batch of
        those whose watch is gone."""
        with self._lock:
            events, self._member_events = self._member_events, {}
            gone_owners, self._deleted_owner = self._deleted_owner, {}
        batch = set(events)
        rearmed: set[str] = set()
        batch_size = REARM_BATCH if rearm_watches else 0
        while self._unwatched and len(rearmed) < batch_size:
            host = self._unwatched.pop()
            if host in self._present:
                rearmed.add(host)
        batch = {h for h in batch if h in self._present or h in self._member} | rearmed
        pending = {h: self.session.client.get_async(self._path(h), watch=self.on_member)
                   for h in batch}
        self.counters["reads"] += len(batch - rearmed)
        self.counters["rearm_reads"] += len(batch & rearmed)
        changed = set()
        for host, result in pending.items():
            owner = self._present.get(host)
            if self._store_member(host, result):
                changed.add(host)
            # the node deleted was this session's (not an earlier session's of the
            # host, whose end a re-join's newer entry may have overtaken in this refresh)
            gone = gone_owners.get(host)
            if events.get(host) and owner is not None and gone in (None, owner) \
                    and self._session_lives(host, owner):
                self.alerts.raise_("tampered-membership", host, "its member node was deleted "
                                   f"while its session 0x{owner:x} lives; its agent creates "
                                   "it again")
        return changed

    def _session_lives(self, host: str, owner: int) -> bool:
        """An index entry of ``owner``'s session still exists (read now): its
        member node's deletion was a client's, not the session's end (which
        removes both in one transaction; its list event may not be here yet)."""
        names = [n for n, e in self._live.items() if e.host == host and e.owner == owner]
        for name in names:
            self.counters["reads"] += 1
            stat = self.session.client.exists(self.session.path(L.LIVE, name))
            if stat is not None and stat.ephemeralOwner == owner:
                return True
        return False

    # -- stalls -----------------------------------------------------------------------------
    def apply_stalls(self, diff: Diff, now: float) -> set[str]:
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
        pending = {n: self.session.client.get_async(self.session.path(L.STALLS, n),
                                                    watch=self.on_stall)
                   for n in reread}
        self.counters["reads"] += len(pending)
        for name, result in pending.items():
            if self._store_stall(name, result, now):
                changed.add(self._stalls[name].host)
        return changed

    def _store_stall(self, name: str, result, now: float) -> bool:
        entry = self._stalls[name]
        try:
            raw, stat = result.get()
        except kz_exc.NoNodeError:
            return False
        if entry.owner is None:
            entry.owner = stat.ephemeralOwner
            member = self._member.get(entry.host)
            entry.verified = member is not None and member.owner == entry.owner
            if not entry.verified:
                self.alerts.raise_("forged-stall", entry.host, f"{name} belongs to session "
                                   f"0x{entry.owner:x}, not to {entry.host}'s; ignored")
        if not entry.verified:
            return False
        stalled = _number(loads(raw).get(base.STALLED_FOR))
        if stalled == entry.stalled_for:
            return False
        entry.stalled_for, entry.at = stalled, now
        if stalled is None:
            self._stall_now.pop(entry.host, None)
        else:
            self._stall_now[entry.host] = (cast(int, entry.owner), stalled, now)
        return True

    def _stall_of(self, host: str, owner: int | None) -> tuple[float, float] | None:
        """The stall last reported by ``owner``'s session (kept after it ends)."""
        found = self._stall_now.get(host)
        return (found[1], found[2]) if found is not None and found[0] == owner else None
