"""How a recovery sends its evacuations: in priority order, to the targets
the capacity plan names, through one throttle shared by every failed host,
holding back those that have no room.

``Throttle``: at most ``overall`` evacuations in flight, at most ``per_host``
towards one target host, and one at a time per hard anti-affinity server group
(Nova's late check on the target compute fails the second of two members
scheduled together onto one host; sent one after the other, the scheduler sees
the first one placed). Waiting evacuations are admitted highest priority
first, then oldest; one whose target is busy does not hold up one whose
target is free. It only paces evacuations: fencing never waits on it.

``Dispatcher``: turns the failed host's servers (as the recovery read them)
into the plan's order, targets and held-back servers, and checks the server
groups' policies once they moved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import itertools
import logging
import threading
from collections.abc import Iterable, Mapping

from instanceha.controller.capacity_reader import group_of
from instanceha.engine import capacity as cap
from instanceha.engine.capacity_plan import order
from instanceha.engine.instance_policy import (
    InstanceFacts,
    decide_priority,
    priority_decided_by_server_or_flavor,
)

LOG = logging.getLogger(__name__)


class Throttle:
    def __init__(self, overall: int = 64, per_host: int = 16) -> None:
        if overall < 1 or per_host < 1:
            raise ValueError("overall and per_host must be at least 1")
        self.overall = overall
        self.per_host = per_host
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._waiting: list[tuple[int, int, str | None, str | None]] = []
        self._admitted: set[int] = set()
        self.in_flight = 0
        self.by_target: dict[str, int] = {}
        self.by_group: dict[str, int] = {}
        self.peak = 0
        self.peak_per_target = 0
        self.admitted_order: list[tuple[int, str | None]] = []
        """(priority, target) of each admission, in order (benchmark, tests)."""

    def _free(self, target: str | None, group: str | None) -> bool:
        return (self.in_flight < self.overall
                and (target is None or self.by_target.get(target, 0) < self.per_host)
                and (group is None or self.by_group.get(group, 0) < 1))

    def _admit(self) -> None:
        """Admit, best first, every waiter that fits now (under the lock)."""
        keep = []
        while self._waiting and self.in_flight < self.overall:
            entry = heapq.heappop(self._waiting)
            _, seq, target, group = entry
            if self._free(target, group):
                self._take(target, group)
                self._admitted.add(seq)
                self.admitted_order.append((-entry[0], target))
            else:
                keep.append(entry)
        for entry in keep:
            heapq.heappush(self._waiting, entry)
        self._cond.notify_all()

    def _take(self, target: str | None, group: str | None) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        if target is not None:
            n = self.by_target[target] = self.by_target.get(target, 0) + 1
            self.peak_per_target = max(self.peak_per_target, n)
        if group is not None:
            self.by_group[group] = self.by_group.get(group, 0) + 1

    def _give_back(self, target: str | None, group: str | None) -> None:
        self.in_flight -= 1
        if target is not None:
            self.by_target[target] -= 1
            if not self.by_target[target]:
                del self.by_target[target]
        if group is not None:
            self.by_group[group] -= 1
            if not self.by_group[group]:
                del self.by_group[group]

    @contextlib.contextmanager
    def slot(self, priority: int, target: str | None = None, group: str | None = None):
        """Hold a place for one evacuation (blocks until admitted)."""
        with self._cond:
            seq = next(self._seq)
            heapq.heappush(self._waiting, (-priority, seq, target, group))
            self._admit()
            self._cond.wait_for(lambda: seq in self._admitted)
            self._admitted.discard(seq)
        try:
            yield
        finally:
            with self._cond:
                self._give_back(target, group)
                self._admit()

    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)


@dataclasses.dataclass(frozen=True)
class Dispatch:
    """What to send for one batch of a failed host's servers."""

    send: tuple
    """Compute servers to evacuate, in dispatch order (highest priority first)."""
    targets: Mapping[str, str | None]
    """server id -> the planned target (None: the scheduler chooses)."""
    held: tuple[tuple[object, str], ...]
    """(server, reason): no room now; not sent."""
    priority: Mapping[str, int]
    groups: Mapping[str, str]
    """server id -> its hard anti-affinity group (evacuated one at a time)."""


