"""Turn what the coordinator saw into the engine's observations (no I/O)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from instanceha.coordination import ClusterSnapshot, ConnectionState
from instanceha.engine.model import ControllerObservation, HostObservation, SessionState

_SESSION = {
    ConnectionState.CONNECTED: SessionState.CONNECTED,
    ConnectionState.SUSPENDED: SessionState.SUSPENDED,
    ConnectionState.LOST: SessionState.LOST,
}


def controller(snapshot: ClusterSnapshot) -> ControllerObservation:
    return ControllerObservation(
        session=_SESSION[snapshot.state], connected_for=snapshot.connected_for
    )


def hosts(
    snapshot: ClusterSnapshot, nova_service_up: Mapping[str, bool] | None = None
) -> list[HostObservation]:
    """One observation per host known to the registry or present as a member."""
    nova = nova_service_up or {}
    found = (host(snapshot, name, nova)
             for name in sorted(set(snapshot.hosts) | set(snapshot.members)))
    return [obs for obs in found if obs is not None]


def host(snapshot: ClusterSnapshot, name: str,
         nova_service_up: Mapping[str, bool] | None = None) -> HostObservation | None:
    """The observation of one host; None when neither registered nor a member."""
    member = snapshot.members.get(name)
    record = snapshot.hosts.get(name)
    if member is None and record is None:
        return None
    caps = member.capabilities if member else {}
    listed = caps.get("services")
    services: Mapping[str, object] = listed if isinstance(listed, dict) else {}
    boot = caps.get("boot_id")
    return HostObservation(
        host=name,
        member=member is not None,
        heartbeat_age=snapshot.heartbeat_age(name),
        incarnation=member.incarnation if member else None,
        boot_id=boot if isinstance(boot, str) else None,
        planned_stop=bool(record and record.planned_stop),
        services={k: bool(v) for k, v in services.items()},
        nova_service_up=(nova_service_up or {}).get(name),
    )


def timeless(snapshot: ClusterSnapshot, name: str) -> bool:
    """True when the host's observation cannot change with time alone (its
    liveness is its live session): it is re-decided only when it changes."""
    return math.isinf(snapshot.heartbeats.get(name, 0.0))
