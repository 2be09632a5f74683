"""Failover coverage: for every host (and failure domain), would its servers
find room if it failed? Kept current as the model changes.

Tolerance (``[capacity] tolerance``):

* ``hosts`` with ``hosts = 1`` (N+1): each host's failure on its own must be
  covered.
* ``hosts`` with ``hosts = k`` (k > 1): on top of that, the k hosts whose
  failure together hurts most must be covered together. Which k, without
  trying every combination: each host's *loss* is what its evacuable servers
  need plus the room it takes away when it dies, as a share of the cloud's
  capacity, over its scarcest resource class; the k largest losses fail
  together (``worst``). A cloud that survives those survives most other k.
* ``domain``: each failure domain (rack, power feed: the hosts of an aggregate
  tagged ``instanceha:failure_domain``) failing as a whole must be covered.

Each host's and each domain's plan is always computed (the operators' table
shows both); the tolerance decides which ones count for "covered".

Incremental: after a change, only the plans it can break are made again: the
changed hosts' own, the plans that put servers on a changed host whose room no
longer holds them, the plans touching a changed server group, and (when room
appeared somewhere) the plans that were short.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import dataclasses
import enum
import heapq
from collections.abc import Iterable, Mapping

from instanceha.engine.capacity import Host, Model, Role, Server
from instanceha.engine.capacity_plan import FailurePlan, Index, PlanPolicy, plan


class Tolerance(enum.Enum):
    HOSTS = "hosts"
    DOMAIN = "domain"


@dataclasses.dataclass(frozen=True)
class CoveragePolicy:
    tolerance: Tolerance = Tolerance.HOSTS
    hosts: int = 1
    """k: how many hosts may fail together (tolerance ``hosts``)."""
    plan: PlanPolicy = PlanPolicy()

    def __post_init__(self) -> None:
        if self.hosts < 1:
            raise ValueError("hosts (the failures to tolerate) must be at least 1")


WORST = "worst"


@dataclasses.dataclass(frozen=True)
class Coverage:
    policy: CoveragePolicy
    hosts: Mapping[str, FailurePlan]
    """Each host's own failure (hosts with no evacuable server: covered)."""
    domains: Mapping[str, FailurePlan]
    worst: FailurePlan | None
    """The k hosts with the largest loss failing together (k > 1)."""

    def counted(self) -> dict[str, FailurePlan]:
        """The failures the tolerance asks to survive, by name."""
        if self.policy.tolerance is Tolerance.DOMAIN:
            return {f"domain {d}": p for d, p in self.domains.items()}
        out = {f"host {h}": p for h, p in self.hosts.items()}
        if self.worst is not None:
            out[f"{len(self.worst.failed)} hosts {', '.join(sorted(self.worst.failed))}"] = \
                self.worst
        return out

    @property
    def covered(self) -> bool:
        return all(p.covered for p in self.counted().values())

    def uncovered_hosts(self) -> list[str]:
        return sorted(h for h, p in self.hosts.items() if not p.covered)

    def uncovered_domains(self) -> list[str]:
        return sorted(d for d, p in self.domains.items() if not p.covered)

    def shortfall(self) -> dict[str, int]:
        """Resource class -> the largest shortfall of a counted failure: what
        must be added for the worst one to be covered."""
        out: dict[str, int] = {}
        for p in self.counted().values():
            for rc, n in p.shortfall().items():
                out[rc] = max(out.get(rc, 0), n)
        return out


def _key(kind: str, name: str) -> tuple[str, str]:
    return (kind, name)