class Dispatcher:
    """The recovery's side of the capacity model (one per controller)."""

    def __init__(self, monitor, throttle: Throttle, plan_targets: bool = True,
                 defer: bool = True, default_priority: int = 300) -> None:
        """``monitor``: the ``CapacityMonitor`` (None: no model; priority order only)."""
        self.monitor = monitor
        self.throttle = throttle
        self.plan_targets = plan_targets
        self.defer = defer
        self.default_priority = default_priority
        self.groups_read = None
        """Nova's server groups (``CapacityReads.server_groups``), for the
        spares' group check while the model is not known yet."""
        self._lock = threading.Lock()
        self._said: set[tuple[str, str]] = set()
        self._waited: dict[str, float | None] = {}

    def _known(self, server_id: str) -> cap.Server | None:
        return self.monitor.server(server_id) if self.monitor is not None else None

    def priority(self, server, facts: InstanceFacts | None) -> int:
        """From the facts the recovery read; when they lack the image and the
        aggregates (the server's metadata and flavor decided its recovery, so
        those were not read), the model's priority, decided from all of them."""
        facts = facts or InstanceFacts(server_metadata=server.metadata,
                                       flavor_extra_specs=server.flavor_extra_specs)
        complete = bool(facts.image_properties or facts.aggregates)
        if complete or priority_decided_by_server_or_flavor(facts):
            return decide_priority(facts, self.default_priority).priority
        known = self._known(server.id)
        if known is not None:
            return known.priority
        return decide_priority(facts, self.default_priority).priority

    def plan(self, host: str, servers: Iterable, facts: Mapping[str, InstanceFacts],
             avoid: Mapping[str, Iterable[str]] | None = None) -> Dispatch:
        servers = list(servers)
        priority = {s.id: self.priority(s, facts.get(s.id)) for s in servers}
        mine = []
        for s in servers:
            known = self._known(s.id)
            mine.append(cap.Server(
                s.id, s.name, host, dict(known.need) if known is not None else {},
                priority=priority[s.id], zone=known.zone if known else s.availability_zone,
                group=known.group if known else None, project_id=s.project_id))
        by_id = {s.id: s for s in servers}
        groups = self._hard_anti_groups(mine)
        plan = self.monitor.plan(host, mine, avoid) if self.monitor is not None else None
        if plan is None:  # no model: priority order, the scheduler places
            ordered = order(mine)
            return Dispatch(tuple(by_id[s.id] for s in ordered), {}, (), priority, groups)
        held = tuple((by_id[u.server.id], u.reason) for u in plan.unplaced) if self.defer \
            else ()
        sent = [p.server for p in plan.placed]
        if not self.defer:
            sent = order(sent + [u.server for u in plan.unplaced])
        targets = {p.server.id: p.target for p in plan.placed} if self.plan_targets else {}
        return Dispatch(tuple(by_id[s.id] for s in sent), targets, held, priority, groups)

    def _hard_anti_groups(self, servers: list[cap.Server]) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.monitor is None:
            return out
        model_groups = self.monitor.reader.model.groups
        for s in servers:
            g = model_groups.get(s.group) if s.group else None
            if g is not None and g.policy is cap.GroupPolicy.ANTI_AFFINITY:
                out[s.id] = g.id
        return out

    # -- servers waiting for room ------------------------------------------------
    def first_hold(self, incident: str, server_id: str, reason: str) -> bool:
        """True the first time ``server_id`` waits for room in this incident
        (said then, in the journal and on the bus; not again at every retry)."""
        with self._lock:
            if (incident, server_id) in self._said:
                return False
            self._said.add((incident, server_id))
            return True

    def waiting(self, host: str) -> None:
        """``host``'s servers wait for room as of the model's last read."""
        with self._lock:
            self._waited[host] = self.monitor.read_at if self.monitor is not None else None

    def worth_retrying(self, host: str) -> bool:
        """Whether trying ``host``'s waiting servers again can find room: the
        model was read again since they were held back (or is not kept here:
        a new leader tries once). Without that, a retry costs no request."""
        with self._lock:
            if self.monitor is None or host not in self._waited:
                return True
            return self.monitor.read_at != self._waited[host]

    def allowed(self, nova=None):
        """For the reserved spares' path: may this server go to that spare by
        its hard server group (the members already there, and those this
        recovery sent there)? The spare's room is Nova's to check. From the
        model; while it is not known yet (a leader that just took over), from
        Nova: the server groups (one list) and the servers on each spare
        considered (one list each), read once per recovery."""
        sent: dict[str, dict[str, int]] = {}
        model = self.monitor.reader.model \
            if self.monitor is not None and self.monitor.known else None
        read: dict[str, object] = {}

        def facts(server_id: str, spare: str):
            """(group, members per host) of the server's group, or None."""
            if model is not None:
                known = model.servers.get(server_id)
                group = model.groups.get(known.group) if known and known.group else None
                return (group, model.members.get(group.id, {}), known.host) if group else None
            if nova is None or self.groups_read is None:
                return None
            if "groups" not in read:
                read["groups"] = self.groups_read()
            for g in read["groups"]:
                if server_id in g.members:
                    break
            else:
                return None
            on_spare = read.get(spare)
            if on_spare is None:
                on_spare = read[spare] = {x.id for x in nova.servers_on_host(spare)}
            group = group_of(g)
            return group, {spare: len(on_spare & set(g.members))}, None

        def allowed(server, spare: str) -> bool:
            found = facts(server.id, spare)
            if found is None or not found[0].policy.hard:
                return True
            group, members, home = found
            on_spare = members.get(spare, 0) + sent.get(group.id, {}).get(spare, 0)
            if group.policy.anti:
                ok = on_spare < max(1, group.max_per_host)
            else:
                elsewhere = {h for h, n in members.items() if n and h != home}
                ok = not elsewhere or spare in elsewhere
            if ok:
                per = sent.setdefault(group.id, {})
                per[spare] = per.get(spare, 0) + 1
            else:
                LOG.warning("server=%s not sent to spare %s: %s", server.id, spare,
                            group.label())
            return ok

        return allowed

    def gate(self, dispatch: Dispatch):
        """The evacuator's gate: each evacuation holds a throttle slot, and
        counts as load on its target until the model has read it."""

        @contextlib.contextmanager
        def gate(server, target):
            with self.throttle.slot(dispatch.priority.get(server.id, self.default_priority),
                                    target, dispatch.groups.get(server.id)):
                try:
                    yield
                finally:
                    if self.monitor is not None:
                        self.monitor.landed(server.id)

        return gate

    def group_violations(self, results) -> list[str]:
        """Hard groups whose policy does not hold once these servers moved
        (their new hosts against the members' hosts in the model)."""
        if self.monitor is None:
            return []
        model = self.monitor.reader.model
        landed = {r.server_id: r.dest_host for r in results if r.ok and r.dest_host}
        out = []
        for sid, dest in landed.items():
            known = model.servers.get(sid)
            group = model.groups.get(known.group) if known and known.group else None
            if group is None or not group.policy.hard:
                continue
            where = {m.id: landed.get(m.id, m.host) for m in model.servers.values()
                     if m.group == group.id and m.id != sid}
            if group.policy.anti:
                beside = sorted(m for m, h in where.items() if h == dest)
                if len(beside) >= max(1, group.max_per_host):
                    out.append(f"{group.label()}: {known.name} landed on {dest} beside "
                               f"{', '.join(beside)}")
            elif where and dest not in set(where.values()):
                out.append(f"{group.label()}: {known.name} landed on {dest}, its members on "
                           f"{', '.join(sorted(set(where.values())))}")
        return out

