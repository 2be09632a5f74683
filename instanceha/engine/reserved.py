"""Where a failed host's instances go: the scheduler's choice, or a reserved spare.

``[recovery] method = scheduler`` (the default) evacuates without a target:
Nova's scheduler places every instance. ``method = reserved_hosts`` is
Masakari's ``reserved_host`` recovery method: an operator keeps some compute
hosts idle, their nova-compute service running but **disabled** with
instanceha's reserved marker (``instanceha:v1:reserved``, see ``marker.py``),
so the scheduler never places anything there. When a host fails, the leader
picks one spare, records it in the failed host's marker (``spares=``),
enables it and evacuates the failed host's instances to it. The spare then
stays in service: enabling it removed its marker, so it is never picked
twice, and it is an ordinary compute host from then on.

Instances that do not fit on the spare (Nova's scheduler still checks the
target: NoValidHost) go to the next spare, then, with
``reserved_fallback_to_scheduler``, wherever the scheduler places them; else
they are reported as failed to recover.

A spare is a candidate when it is disabled with the reserved marker, its
nova-compute is up and not forced down, the detector does not see it failing
(a spare without an agent counts on Nova's view alone), and it matches the
failed host (``reserved_match``): ``none`` any spare, ``aggregate`` a spare
sharing at least one host aggregate with the failed host,
``availability_zone`` a spare in the failed host's availability zone (the
default: instances booted into a zone can only be rebuilt in that zone).
Among candidates the closest wins (same zone, then the most shared
aggregates), then the host name, so the choice is deterministic.

Pure: the caller reads Nova and the detector; this module only decides.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Collection, Iterable

from instanceha.engine.marker import Marker, MarkerState
from instanceha.engine.model import Phase


class Method(enum.Enum):
    SCHEDULER = "scheduler"
    RESERVED_HOSTS = "reserved_hosts"


class Match(enum.Enum):
    NONE = "none"
    AGGREGATE = "aggregate"
    AVAILABILITY_ZONE = "availability_zone"


@dataclasses.dataclass(frozen=True)
class TargetPolicy:
    """How the target host of a failed host's instances is chosen."""

    method: Method = Method.SCHEDULER
    match: Match = Match.AVAILABILITY_ZONE
    fallback_to_scheduler: bool = True
    """No spare left (or none with room): let the scheduler place the rest."""

    @property
    def reserved(self) -> bool:
        return self.method is Method.RESERVED_HOSTS


@dataclasses.dataclass(frozen=True)
class HostInfo:
    """What the selection reads of one compute host."""

    host: str
    zone: str | None = None
    aggregates: frozenset[str] = frozenset()
    disabled: bool = False
    marker: Marker | None = None
    nova_up: bool = False
    forced_down: bool = False
    phase: Phase | None = None
    """The detector's phase; None when no agent reports for the host."""

    @property
    def reserved(self) -> bool:
        return (self.disabled and self.marker is not None
                and self.marker.state is MarkerState.RESERVED)

    @property
    def usable(self) -> bool:
        """Able to take instances now (Nova and, if it has one, the agent say so)."""
        return (self.nova_up and not self.forced_down
                and self.phase in (None, Phase.HEALTHY))


@dataclasses.dataclass(frozen=True)
class Choice:
    host: str | None
    """The target host; None: no spare."""
    reason: str
    enable: bool = False
    """The spare is still disabled (reserved): enable it before evacuating."""


def _matches(failed: HostInfo, spare: HostInfo, match: Match) -> bool:
    if match is Match.AGGREGATE:
        return bool(failed.aggregates & spare.aggregates)
    if match is Match.AVAILABILITY_ZONE:
        return failed.zone is not None and spare.zone == failed.zone
    return True


def choose_spare(failed: HostInfo, hosts: Iterable[HostInfo], match: Match,
                 taken: Collection[str] = ()) -> Choice:
    """The reserved spare to enable for ``failed``'s instances, or why there is none.

    ``taken``: spares not to pick (already used by this recovery)."""
    spares = [h for h in hosts if h.reserved and h.host != failed.host]
    rejected: dict[str, list[str]] = {}
    candidates = []
    for h in spares:
        if h.host in taken:
            why = "already used"
        elif not h.usable:
            why = ("nova-compute down" if not h.nova_up or h.forced_down
                   else f"agent {h.phase.value if h.phase else 'unknown'}")
        elif not _matches(failed, h, match):
            why = ("no shared aggregate" if match is Match.AGGREGATE
                   else f"zone {h.zone}, not {failed.zone}")
        else:
            candidates.append(h)
            continue
        rejected.setdefault(why, []).append(h.host)
    if not candidates:
        if not spares:
            return Choice(None, "no host is reserved (disabled with the instanceha:v1:reserved "
                          "marker)")
        detail = "; ".join(f"{why}: {', '.join(sorted(hs))}" for why, hs in
                           sorted(rejected.items()))
        return Choice(None, f"no usable spare matching {match.value}: {detail}")

    def closeness(h: HostInfo) -> tuple[bool, int, str]:
        same_zone = failed.zone is not None and h.zone == failed.zone
        return (not same_zone, -len(failed.aggregates & h.aggregates), h.host)

    best = min(candidates, key=closeness)
    shared = sorted(failed.aggregates & best.aggregates)
    why = f"reserved spare in zone {best.zone}" + (
        f", aggregates {', '.join(shared)}" if shared else "")
    return Choice(best.host, f"{why} (1 of {len(candidates)} candidate(s))", enable=True)


def resume_spare(marker: Marker | None, hosts: Iterable[HostInfo]) -> Choice | None:
    """The spare an interrupted recovery was using (the last one its marker
    names), if it can still take instances; None: choose again."""
    if marker is None or not marker.spares:
        return None
    last = marker.spares[-1]
    info = next((h for h in hosts if h.host == last), None)
    if info is None or not info.usable:
        return None
    if info.reserved:  # recorded, not enabled yet: the leader stopped in between
        return Choice(last, "spare recorded by the interrupted recovery", enable=True)
    if info.disabled:  # disabled since, by someone else: not ours to enable
        return None
    return Choice(last, "spare enabled by the interrupted recovery")
