"""The coordination contract: what the agent and the controller need, no more.

One small API in the manner of tooz, one file per backend, backends loaded
by stevedore from the URL scheme (``instanceha.coordination.get_coordinator``):

* membership with an *incarnation* per member: the session that holds it, new
  at every join in a new session (a host that reboots and rejoins between two
  looks is still seen as new), kept by a session a restarted agent resumes;
* liveness carried by the member's session: the agent writes only when
  something changes, its loop watchdog reports a stalled main loop
  (``report_stall``) and ends the session when the stall goes on
  (``end_session``);
* a host registry that survives the agent (a controller that starts after a
  host died still knows the host), provisioned by the controllers, with a
  "planned stop" announcement;
* authenticated identities and least-privilege ACLs (``zk_acl``): an agent
  writes only its own host's nodes; what the view cannot trust is reported as
  an :class:`Alert`;
* leadership with an immediate "lost" signal and a fencing token, and a
  ``verify()`` round trip to re-check it before every action;
* the connection state, with the time it last became connected.

The controller side is *observed*, not pushed: backends keep watches on
changes only and hand out a consistent :class:`ClusterSnapshot` on demand,
with the hosts that changed since an earlier snapshot (:class:`ChangeLog`)
so that a controller's tick costs O(changed hosts).
All times are seconds of the injected monotonic clock.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import math
from collections.abc import Callable, Mapping, Sequence

from instanceha.clock import SYSTEM, Clock
from instanceha.coordination.changes import ChangeLog

# -- what a member publishes about its liveness --------------------------------
SESSION_TIMEOUT = "session_timeout"
"""Capability: the session timeout the server granted to the member, in seconds."""
STALLED_FOR = "stalled_for"
"""A stall report: for how many seconds the member's main loop had been stalled
when its watchdog wrote it."""

ALIVE_NOW = math.inf
"""``ClusterSnapshot.heartbeats`` value of a host whose liveness is its live
session: alive as of the snapshot, whatever its time."""


class ConnectionState(str, enum.Enum):
    CONNECTED = "CONNECTED"
    SUSPENDED = "SUSPENDED"
    """Connection lost; the session may still be alive. Not leader, not safe."""
    LOST = "LOST"
    """Session expired or closed; ephemeral state is gone."""


@dataclasses.dataclass(frozen=True)
class MemberRecord:
    """A live member (an agent's session-bound membership)."""

    member_id: str
    incarnation: int
    capabilities: Mapping[str, object]


@dataclasses.dataclass(frozen=True)
class HostRecord:
    """A registered host: outlives its agent's session."""

    host: str
    planned_stop: Mapping[str, object] | None = None
    failures: tuple[float, ...] = ()
    """Wall-clock times (epoch seconds) of its recent fences, newest last."""


ALERT_KINDS = ("forged-membership", "forged-stall", "tampered-membership",
               "foreign-index-entry", "forged-guest-event")
"""What the coordinator's ``stats()`` counts by these names (``Alert.kind``)."""


@dataclasses.dataclass(frozen=True)
class Alert:
    """Something in the coordination store that its writer had no right to
    claim (a forged index entry, a deleted membership node): counted, logged
    and journaled by the leader; never acted on."""

    seq: int
    """Grows with every alert of this coordinator (the leader journals the new ones)."""
    at: float
    kind: str
    host: str
    detail: str


@dataclasses.dataclass(frozen=True)
class ClusterSnapshot:
    """What a controller observed of the cluster at ``taken_at``."""

    taken_at: float
    state: ConnectionState
    connected_since: float | None
    watching_since: float | None
    """When the current observation started: heartbeat ages count from here at most."""
    hosts: Mapping[str, HostRecord]
    members: Mapping[str, MemberRecord]
    heartbeats: Mapping[str, float]
    """host -> the last instant it is known to have been alive, on this
    controller's clock: ``ALIVE_NOW`` while its session lives and its loop
    runs; may lie in the past of the observation that proves it (a session
    that ZooKeeper expired was silent for its session timeout before)."""
    control: Mapping[str, object] = dataclasses.field(default_factory=dict)
    """Operator switches shared by every controller (pause, guard release...)."""
    revision: int = 0
    """The change log's revision this snapshot reflects."""
    changes: ChangeLog | None = None
    """Which hosts changed at which revision (None: not tracked by the backend)."""
    provisioned: frozenset[str] = frozenset()
    """Every host with a slot, joined or not (``hosts`` holds those whose agent
    joined at least once: only they are monitored)."""
    alerts: tuple[Alert, ...] = ()
    """The latest alerts, oldest first."""

    def changed_since(self, revision: int) -> frozenset[str] | None:
        """The hosts whose observation may differ from the snapshot at
        ``revision``; None when unknown (look at every host)."""
        if self.changes is None:
            return None
        return self.changes.since(revision, self.revision)

    def heartbeat_age(self, host: str) -> float:
        """Seconds without a sign of life, counted at most from ``watching_since``."""
        seen = self.heartbeats.get(host)
        start = self.watching_since if self.watching_since is not None else self.taken_at
        last = start if seen is None else max(seen, start)
        return max(0.0, self.taken_at - last)

    @property
    def connected_for(self) -> float:
        if self.state is not ConnectionState.CONNECTED or self.connected_since is None:
            return 0.0
        return max(0.0, self.taken_at - self.connected_since)


StateListener = Callable[[ConnectionState], None]


@dataclasses.dataclass(frozen=True)
class SessionCredentials:
    """What resumes a coordinator session from another process: its id and its
    password. A secret: never in a log line, argv, exception text or metric
    (``repr`` hides the password)."""

    session_id: int
    password: bytes = dataclasses.field(repr=False)

    def __post_init__(self) -> None:
        if self.session_id <= 0 or not self.password:
            raise ValueError("a session has a positive id and a password")


class Leadership(abc.ABC):
    """One candidate's stake in the election."""

    @abc.abstractmethod
    def is_leader(self) -> bool:
        """Local and instant: False from the moment the session is suspended or lost."""

    @property
    @abc.abstractmethod
    def token(self) -> int | None:
        """Fencing token of the current term: grows with every new term."""

    @abc.abstractmethod
    def verify(self) -> int:
        """Re-check leadership with a round trip to the coordinator.

        Returns the fencing token, or raises :class:`instanceha.exceptions.NotLeader`.
        Call it right before every action that changes the world."""

    @abc.abstractmethod
    def leader(self) -> str | None:
        """The candidate id of the current leader, as last observed."""

    @abc.abstractmethod
    def ensure(self) -> None:
        """Level-triggered upkeep, called every tick: (re)enter the election
        after a session loss and re-evaluate who leads."""

    @abc.abstractmethod
    def resign(self) -> None:
        """Leave the election."""


class Coordinator(abc.ABC):
    """A connection to the coordination backend, for one agent or controller."""

    def __init__(
        self,
        url: str,
        *,
        session_timeout: float = 2.0,
        connect_timeout: float = 10.0,
        reconnect_max_delay: float = 5.0,
        root_path: str = "/instanceha",
        consistency_interval: float = 60.0,
        clock: Clock = SYSTEM,
    ) -> None:
        """``consistency_interval``: how often a watching backend re-reads
        everything it watches, as a safety net (0: never)."""
        self.url = url
        self.consistency_interval = consistency_interval
        self.session_timeout = session_timeout
        self.connect_timeout = connect_timeout
        self.reconnect_max_delay = reconnect_max_delay
        self.root_path = root_path.rstrip("/")
        self.clock = clock

    # -- connection ------------------------------------------------------
    @abc.abstractmethod
    def start(self) -> None:
        """Connect. Raises CoordinatorUnavailable (retry) or
        SessionTimeoutRejected (the server grants another session timeout)."""

    @abc.abstractmethod
    def stop(self) -> None: ...

    @property
    @abc.abstractmethod
    def state(self) -> ConnectionState: ...

    @property
    @abc.abstractmethod
    def granted_session_timeout(self) -> float | None:
        """The session timeout the server granted, in seconds."""

    @abc.abstractmethod
    def add_state_listener(self, listener: StateListener) -> None:
        """Called from the backend's thread: must not block."""

    def resume_session(self, credentials: SessionCredentials) -> None:
        """Before ``start()``: try to resume this session (a previous process's,
        restarted within the session timeout) instead of opening a new one;
        when the server no longer knows it (expired), ``start()`` opens a new
        one. A backend whose sessions cannot be resumed ignores it."""
        return None

    def session_credentials(self) -> SessionCredentials | None:
        """The current session's credentials while connected (None otherwise,
        or when the backend's sessions cannot be resumed), for a restarted
        process to resume it. ``join()`` in a resumed session keeps the
        membership that session holds (same incarnation, no vanish)."""
        return None

    # -- agent side ------------------------------------------------------
    @abc.abstractmethod
    def join(self, member_id: str, capabilities: Mapping[str, object]) -> int:
        """Clear the host's planned-stop mark and create the session-bound
        membership. Returns the incarnation. Idempotent within one session,
        including a session resumed by a restarted process (the membership it
        holds is kept: same incarnation, nothing vanishes). Raises
        MemberConflict while another session (a previous run of this agent)
        still holds the membership, NotProvisioned while no controller has
        provisioned the host."""

    @abc.abstractmethod
    def joined(self) -> bool:
        """True while the membership created by ``join`` lives in the current session."""

    @abc.abstractmethod
    def report_stall(self, stalled_for: float | None) -> None:
        """The agent's loop watchdog: the main loop has been stalled for
        ``stalled_for`` seconds (None: it runs again). Never blocks; called from
        the watchdog's thread while the main loop may hang anywhere."""

    @abc.abstractmethod
    def end_session(self) -> None:
        """End the session now (its membership goes with it); the next
        ``start()`` opens a new one and the agent joins again. Called from the
        watchdog's thread: a stall past ``hung_after``."""

    @abc.abstractmethod
    def update_capabilities(self, capabilities: Mapping[str, object]) -> None: ...

    @abc.abstractmethod
    def leave(self, reason: str, planned: bool = True) -> None:
        """Leave the group; with ``planned`` the host is marked as stopped on
        purpose so that no controller treats it as a crash. The membership
        goes with the session (``stop()``)."""

    # -- controller side -------------------------------------------------
    @abc.abstractmethod
    def snapshot(self) -> ClusterSnapshot:
        """Observe the cluster (level-triggered: also re-arms what a session
        loss dropped)."""

    @abc.abstractmethod
    def update_control(self, changes: Mapping[str, object | None]) -> Mapping[str, object]:
        """Atomically merge operator switches (None removes a key); returns the result."""

    @abc.abstractmethod
    def publish_status(self, status: Mapping[str, object]) -> None:
        """The leader's latest view, for operators (``instanceha status``)."""

    @abc.abstractmethod
    def read_status(self) -> Mapping[str, object] | None: ...

    @abc.abstractmethod
    def record_failure(self, host: str, at: float, keep: int = 10) -> None:
        """Append a fence time to the host's registry entry (flap damping)."""

    @abc.abstractmethod
    def forget_host(self, host: str) -> None:
        """Remove a host from the registry (decommissioned)."""

    @abc.abstractmethod
    def provision_host(self, host: str) -> bool:
        """Controllers: create the host's slot so that its agent (and only
        it) may join; True when created, False when it existed."""

    @abc.abstractmethod
    def leadership(self, candidate_id: str) -> Leadership: ...

    def stats(self) -> Mapping[str, float]:
        """Counters of the backend's work (watch events, reads...), for metrics
        and benchmarks."""
        return {}

    # -- incident journal (written by the leader, read by operators) ---------
    @abc.abstractmethod
    def incident_write(self, incident_id: str, summary: Mapping[str, object],
                       entries: Sequence[Mapping[str, object]] = ()) -> None:
        """Create or replace the incident's summary and append ``entries`` after
        the ones it has, in order. Outlives every controller."""

    @abc.abstractmethod
    def incidents(self) -> dict[str, Mapping[str, object]]:
        """Every stored incident's summary, by incident id."""

    @abc.abstractmethod
    def incident_entries(self, incident_id: str) -> list[Mapping[str, object]]:
        """The incident's entries, oldest first. Raises IncidentNotFound."""

    @abc.abstractmethod
    def incident_delete(self, incident_id: str) -> None:
        """Remove an incident and its entries (retention); absent is fine."""

    # -- guest failures (agents append, the leader consumes) --------------------
    @abc.abstractmethod
    def guest_event_put(self, event: Mapping[str, object]) -> str:
        """Append one guest failure this agent's host saw to the durable queue
        and return its id. It stays until the leader deletes it (outlives the
        agent and every controller: a leader that dies mid-way leaves it to the
        next one). The event's ``host`` is this agent's host, whatever it says."""

    @abc.abstractmethod
    def guest_events(self) -> list[tuple[str, Mapping[str, object]]]:
        """The queued guest failures as (id, event), oldest first. Cheap when
        nothing changed (backends watch the queue)."""

    @abc.abstractmethod
    def guest_event_delete(self, event_id: str) -> None:
        """Remove a handled guest failure; absent is fine."""

    @abc.abstractmethod
    def guest_restarts(self, instance_id: str) -> list[float]:
        """Wall-clock times (epoch s) of the restarts requested for an instance."""

    @abc.abstractmethod
    def guest_restart_record(self, instance_id: str, at: float, keep: int = 20) -> None:
        """Append a restart time to the instance's record (the newest ``keep``)."""
