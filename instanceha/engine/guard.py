"""The mass-failure guard: when too many hosts look dead at once, fence none.

A rack losing power and a controller cut off from half the cloud look alike
from the controller: many hosts going silent together. Fencing them all in
the second case reboots healthy hosts by the dozen. So, when more hosts look
dead than the policy allows (absolute count or share of the monitored
hosts), the guard *holds* every fence, raises an alert, and lifts the hold
only when the picture is back under the limits and has stayed unchanged for
``stable_after`` seconds, or when an operator releases it.

Pure: the controller passes the views, the previous guard state, the policy,
the time and whether an operator released the hold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from instanceha.engine.model import HostView, Phase

DEAD_LOOKING = frozenset({Phase.SUSPECT, Phase.FAILED})
MONITORED = frozenset({Phase.HEALTHY, Phase.DEGRADED, Phase.SUSPECT, Phase.FAILED})


@dataclasses.dataclass(frozen=True)
class GuardPolicy:
    max_failed_hosts: int = 10
    """More hosts than this looking dead at once: hold."""
    max_failed_percent: float = 34.0
    """More than this share of the monitored hosts looking dead: hold."""
    max_fences_per_tick: int = 5
    """At most this many hosts are handed to fencing per tick."""
    stable_after: float = 60.0
    """An automatic hold lifts once back under the limits and unchanged this long."""

    def __post_init__(self) -> None:
        if self.max_failed_hosts < 1 or self.max_fences_per_tick < 1:
            raise ValueError("max_failed_hosts and max_fences_per_tick must be at least 1")
        if not 0 < self.max_failed_percent <= 100:
            raise ValueError("max_failed_percent must be in (0, 100]")


@dataclasses.dataclass(frozen=True)
class GuardState:
    held: bool = False
    reason: str = ""
    since: float | None = None
    dead: frozenset[str] = frozenset()
    dead_changed_at: float | None = None


def evaluate(
    views: dict[str, HostView],
    previous: GuardState,
    policy: GuardPolicy,
    now: float,
    released: bool = False,
) -> GuardState:
    monitored = [v for v in views.values() if v.phase in MONITORED]
    dead = frozenset(v.host for v in monitored if v.phase in DEAD_LOOKING)
    changed_at = now if dead != previous.dead or previous.dead_changed_at is None \
        else previous.dead_changed_at
    share = 100.0 * len(dead) / len(monitored) if monitored else 0.0
    over = []
    if len(dead) > policy.max_failed_hosts:
        over.append(f"{len(dead)} hosts look dead (> {policy.max_failed_hosts})")
    if len(dead) > 1 and share > policy.max_failed_percent:
        over.append(f"{share:.0f}% of {len(monitored)} monitored hosts look dead "
                    f"(> {policy.max_failed_percent:g}%)")
    if released:
        return GuardState(False, "released by an operator", None, dead, changed_at)
    if over:
        since = previous.since if previous.held else now
        return GuardState(True, "; ".join(over), since, dead, changed_at)
    if previous.held and now - changed_at < policy.stable_after:
        return GuardState(
            True,
            f"back under the limits, waiting for {policy.stable_after:g} s without change "
            f"({now - changed_at:.0f} s so far)",
            previous.since, dead, changed_at)
    return GuardState(False, "", None, dead, changed_at)


def select(views: dict[str, HostView], state: GuardState, policy: GuardPolicy,
           admitted: Mapping[str, float] | None = None) -> list[str]:
    """The FAILED hosts to hand to fencing this tick: none while held; else the
    hosts already admitted for their current failure (``admitted``: host -> the
    ``since`` of the failure it was handed over for, in an earlier tick; its
    fence may still run or be retried), plus at most ``max_fences_per_tick``
    more, the longest-failed first. The cap paces how fast fences start; it
    never limits how many failed hosts are fenced in the end."""
    if state.held:
        return []
    admitted = admitted or {}
    failed = sorted((v for v in views.values() if v.phase is Phase.FAILED),
                    key=lambda v: (v.since, v.host))
    kept = {v.host for v in failed if admitted.get(v.host) == v.since}
    new = [v.host for v in failed if v.host not in kept][: policy.max_fences_per_tick]
    return [v.host for v in failed if v.host in kept or v.host in new]
