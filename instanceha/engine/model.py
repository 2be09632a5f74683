"""The engine's vocabulary: phases, observations, views and the detection policy."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping


class Phase(str, enum.Enum):
    """What the controller believes about one compute host."""

    HEALTHY = "HEALTHY"
    """Member of the cluster, heartbeat fresh, nova-compute running."""
    DEGRADED = "DEGRADED"
    """Agent alive and heartbeating, but nova-compute is not running (or Nova
    reports the service down): the host is alive, so it is never fenced."""
    SUSPECT = "SUSPECT"
    """One signal says dead (membership lost, or heartbeat stale), or a second
    signal is not trusted yet (the controller's own session just reconnected)."""
    FAILED = "FAILED"
    """Both signals say dead (membership lost and heartbeat stale), or the
    heartbeat is stale past the hung window while the session lives, and the
    second source does not show the host alive (or Nova reports its
    nova-compute down). Handed over to fencing."""
    STOPPED = "STOPPED"
    """The agent announced a planned stop: the host is out of HA on purpose."""
    AGENT_DOWN = "AGENT_DOWN"
    """"Agent dead, host alive": the agent is gone (membership lost, or its main
    loop hung) but a second source independent of it (a probe of the host's
    management address) shows the host alive. Never fenced; an alert for an
    operator: the host is not protected while its agent is down."""


class SecondSource(str, enum.Enum):
    """What a source of liveness independent of the agent says of a host whose
    agent looks dead (``HostObservation.second_source``)."""

    NONE = "NONE"
    """There is none for this host (not configured, no address known): the
    host is decided by its agent alone, as before the second source."""
    ASKING = "ASKING"
    """Asked, not answered yet (bounded: the probe's timeout)."""
    ANSWERS = "ANSWERS"
    """The host answered after its agent fell silent."""
    SILENT = "SILENT"
    """The host did not answer within the probe's timeout."""


class SessionState(str, enum.Enum):
    """The controller's own coordinator session, as the engine needs it."""

    CONNECTED = "CONNECTED"
    SUSPENDED = "SUSPENDED"
    LOST = "LOST"


class PolicyError(ValueError):
    """A detection policy whose values contradict each other.

    ``field`` and ``other`` name the policy fields at fault so that the
    configuration layer can name the options and the files.
    """

    def __init__(self, field: str, reason: str, other: str | None = None) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.other = other
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class DetectionPolicy:
    """Windows of the failure detector, in seconds of the controller's clock."""

    heartbeat_interval: float = 0.5
    heartbeat_stale_after: float = 1.5
    hung_after: float = 2.0
    reconnect_grace: float = 0.0

    def __post_init__(self) -> None:
        if self.heartbeat_interval <= 0:
            raise PolicyError("heartbeat_interval", "must be positive")
        if self.heartbeat_stale_after <= self.heartbeat_interval:
            raise PolicyError(
                "heartbeat_stale_after",
                f"{self.heartbeat_stale_after} s is not longer than the heartbeat "
                f"interval {self.heartbeat_interval} s: every host would look stale",
                other="heartbeat_interval",
            )
        if self.hung_after <= self.heartbeat_stale_after:
            raise PolicyError(
                "hung_after",
                f"{self.hung_after} s is not longer than heartbeat_stale_after "
                f"{self.heartbeat_stale_after} s",
                other="heartbeat_stale_after",
            )
        if self.reconnect_grace < 0:
            raise PolicyError("reconnect_grace", "must not be negative")

    @property
    def settle_time(self) -> float:
        """How long the controller's session must have been connected before
        any host may be declared FAILED."""
        return self.heartbeat_stale_after + self.reconnect_grace


@dataclasses.dataclass(frozen=True)
class HostObservation:
    """Everything the controller observed about one host in one tick."""

    host: str
    member: bool
    """The agent's session-bound membership exists in the coordinator."""
    heartbeat_age: float
    """Seconds since the controller last saw the agent's data heartbeat change,
    counted at most from when the controller started watching (a controller
    that just started gives every host one full window)."""
    incarnation: int | None = None
    """Identity of the current membership (new at every join); None if absent."""
    boot_id: str | None = None
    """The kernel boot id the agent published; a change means the host rebooted."""
    planned_stop: bool = False
    """The agent announced a planned stop (SIGTERM) and has not rejoined since."""
    services: Mapping[str, bool] = dataclasses.field(default_factory=dict)
    """Local services the agent reports, name -> running."""
    nova_service_up: bool | None = None
    """Nova's own view of the nova-compute service; None when unknown."""
    second_source: SecondSource = SecondSource.NONE
    """The second source's answer, asked only while the agent looks dead."""


@dataclasses.dataclass(frozen=True)
class ControllerObservation:
    """The controller's own state in this tick."""

    session: SessionState
    connected_for: float
    """Seconds since the session last became CONNECTED (0 if it is not)."""


@dataclasses.dataclass(frozen=True)
class HostView:
    """The engine's decision about one host: its phase, since when and why."""

    host: str
    phase: Phase
    since: float
    reason: str
    rule: str
    incarnation: int | None = None
    boot_id: str | None = None
    rejoined: bool = False
    """The host came back as a new incarnation since the previous view."""
    rebooted: bool = False
    """...and its boot id changed: the host itself restarted."""
    lost_since: float | None = None
    """Since when the host has looked dead without a break (SUSPECT or FAILED);
    None while it does not. The mass-failure guard counts its wait for
    companions from here: the second source's answer may make a host FAILED
    later than it fell silent."""
