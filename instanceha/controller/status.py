"""The leader's view, published for operators (``instanceha status``).

Written only when something an operator would see changed, or every
``refresh`` seconds so that readers can tell a live leader from a dead one.

Its size grows with the cloud: about 490 bytes of JSON per host with FQDN
host names (2.46 MB at 5000 hosts, ``benchmarks/status_bench.py``); every
field of a host's entry is bounded (a reason longer than ``REASON_CHARS`` is
cut: the incident journal and the log keep it whole), and the coordinator
stores the per-host part in chunks that each fit in a ZooKeeper node
(``coordination.zk_control``).
"""

from __future__ import annotations

from collections.abc import Mapping

from instanceha.coordination import ClusterSnapshot, Coordinator
from instanceha.engine.guard import GuardState
from instanceha.engine.model import HostView

STATUS_VERSION = 1
REASON_CHARS = 500


def bounded(text: str, limit: int = REASON_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def build(
    name: str,
    token: int | None,
    views: Mapping[str, HostView],
    snap: ClusterSnapshot,
    guard: GuardState,
    now: float,
    wall: float,
    nova: Mapping[str, Mapping] | None = None,
    guard_report: Mapping[str, object] | None = None,
    guests: Mapping[str, object] | None = None,
    capacity: Mapping[str, object] | None = None,
) -> dict:
    """``nova``: Nova's view of each host and the recovery decision (the
    recovery actuator's ``nova_status()``), when Nova is configured.
    ``guard_report``: the executor's account of the mass-failure guard (since
    when it holds, the rules exceeded, the host aggregates). ``guests``: the guest
    actuator's report (failures queued, the latest handled). ``capacity``: the
    failover capacity monitor's report (bounded: see controller.capacity)."""
    hosts = {}
    for host, v in sorted(views.items()):
        member = snap.members.get(host)
        caps = member.capabilities if member else {}
        hosts[host] = {
            "phase": v.phase.value,
            "since": round(wall - (now - v.since), 3),
            "rule": v.rule,
            "reason": bounded(v.reason),
            "member": member is not None,
            "incarnation": v.incarnation,
            "heartbeat_age": round(snap.heartbeat_age(host), 3),
            "services": caps.get("services", {}),
            "agent_version": caps.get("version"),
            "guest_monitor": caps.get("guest_monitor"),
            "nova": dict((nova or {}).get(host) or {}),
        }
    return {
        "version": STATUS_VERSION,
        "leader": name,
        "token": token,
        "published_at": round(wall, 3),
        "guard": dict(guard_report or {}, held=guard.held, reason=guard.reason),
        "control": dict(snap.control),
        "hosts": hosts,
        "guests": dict(guests) if guests is not None else None,
        "capacity": dict(capacity) if capacity is not None else None,
    }


def _material(status: Mapping) -> tuple:
    """What must trigger a new publication (not ages and timestamps, nor the
    guard's reason, which counts seconds while a hold waits to lift)."""
    g = status["guard"]
    aggregates = g.get("aggregates")
    guard = (g.get("held"), g.get("cause"), g.get("since"), repr(g.get("rules")),
             repr({k: v for k, v in aggregates.items() if k != "age"})
             if isinstance(aggregates, Mapping) else repr(aggregates))
    guests = status.get("guests") or {}
    return (
        status["leader"], status["token"], guard, repr(status["control"]),
        tuple((h, d["phase"], d["rule"], d["member"], d["incarnation"], repr(d["services"]),
               repr({k: v for k, v in (d.get("nova") or {}).items() if k != "waiting_on"}),
               repr((d.get("guest_monitor") or {}).get("state")))
              for h, d in status["hosts"].items()),
        guests.get("pending"), tuple(r.get("incident_id") for r in guests.get("recent", ())),
        (status.get("capacity") or {}).get("revision"),
    )


class StatusPublisher:
    def __init__(self, coordinator: Coordinator, refresh: float = 5.0) -> None:
        self.coordinator = coordinator
        self.refresh = refresh
        self._last: tuple | None = None
        self._last_at: float | None = None
        self._inputs: tuple | None = None

    def due(self, inputs: tuple, now: float) -> bool:
        """Whether a status built from ``inputs`` (what the caller builds it
        from, compared by ``==``) may differ from the last one handed to
        ``maybe_publish``, or the refresh is due: if not, building it is
        wasted work."""
        return (inputs != self._inputs or self._last_at is None
                or now - self._last_at >= self.refresh)

    def maybe_publish(self, status: dict, now: float, inputs: tuple | None = None) -> bool:
        material = _material(status)
        if material == self._last and self._last_at is not None \
                and now - self._last_at < self.refresh:
            self._inputs = inputs
            return False
        self.coordinator.publish_status(status)
        self._last, self._last_at, self._inputs = material, now, inputs
        return True
