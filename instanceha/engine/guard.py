"""The mass-failure guard: when too many hosts look dead at once, fence none.

A rack losing power and a controller cut off from half the cloud look alike
from the controller: many hosts going silent together. Fencing them all in
the second case reboots healthy hosts by the dozen. So the guard *holds*
every fence, raises an alert, and lifts the hold only when the picture is
back under the limits and has stayed unchanged for ``stable_after`` seconds,
or when an operator releases it. It holds when:

* more hosts look dead (SUSPECT or FAILED) than ``max_failed_hosts``, or more
  than ``max_failed_percent`` of the monitored hosts;
* in any host aggregate, more hosts look dead than
  ``max_failed_hosts_per_aggregate``, or more than
  ``max_failed_percent_per_aggregate`` of its monitored hosts (only counted in
  aggregates of at least ``aggregate_min_hosts`` monitored hosts). A host may
  be in several aggregates: each is counted on its own. When the grouping is
  *unknown* (never read from Nova), the guard assumes the worst grouping that
  is possible: every dead-looking host in one aggregate, padded up to
  ``aggregate_min_hosts`` hosts;
* more than ``max_vanished_per_tick`` hosts left HEALTHY/DEGRADED for
  SUSPECT/FAILED together: within one tick, or within ``vanish_window``
  seconds (hosts cut off at the same instant stop heartbeating at once but are
  seen falling silent spread over one heartbeat interval). A partition or a
  coordinator failure looks like this, even when the share is small.

A hold outlives a change of leader: the executor persists it in the
coordinator and a new leader starts from it (``adopt``).

Pure: the controller passes the views, the previous guard state, the policy,
the time, the aggregates and whether an operator released the hold.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Iterable, Mapping, Set

from instanceha.engine.model import HostView, Phase

DEAD_LOOKING = frozenset({Phase.SUSPECT, Phase.FAILED})
ALIVE = frozenset({Phase.HEALTHY, Phase.DEGRADED, Phase.AGENT_DOWN})
"""AGENT_DOWN: the second source shows the host alive (a dead agent is no
failure to count: many agents down at once, a bad agent upgrade, must not hold
the fences of hosts that really died)."""
MONITORED = ALIVE | DEAD_LOOKING

Aggregates = Mapping[str, frozenset[str]]
"""Host aggregate name -> the hosts in it (a host may be in several)."""
NO_AGGREGATES: Aggregates = types.MappingProxyType({})
"""Known to be no grouping (no Nova): only the cluster-wide limits apply."""

Phases = Mapping[Phase, Set[str]]
"""Phase -> the hosts in it: the views indexed (the controller keeps it as the
views change, so that the guard's cost does not grow with the hosts' number
in Python code)."""


def index(views: Mapping[str, HostView]) -> dict[Phase, set[str]]:
    """The views indexed by phase."""
    out: dict[Phase, set[str]] = {p: set() for p in Phase}
    for v in views.values():
        out[v.phase].add(v.host)
    return out


MAX_LISTED = 3
"""Aggregates over their limits named in a reason; the others are counted."""


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
    max_failed_hosts_per_aggregate: int = 0
    """More hosts than this looking dead in one aggregate: hold (0: no such limit)."""
    max_failed_percent_per_aggregate: float = 50.0
    """More than this share of one aggregate's monitored hosts looking dead: hold
    (100: no such limit)."""
    aggregate_min_hosts: int = 4
    """The per-aggregate percent applies to aggregates of at least this many
    monitored hosts (a 2-host aggregate losing one is not a mass failure)."""
    max_vanished_per_tick: int = 3
    """More hosts than this leaving HEALTHY/DEGRADED together: hold (0: no such limit)."""
    vanish_window: float = 0.0
    """Hosts leaving within this many seconds count as leaving together (0: the
    same tick only)."""

    def __post_init__(self) -> None:
        if self.max_failed_hosts < 1 or self.max_fences_per_tick < 1:
            raise ValueError("max_failed_hosts and max_fences_per_tick must be at least 1")
        for name in ("max_failed_percent", "max_failed_percent_per_aggregate"):
            if not 0 < getattr(self, name) <= 100:
                raise ValueError(f"{name} must be in (0, 100]")
        if self.max_failed_hosts_per_aggregate < 0 or self.max_vanished_per_tick < 0:
            raise ValueError("max_failed_hosts_per_aggregate and max_vanished_per_tick "
                             "must not be negative")
        if self.aggregate_min_hosts < 1:
            raise ValueError("aggregate_min_hosts must be at least 1")
        if self.stable_after < 0 or self.vanish_window < 0:
            raise ValueError("stable_after and vanish_window must not be negative")


@dataclasses.dataclass(frozen=True)
class Breach:
    """One limit exceeded: ``observed`` > ``limit`` of ``rule`` (an option name)."""

    rule: str
    limit: float
    observed: float
    text: str
    aggregate: str | None = None
    """The aggregate at fault; None for a cluster-wide limit (or an unknown grouping)."""


@dataclasses.dataclass(frozen=True)
class GuardState:
    held: bool = False
    reason: str = ""
    since: float | None = None
    dead: frozenset[str] = frozenset()
    dead_changed_at: float | None = None
    breaches: tuple[Breach, ...] = ()
    """The limits exceeded at this evaluation (empty while waiting to lift)."""
    cause: str = ""
    """While held: what raised the hold (or last kept it raised), also while it
    waits to lift; this is what is persisted for the next leader."""
    left: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """Dead-looking hosts -> when they were seen leaving HEALTHY/DEGRADED, for
    those that left within the vanish window."""
    alive: frozenset[str] = frozenset()
    """The HEALTHY/DEGRADED hosts at this evaluation (what can vanish next)."""
    aggregates_known: bool = True
    """False when the evaluation had no grouping (worst case assumed)."""
    blind: bool = False
    """While held: only the worst case assumed of an unknown grouping raised it
    (no limit that the known facts show). Once the grouping is known and no
    limit is exceeded, it lifts at once: it waited for knowledge, not for the
    picture to settle."""

    @property
    def rules(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(b.rule for b in self.breaches))


def _overall(dead: int, monitored: int, policy: GuardPolicy) -> list[Breach]:
    out = []
    if dead > policy.max_failed_hosts:
        out.append(Breach("max_failed_hosts", policy.max_failed_hosts, dead,
                          f"{dead} hosts look dead (> {policy.max_failed_hosts})"))
    share = 100.0 * dead / monitored if monitored else 0.0
    if dead > 1 and share > policy.max_failed_percent:
        out.append(Breach("max_failed_percent", policy.max_failed_percent, round(share, 1),
                          f"{share:.0f}% of {monitored} monitored hosts look dead "
                          f"(> {policy.max_failed_percent:g}%)"))
    return out


def _per_aggregate(aggregates: Aggregates, monitored: frozenset[str], dead: frozenset[str],
                   policy: GuardPolicy) -> list[Breach]:
    out = []
    limit, pct = policy.max_failed_hosts_per_aggregate, policy.max_failed_percent_per_aggregate
    for name in sorted(aggregates):
        members = aggregates[name] & monitored
        n_dead = len(members & dead)
        if limit and n_dead > limit:
            out.append(Breach("max_failed_hosts_per_aggregate", limit, n_dead,
                              f"aggregate {name}: {n_dead} hosts look dead (> {limit})",
                              aggregate=name))
        if len(members) >= policy.aggregate_min_hosts and n_dead > 1:
            share = 100.0 * n_dead / len(members)
            if share > pct:
                out.append(Breach("max_failed_percent_per_aggregate", pct, round(share, 1),
                                  f"aggregate {name}: {n_dead} of {len(members)} monitored "
                                  f"hosts look dead ({share:.0f}% > {pct:g}%)",
                                  aggregate=name))
    return out


def _unknown_aggregates(dead: int, policy: GuardPolicy) -> list[Breach]:
    """The grouping is unknown: hold if *some* grouping could be over a limit,
    i.e. if every dead-looking host were in one aggregate of
    max(aggregate_min_hosts, dead) monitored hosts."""
    out = []
    limit = policy.max_failed_hosts_per_aggregate
    if limit and dead > limit:
        out.append(Breach("max_failed_hosts_per_aggregate", limit, dead,
                          f"host aggregates unknown: {dead} hosts look dead and may share one "
                          f"aggregate (> {limit} per aggregate)"))
    size = max(policy.aggregate_min_hosts, dead)
    share = 100.0 * dead / size
    if dead > 1 and share > policy.max_failed_percent_per_aggregate:
        out.append(Breach("max_failed_percent_per_aggregate",
                          policy.max_failed_percent_per_aggregate, round(share, 1),
                          f"host aggregates unknown: {dead} hosts look dead and may be "
                          f"{share:.0f}% of one aggregate of {size} "
                          f"(> {policy.max_failed_percent_per_aggregate:g}%)"))
    return out


def _vanished(left: Mapping[str, float], policy: GuardPolicy) -> list[Breach]:
    n = len(left)
    if not policy.max_vanished_per_tick or n <= policy.max_vanished_per_tick:
        return []
    within = f"within {policy.vanish_window:g} s" if policy.vanish_window else "in one tick"
    return [Breach("max_vanished_per_tick", policy.max_vanished_per_tick, n,
                   f"{n} hosts vanished together {within} (> {policy.max_vanished_per_tick}): "
                   f"left HEALTHY/DEGRADED at once, as in a partition or a coordinator "
                   f"failure ({_names(left)})")]


def _names(hosts: Iterable[str], limit: int = 5) -> str:
    names = sorted(hosts)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _reason(breaches: list[Breach]) -> str:
    texts: list[str] = []
    by_aggregate: list[str] = []
    for b in breaches:
        (by_aggregate if b.aggregate is not None else texts).append(b.text)
    texts.extend(by_aggregate[:MAX_LISTED])
    if len(by_aggregate) > MAX_LISTED:
        texts.append(f"{len(by_aggregate) - MAX_LISTED} more aggregate limits exceeded")
    return "; ".join(texts)


def evaluate(
    views: Mapping[str, HostView],
    previous: GuardState,
    policy: GuardPolicy,
    now: float,
    released: bool = False,
    aggregates: Aggregates | None = NO_AGGREGATES,
    phases: Phases | None = None,
) -> GuardState:
    """The guard's state after this tick. ``aggregates``: the grouping, or None
    when it is unknown (then the worst possible grouping is assumed).
    ``phases``: the views indexed by phase, when the caller keeps it."""
    if phases is None:
        phases = index(views)
    dead = frozenset().union(*(phases.get(p, ()) for p in DEAD_LOOKING))
    alive = frozenset().union(*(phases.get(p, ()) for p in ALIVE))
    monitored = dead | alive
    changed_at = now if dead != previous.dead or previous.dead_changed_at is None \
        else previous.dead_changed_at
    left = {h: t for h, t in previous.left.items()
            if h in dead and now - t <= policy.vanish_window}
    left.update({h: now for h in previous.alive & dead})
    overall, vanished = _overall(len(dead), len(monitored), policy), _vanished(left, policy)
    grouped = _unknown_aggregates(len(dead), policy) if aggregates is None \
        else _per_aggregate(aggregates, monitored, dead, policy)
    breaches = overall + grouped + vanished
    # a limit the facts show, not only the worst case of an unknown grouping
    known = bool(overall or vanished or (aggregates is not None and grouped))
    common = GuardState(dead=dead, dead_changed_at=changed_at, breaches=tuple(breaches),
                        left=left, alive=alive, aggregates_known=aggregates is not None)
    if released:
        return dataclasses.replace(common, held=False, reason="released by an operator")
    if breaches:
        cause = _reason(breaches)
        since = previous.since if previous.held else now
        blind = not known and (previous.blind or not previous.held)
        return dataclasses.replace(common, held=True, reason=cause, since=since, cause=cause,
                                   blind=blind)
    if previous.held and previous.blind and aggregates is not None:
        # held for want of the grouping: known now, and nothing exceeded
        return dataclasses.replace(common, reason="the host aggregates, read now, exceed "
                                   "no limit (held only while they were unknown)")
    if previous.held and now - changed_at < policy.stable_after:
        return dataclasses.replace(
            common, held=True,
            reason=f"back under the limits, waiting for {policy.stable_after:g} s without "
                   f"change ({now - changed_at:.0f} s so far); held for: {previous.cause}",
            since=previous.since, cause=previous.cause)
    return common


def adopt(state: GuardState, cause: str, since: float) -> GuardState:
    """Take over a hold persisted by a previous leader: held from now on as if
    raised here (at ``since``); it lifts by the usual rules (back under the
    limits and stable, or an operator's release). A state already held keeps
    its own cause."""
    if state.held:
        return state
    return dataclasses.replace(state, held=True, since=since, cause=cause,
                               reason=f"held by a previous leader: {cause}")


def select(views: Mapping[str, HostView], state: GuardState, policy: GuardPolicy,
           admitted: Mapping[str, float] | None = None,
           phases: Phases | None = None, now: float | None = None) -> list[str]:
    """The FAILED hosts to hand to fencing this tick: none while held; else the
    hosts already admitted for their current failure (``admitted``: host -> the
    ``since`` of the failure it was handed over for, in an earlier tick; its
    fence may still run or be retried), plus at most ``max_fences_per_tick``
    more, the longest-failed first. The cap paces how fast fences start; it
    never limits how many failed hosts are fenced in the end."""
    if state.held:
        return []
    admitted = admitted or {}
    candidates = (views[h] for h in phases[Phase.FAILED]) if phases is not None \
        else (v for v in views.values() if v.phase is Phase.FAILED)
    failed = sorted(candidates, key=lambda v: (v.since, v.host))
    kept = {v.host for v in failed if admitted.get(v.host) == v.since}
    # a host that fell silent less than vanish_window ago waits: the hosts failing
    # with it (ZooKeeper expires their sessions over a tick or two) are counted
    # before any is handed over; counted from when it first looked dead, not
    # from FAILED (the second source's answer comes within that wait)
    new = [v.host for v in failed if v.host not in kept
           and (not policy.vanish_window or now is None
                or now - _lost_since(v) >= policy.vanish_window)]
    new = new[: policy.max_fences_per_tick]
    return [v.host for v in failed if v.host in kept or v.host in new]


def _lost_since(view: HostView) -> float:
    return view.lost_since if view.lost_since is not None else view.since


def by_aggregate(host_aggregates: Mapping[str, frozenset[str]]) -> dict[str, frozenset[str]]:
    """Invert host -> aggregate names (Nova's view per host) into aggregate -> hosts."""
    out: dict[str, set[str]] = {}
    for host, names in host_aggregates.items():
        for name in names:
            out.setdefault(name, set()).add(host)
    return {name: frozenset(hosts) for name, hosts in out.items()}