class CoverageTracker:
    """The model, its index and every failure's plan, kept current."""

    def __init__(self, model: Model, policy: CoveragePolicy = CoveragePolicy()) -> None:
        self.model = model
        self.policy = policy
        self.index = Index()
        self.plans: dict[tuple[str, str], FailurePlan] = {}
        self.uses: dict[str, set[tuple[str, str]]] = {}
        """target host -> the plans that put servers there."""
        self.group_uses: dict[str, set[tuple[str, str]]] = {}
        """server group -> the plans that place some of its members."""
        self.worst: FailurePlan | None = None
        self.replanned = 0
        """Plans made by the last ``refresh()`` (for the benchmark and tests)."""
        self._domains: dict[str, frozenset[str]] = {}
        self._domain_of: dict[str, str] = {}
        self._kind: dict[str, dict[str, FailurePlan]] = {"host": {}, "domain": {}}
        """The plans by kind and name (the same objects as ``plans``)."""
        self._first = True

    # -- the operator's question ----------------------------------------------
    def refresh(self) -> Coverage:
        changes = self.model.take_changes()
        todo: set[tuple[str, str]] = set()
        if self._first:
            self.index = Index.of(self.model)
            self._set_domains(self.model.domains())
            todo = {_key("host", h) for h in self.model.hosts}
            todo |= {_key("domain", d) for d in self._domains}
            self._first = False
        elif changes:
            self.index.update(self.model, changes.hosts)
            if changes.layout:
                domains = self.model.domains()
                for d in self._domains.keys() | domains.keys():
                    if self._domains.get(d) != domains.get(d):
                        todo.add(_key("domain", d))
                self._set_domains(domains)
            todo |= self._affected(changes.hosts, changes.freed, changes.groups)
        for key in todo:
            self._replan(key)
        self.replanned = len(todo)
        if changes or todo or self.worst is None:
            self.worst = self._worst() if self.policy.hosts > 1 else None
        return self.coverage()

    def _set_domains(self, domains: dict[str, frozenset[str]]) -> None:
        self._domains = domains
        self._domain_of = {h: d for d, hs in domains.items() for h in hs}

    def coverage(self) -> Coverage:
        return Coverage(self.policy, dict(self._kind["host"]), dict(self._kind["domain"]),
                        self.worst)

    def plan_failure(self, failed: Iterable[str], servers: list[Server] | None = None,
                     pending: Iterable[tuple[Server, str]] = (),
                     avoid: Mapping[str, Iterable[str]] | None = None) -> FailurePlan:
        """A plan for hosts that really failed (the recovery's): the model as
        it is, with the evacuations in flight (``pending``) counted."""
        changes = self.model.take_changes()
        if changes:  # keep the plans in step with what the index now holds
            self.index.update(self.model, changes.hosts)
            for key in self._affected(changes.hosts, changes.freed, changes.groups):
                self._replan(key)
            self.worst = None if self.policy.hosts <= 1 else self._worst()
        return plan(self.model, self.index, frozenset(failed), self.policy.plan, servers,
                    pending, {k: frozenset(v) for k, v in (avoid or {}).items()},
                    most_room=True)

    # -- incremental ----------------------------------------------------------
    def _affected(self, hosts: frozenset[str], freed: frozenset[str],
                  groups: frozenset[str]) -> set[tuple[str, str]]:
        todo: set[tuple[str, str]] = set()
        domain_of = self._domain_of
        for h in hosts:
            todo.add(_key("host", h))
            if h in domain_of:
                todo.add(_key("domain", domain_of[h]))
            target = self.model.hosts.get(h)
            for key in self.uses.get(h, ()):
                if key in todo:
                    continue
                if target is None or target.role is Role.OUT or not self._holds(key, target):
                    todo.add(key)
        for g in groups:
            for h in self.model.hosts_of_group(g):
                todo.add(_key("host", h))
                if h in domain_of:
                    todo.add(_key("domain", domain_of[h]))
            todo.update(self.group_uses.get(g, ()))
        if freed:
            todo.update(k for k, p in self.plans.items() if not p.covered)
        return {k for k in todo if (k[0] == "host" and k[1] in self.model.hosts)
                or (k[0] == "domain" and k[1] in self._domains)} | \
            {k for k in todo if k in self.plans}

    def _holds(self, key: tuple[str, str], target: Host) -> bool:
        """Does ``target`` still have room for what plan ``key`` put there?"""
        need: dict[str, int] = {}
        for p in self.plans[key].placed:
            if p.target == target.name:
                for rc, n in p.server.need.items():
                    need[rc] = need.get(rc, 0) + n
        return all(target.free(rc) >= n and n <= target.max_unit(rc)
                   for rc, n in need.items())

    def _replan(self, key: tuple[str, str]) -> None:
        kind, name = key
        old = self.plans.pop(key, None)
        self._kind[kind].pop(name, None)
        if old is not None:
            for target in {p.target for p in old.placed}:
                self.uses.get(target, set()).discard(key)
            for group in old.groups:
                self.group_uses.get(group, set()).discard(key)
        failed: frozenset[str] | None
        if kind == "host":
            if name not in self.model.hosts:
                return
            failed = frozenset({name})
        else:
            failed = self._domains.get(name)
            if not failed:
                return
        if not any(self.model.evacuable(h) for h in failed):
            new = FailurePlan(failed)
        else:
            new = plan(self.model, self.index, failed, self.policy.plan)
        self.plans[key] = self._kind[kind][name] = new
        for target in {p.target for p in new.placed}:
            self.uses.setdefault(target, set()).add(key)
        for group in new.groups:
            self.group_uses.setdefault(group, set()).add(key)

    # -- k hosts --------------------------------------------------------------
    def _worst(self) -> FailurePlan:
        return plan(self.model, self.index, self.worst_hosts(self.policy.hosts),
                    self.policy.plan)

    def worst_hosts(self, k: int) -> frozenset[str]:
        """The k hosts whose failure together takes the most: each host's
        evacuable demand plus the free room it takes away, as a share of the
        cloud's total of each resource class, over its largest class."""
        totals: dict[str, int] = {}
        for h in self.model.hosts.values():
            for rc, inv in h.inventory.items():
                totals[rc] = totals.get(rc, 0) + inv.capacity

        def loss(name: str) -> tuple[float, str]:
            host = self.model.hosts[name]
            demand = self.model.demand(name)
            worst = 0.0
            for rc, total in totals.items():
                if total <= 0:
                    continue
                lost = demand.get(rc, 0) + (max(0, host.free(rc))
                                            if host.role is Role.TARGET else 0)
                worst = max(worst, lost / total)
            return worst, name

        return frozenset(name for _, name in heapq.nlargest(k, map(loss, self.model.hosts)))
