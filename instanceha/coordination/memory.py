"""The in-memory backend: the coordination contract without a server.

``memory://<name>`` connects to a store shared by every coordinator of this
process with the same name, so that an agent, two controllers and the CLI of
one test (or one benchmark) see each other exactly as they would through
ZooKeeper: sessions whose end removes their membership and stall reports,
slots provisioned by controllers, an index of memberships, an election by
lowest candidate, operator and controller switches, the incident journal and
the guest-failure queue. The same behaviour suite runs against it and the
ZooKeeper backend (``tests/functional/test_coordination_contract.py``).

Test beds only: there is no authentication and nothing leaves the process.
Times are the injected clock's; a session's end is seen at once (the view's
liveness counts a loss back by the session timeout, as for an expiry).
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import urllib.parse
from collections.abc import Mapping, Sequence

from instanceha import exceptions
from instanceha.coordination import base, credentials

_STORES: dict[str, _Store] = {}
_STORES_LOCK = threading.Lock()


@dataclasses.dataclass
class _Member:
    session: int
    caps: dict
    stalled_for: float | None = None
    stalled_at: float = 0.0


class _Store:
    """Everything a ZooKeeper tree would hold, under one lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.ids = itertools.count(1)
        self.sessions: set[int] = set()
        self.slots: dict[str, dict] = {}
        self.members: dict[str, _Member] = {}
        self.lost: dict[str, tuple[float, int, float | None, float]] = {}
        self.history: dict[str, list[float]] = {}
        self.control: dict[str, dict] = {credentials.CONTROLLER: {}, credentials.OPERATOR: {}}
        self.status: Mapping[str, object] | None = None
        self.incidents: dict[str, dict] = {}
        self.events: dict[str, dict] = {}
        self.restarts: dict[str, list[float]] = {}
        self.candidates: list[tuple[int, int, str]] = []  # (seq, session, candidate id)
        self.changes = base.ChangeLog()

    def end(self, session: int, at: float, timeout: float) -> None:
        with self.lock:
            self.sessions.discard(session)
            for host, m in list(self.members.items()):
                if m.session == session:
                    del self.members[host]
                    self.lost[host] = (at, session, m.stalled_for, m.stalled_at)
                    self.changes.record([host])
            self.candidates = [c for c in self.candidates if c[1] != session]


def store(url: str) -> _Store:
    name = urllib.parse.urlsplit(url).netloc or "default"
    with _STORES_LOCK:
        return _STORES.setdefault(name, _Store())


class MemoryLeadership(base.Leadership):
    def __init__(self, coord: MemoryCoordinator, candidate_id: str) -> None:
        self.coord = coord
        self.candidate_id = candidate_id
        self.seq: int | None = None
        self.session: int | None = None
        self.resigned = False

    def _first(self):
        s = self.coord.store
        with s.lock:
            return min(s.candidates) if s.candidates else None

    def is_leader(self) -> bool:
        first = self._first()
        return (self.coord.connected and first is not None and first[0] == self.seq
                and first[1] == self.coord.session)

    @property
    def token(self) -> int | None:
        return self.seq if self.is_leader() else None

    def verify(self) -> int:
        if not self.is_leader() or self.seq is None:
            raise exceptions.NotLeader(reason=f"{self.leader()} leads now")
        return self.seq

    def leader(self) -> str | None:
        first = self._first()
        return first[2] if first else None

    def ensure(self) -> None:
        s = self.coord.store
        if self.resigned or not self.coord.connected:
            return
        session = self.coord.session
        if session is None:
            return
        with s.lock:
            if self.session != session or not any(c[0] == self.seq for c in s.candidates):
                self.seq = next(s.ids)
                self.session = session
                s.candidates.append((self.seq, session, self.candidate_id))

    def resign(self) -> None:
        self.resigned = True
        s = self.coord.store
        with s.lock:
            s.candidates = [c for c in s.candidates if c[0] != self.seq]


