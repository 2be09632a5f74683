"""Fakes for the services' unit tests: a coordinator, leadership, Nova; no I/O."""

import itertools

from instanceha import exceptions
from instanceha.compute import exceptions as compute_exc
from instanceha.compute.model import Server
from instanceha.coordination import base
from instanceha.engine.instance_policy import InstanceFacts
from tests.unit import nova
from tests.unit.clock import FakeClock  # noqa: F401  (the one fake clock: tests/unit/clock.py)

_SESSION_IDS = itertools.count(1)


class FakeLeadership(base.Leadership):
    def __init__(self, leader=True, token=5):
        self.leader_flag = leader
        self._token = token
        self.verify_error = None
        self.verified = 0
        self.ensured = 0

    def is_leader(self):
        return self.leader_flag

    @property
    def token(self):
        return self._token if self.leader_flag else None

    def verify(self):
        self.verified += 1
        if self.verify_error:
            raise self.verify_error
        if not self.leader_flag:
            raise exceptions.NotLeader(reason="fake: not leader")
        return self._token

    def leader(self):
        return "me" if self.leader_flag else "other"

    def ensure(self):
        self.ensured += 1

    def resign(self):
        self.leader_flag = False


class FakeCoordinator(base.Coordinator):
    """Tests edit ``hosts``, ``members``, ``heartbeats`` directly; ``snapshot()``
    finds what changed by comparing with the previous one (``track_changes``),
    so the controller's incremental tick runs as on the real backend."""

    def __init__(self, clock, track_changes=True):
        super().__init__("fake://", clock=clock)
        self.changes = base.ChangeLog() if track_changes else None
        self._last = None
        self.stalls = []
        self.sessions_ended = 0
        self._state = base.ConnectionState.CONNECTED
        self.connected_since = clock()
        self.hosts = {}
        self.members = {}
        self.heartbeats = {}
        self.watching_since = clock()
        self.started = 0
        self.start_errors = []
        self.join_errors = []
        self.joined_flag = False
        self.joins = []
        self.capability_updates = []
        self.left = []
        self.leadership_obj = FakeLeadership()
        self.control = {}
        self.live_sessions = {}
        """session id -> password: the sessions the "server" still knows (a test
        removes one to expire it; a restarted process's coordinator shares it)."""
        self.session = None
        self._resume = None
        self.provisioned = set()

    # connection
    def start(self):
        self.started += 1
        if self.start_errors:
            raise self.start_errors.pop(0)
        resume, self._resume = self._resume, None
        if resume is not None and self.live_sessions.get(resume.session_id) == resume.password:
            self.session = resume
        elif self.session is None:
            sid = 0x1000 + next(_SESSION_IDS)
            self.session = base.SessionCredentials(sid, b"pw-%d" % sid)
            self.live_sessions[sid] = self.session.password
        if self._state is not base.ConnectionState.CONNECTED:
            self.set_state(base.ConnectionState.CONNECTED)

    def stop(self):
        self._state = base.ConnectionState.LOST
        if self.session is not None:  # closeSession
            self.live_sessions.pop(self.session.session_id, None)
            self.session = None

    def resume_session(self, credentials):
        self._resume = credentials

    def session_credentials(self):
        connected = self._state is base.ConnectionState.CONNECTED
        return self.session if connected else None

    @property
    def state(self):
        return self._state

    def set_state(self, state):
        self._state = state
        self.connected_since = self.clock() if state is base.ConnectionState.CONNECTED else None

    @property
    def granted_session_timeout(self):
        return self.session_timeout

    def add_state_listener(self, listener):
        pass

    # agent side
    def join(self, member_id, capabilities):
        if self.join_errors:
            raise self.join_errors.pop(0)
        self.joined_flag = True
        self.joins.append((member_id, dict(capabilities)))
        return 100 + len(self.joins)

    def joined(self):
        return self.joined_flag

    def report_stall(self, stalled_for):
        self.stalls.append(stalled_for)

    def end_session(self):
        self.sessions_ended += 1
        self.joined_flag = False
        self._state = base.ConnectionState.LOST
        if self.session is not None:
            self.live_sessions.pop(self.session.session_id, None)
            self.session = None

    def update_capabilities(self, capabilities):
        self.capability_updates.append(dict(capabilities))

    def leave(self, reason, planned=True):
        self.left.append((reason, planned))

    # controller side
    def add_member(self, host, incarnation=1, services=None, boot_id="b1", session=False):
        """``session``: alive now (its live session); else its last sign of life is
        now and ages with the clock (as a member whose watchdog reports a stall
        from now on)."""
        self.hosts[host] = base.HostRecord(host)
        caps = {"services": services or {"nova-compute": True}, "boot_id": boot_id}
        self.members[host] = base.MemberRecord(host, incarnation, caps)
        self.heartbeats[host] = base.ALIVE_NOW if session else self.clock()

    def beat(self, host):
        self.heartbeats[host] = self.clock()

    def snapshot(self):
        now = (dict(self.hosts), dict(self.members), dict(self.heartbeats))
        if self.changes is not None:
            if self._last is None:
                self.changes.reset()
            else:
                self.changes.record(
                    h for old, new in zip(self._last, now, strict=True)
                    for h in old.keys() | new.keys() if old.get(h) != new.get(h))
            self._last = now
        return base.ClusterSnapshot(
            taken_at=self.clock(), state=self._state, connected_since=self.connected_since,
            watching_since=self.watching_since, hosts=now[0],
            members=now[1], heartbeats=now[2],
            control=dict(self.control),
            revision=self.changes.revision if self.changes else 0, changes=self.changes,
            provisioned=frozenset(self.provisioned) | frozenset(self.hosts))

    def publish_status(self, status):
        self.status = dict(status)

    def read_status(self):
        return getattr(self, "status", None)

    def update_control(self, changes):
        for key, value in changes.items():
            if value is None:
                self.control.pop(key, None)
            else:
                self.control[key] = value
        return dict(self.control)

    def record_failure(self, host, at, keep=10):
        import dataclasses
        rec = self.hosts[host]
        self.hosts[host] = dataclasses.replace(rec, failures=(rec.failures + (at,))[-keep:])

    def forget_host(self, host):
        self.hosts.pop(host, None)

    def provision_host(self, host):
        made = host not in self.provisioned
        self.provisioned.add(host)
        return made

    def leadership(self, candidate_id):
        return self.leadership_obj

    # incident journal: in memory, with switches to make writes, or reads, fail
    journal_down = False
    journal_unreadable = False

    def _journal(self):
        if not hasattr(self, "_incidents"):
            self._incidents = {}
        return self._incidents

    def incident_write(self, incident_id, summary, entries=()):
        from instanceha import exceptions
        if self.journal_down:
            raise exceptions.CoordinatorUnavailable(where="fake", reason="journal_down")
        record = self._journal().setdefault(incident_id, {"summary": {}, "entries": []})
        record["summary"] = dict(summary)
        record["entries"].extend(dict(e) for e in entries)

    def incidents(self):
        if self.journal_unreadable:
            from instanceha import exceptions
            raise exceptions.CoordinatorUnavailable(where="fake", reason="reads time out")
        return {i: dict(r["summary"]) for i, r in self._journal().items()}

    def incident_entries(self, incident_id):
        from instanceha import exceptions
        if incident_id not in self._journal():
            raise exceptions.IncidentNotFound(incident_id=incident_id)
        return list(self._journal()[incident_id]["entries"])

    def incident_delete(self, incident_id):
        self._journal().pop(incident_id, None)

    # guest failures: in memory, with a switch to make calls fail
    guests_down = False

    def _guests(self):
        if not hasattr(self, "_guest_events"):
            self._guest_events, self._guest_seq, self._restarts = {}, 0, {}
        if self.guests_down:
            from instanceha import exceptions
            raise exceptions.CoordinatorUnavailable(where="fake", reason="guests_down")
        return self._guest_events

    def guest_event_put(self, event):
        events = self._guests()
        self._guest_seq += 1
        event_id = f"e-{self._guest_seq:010d}"
        events[event_id] = dict(event)
        return event_id

    def guest_events(self):
        return sorted(self._guests().items())

    def guest_event_delete(self, event_id):
        self._guests().pop(event_id, None)

    def guest_restarts(self, instance_id):
        self._guests()
        return list(self._restarts.get(instance_id, []))

    def guest_restart_record(self, instance_id, at, keep=20):
        self._guests()
        self._restarts[instance_id] = (self._restarts.get(instance_id, []) + [at])[-keep:]