class MemoryCoordinator(base.Coordinator):
    def __init__(self, url: str, *, role: str = credentials.CONTROLLER, **kwargs) -> None:
        kwargs.pop("creds", None)
        kwargs.pop("tls", None)
        super().__init__(url, **kwargs)
        self.role = role
        self.store = store(url)
        self.session: int | None = None
        self.connected_since: float | None = None
        self.member_id: str | None = None
        self._joined: int | None = None
        self._listeners: list[base.StateListener] = []

    # -- connection ------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.session is not None and self.session in self.store.sessions

    def start(self) -> None:
        with self.store.lock:
            self.session = next(self.store.ids)
            self.store.sessions.add(self.session)
        self.connected_since = self.clock.monotonic()
        for listener in list(self._listeners):
            listener(base.ConnectionState.CONNECTED)

    def stop(self) -> None:
        if self.session is not None:
            self.store.end(self.session, self.clock.monotonic(), self.session_timeout)
        self.session = None
        self.connected_since = None

    @property
    def state(self) -> base.ConnectionState:
        return base.ConnectionState.CONNECTED if self.connected else base.ConnectionState.LOST

    @property
    def granted_session_timeout(self) -> float | None:
        return self.session_timeout if self.connected else None

    def add_state_listener(self, listener: base.StateListener) -> None:
        self._listeners.append(listener)

    def _require(self) -> int:
        session = self.session
        if session is None or not self.connected:
            raise exceptions.CoordinatorUnavailable(where=self.url, reason="not connected")
        return session

    # -- agent side -------------------------------------------------------------
    def join(self, member_id: str, capabilities: Mapping[str, object]) -> int:
        session = self._require()
        s = self.store
        with s.lock:
            if member_id not in s.slots:
                raise exceptions.NotProvisioned(host=member_id, where=self.url,
                                                reason="no controller provisioned it")
            held = s.members.get(member_id)
            if held is not None and held.session != session:
                raise exceptions.MemberConflict(member=member_id, owner=f"0x{held.session:x}")
            slot = s.slots[member_id]
            slot["planned_stop"] = None
            slot.setdefault("first_join", self.clock.monotonic())
            caps = dict(capabilities, **{base.SESSION_TIMEOUT: self.session_timeout})
            if held is None:
                s.members[member_id] = _Member(session, caps)
                s.lost.pop(member_id, None)
            else:
                held.caps = caps
            s.changes.record([member_id])
        self.member_id, self._joined = member_id, session
        return session

    def joined(self) -> bool:
        return self._joined is not None and self._joined == self.session and self.connected

    def report_stall(self, stalled_for: float | None) -> None:
        s, host = self.store, self.member_id
        with s.lock:
            m = s.members.get(host) if host is not None else None
            if host is None or m is None or m.session != self.session:
                return
            m.stalled_for = None if stalled_for is None else round(stalled_for, 3)
            m.stalled_at = self.clock.monotonic()
            s.changes.record([host])

    def end_session(self) -> None:
        self._joined = None
        self.stop()

    def update_capabilities(self, capabilities: Mapping[str, object]) -> None:
        s, host = self.store, self.member_id
        with s.lock:
            m = s.members.get(host) if host is not None else None
            if host is not None and m is not None and m.session == self.session:
                m.caps = dict(capabilities, **{base.SESSION_TIMEOUT: self.session_timeout})
                s.changes.record([host])

    def leave(self, reason: str, planned: bool = True) -> None:
        if self.member_id is None:
            return
        s = self.store
        with s.lock:
            if planned and self.member_id in s.slots:
                s.slots[self.member_id]["planned_stop"] = {"reason": reason,
                                                           "incarnation": self.session}
                s.changes.record([self.member_id])
        self._joined = None

    # -- controller side ----------------------------------------------------------
    def snapshot(self) -> base.ClusterSnapshot:
        s = self.store
        now = self.clock.monotonic()
        with s.lock:
            hosts, members, alive = {}, {}, {}
            for host, slot in s.slots.items():
                m = s.members.get(host)
                lost = s.lost.get(host)
                if m is None and lost is None and not slot.get("first_join"):
                    continue
                hosts[host] = base.HostRecord(
                    host=host, planned_stop=slot.get("planned_stop"),
                    failures=tuple(s.history.get(host, ())))
                if m is not None:
                    members[host] = base.MemberRecord(host, m.session, dict(m.caps))
                    alive[host] = base.ALIVE_NOW if m.stalled_for is None else \
                        m.stalled_at - m.stalled_for
                elif lost is not None:
                    at, _, stalled_for, stalled_at = lost
                    alive[host] = min(stalled_at - stalled_for, at) if stalled_for is not None \
                        else at - self.session_timeout
                else:
                    alive[host] = slot["first_join"]
            control = self._merged_control()
            provisioned = frozenset(s.slots)
        return base.ClusterSnapshot(
            taken_at=now, state=self.state, connected_since=self.connected_since,
            watching_since=self.connected_since, hosts=hosts, members=members,
            heartbeats=alive, control=control, revision=s.changes.revision,
            changes=s.changes, provisioned=provisioned)

    def _merged_control(self) -> dict:
        out: dict = {}
        for role in (credentials.CONTROLLER, credentials.OPERATOR):
            user = credentials.CONTROLLER_USER if role == credentials.CONTROLLER \
                else credentials.OPERATOR_USER
            for key, value in self.store.control[role].items():
                out[key] = dict(value, identity=user) if isinstance(value, dict) else value
        return out

    def update_control(self, changes: Mapping[str, object | None]) -> Mapping[str, object]:
        self._require()
        s = self.store
        own = credentials.CONTROLLER if self.role == credentials.CONTROLLER \
            else credentials.OPERATOR
        with s.lock:
            for key, value in changes.items():
                if value is None:
                    for role, node in s.control.items():
                        if role == own or own == credentials.CONTROLLER:
                            node.pop(key, None)
                else:
                    s.control[own][key] = value
            return self._merged_control()

    def publish_status(self, status: Mapping[str, object]) -> None:
        self._require()
        self.store.status = dict(status)

    def read_status(self) -> Mapping[str, object] | None:
        return self.store.status

    def record_failure(self, host: str, at: float, keep: int = 10) -> None:
        s = self.store
        with s.lock:
            s.history[host] = (s.history.get(host, []) + [at])[-keep:]
            s.changes.record([host])

    def forget_host(self, host: str) -> None:
        s = self.store
        with s.lock:
            s.slots.pop(host, None)
            s.history.pop(host, None)
            s.lost.pop(host, None)
            s.changes.record([host])

    def provision_host(self, host: str) -> bool:
        credentials.check_host(host)
        s = self.store
        with s.lock:
            if host in s.slots:
                return False
            s.slots[host] = {}
            return True

    def leadership(self, candidate_id: str) -> base.Leadership:
        return MemoryLeadership(self, candidate_id)

    # -- incident journal -----------------------------------------------------------
    def incident_write(self, incident_id: str, summary: Mapping[str, object],
                       entries: Sequence[Mapping[str, object]] = ()) -> None:
        with self.store.lock:
            rec = self.store.incidents.setdefault(incident_id, {"summary": {}, "entries": []})
            rec["summary"] = dict(summary)
            rec["entries"].extend(dict(e) for e in entries)

    def incidents(self) -> dict[str, Mapping[str, object]]:
        with self.store.lock:
            return {i: dict(r["summary"]) for i, r in self.store.incidents.items()}

    def incident_entries(self, incident_id: str) -> list[Mapping[str, object]]:
        with self.store.lock:
            if incident_id not in self.store.incidents:
                raise exceptions.IncidentNotFound(incident_id=incident_id)
            return list(self.store.incidents[incident_id]["entries"])

    def incident_delete(self, incident_id: str) -> None:
        with self.store.lock:
            self.store.incidents.pop(incident_id, None)

    # -- guest failures --------------------------------------------------------------
    def guest_event_put(self, event: Mapping[str, object]) -> str:
        host = self.member_id
        if host is None:
            raise exceptions.CoordinationError(reason="a guest failure before the agent "
                                               "knows its host (join first)")
        with self.store.lock:
            event_id = f"{host}/e-{next(self.store.ids):010d}"
            self.store.events[event_id] = dict(event, host=host)
        return event_id

    def guest_events(self) -> list[tuple[str, Mapping[str, object]]]:
        with self.store.lock:
            return sorted((i, dict(e)) for i, e in self.store.events.items())

    def guest_event_delete(self, event_id: str) -> None:
        with self.store.lock:
            self.store.events.pop(event_id, None)

    def guest_restarts(self, instance_id: str) -> list[float]:
        with self.store.lock:
            return list(self.store.restarts.get(instance_id, []))

    def guest_restart_record(self, instance_id: str, at: float, keep: int = 20) -> None:
        with self.store.lock:
            self.store.restarts[instance_id] = \
                (self.store.restarts.get(instance_id, []) + [at])[-keep:]