class FakeNova(nova.FakeNova):
    """The one Nova (tests/unit/nova.py) as the recovery actuator's, its
    stages' and the placement's tests set it up: every call that changes Nova
    goes to ``log`` (shared with the fake fencer and verifier, so a test reads
    the order of all calls); ``reads`` counts the services and server lists
    only; ``servers`` is a list a test may extend."""

    def __init__(self, log, services, servers=(), migrations=(), aggregates=None,
                 on_read=None, enable_only_reserved=False):
        super().__init__(services, (), migrations, aggregates, log=log, on_read=on_read,
                         enable_only_reserved=enable_only_reserved)
        self.servers = list(servers)

    def servers_on_host(self, host: str) -> list[Server]:
        with self.lock:
            self.reads.append("servers_on_host")
            return [s for s in self.servers if s.host == host]

    def server(self, server_id: str) -> Server:
        with self.lock:
            self.reads.append("server")
            for s in self.servers:
                if s.id == server_id:
                    return s
        raise compute_exc.NovaNotFound(operation="show", status=404, reason="not found")

    def host_aggregates(self, fresh: bool = True) -> dict[str, frozenset[str]]:
        return {h: frozenset(a) for h, a in self.aggregates.items()}

    def instance_facts(self, servers, host, enough=None):
        return {s.id: InstanceFacts(server_metadata=s.metadata) for s in servers}

    def evacuations(self, server_id=None, source_host=None, changes_since=None):
        return list(self.migrations)
