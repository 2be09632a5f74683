"""Where the servers of failed hosts would go: a failover plan.

Given the capacity model and a set of failed hosts, place every evacuable
server of those hosts on the hosts that remain, the way a recovery would send
them, and say which servers would find no room and why. Used twice: all the
time, to judge whether each host's (or failure domain's) failure is covered
(``capacity_coverage.py``); and when a host really failed, to choose the order
and the target of each evacuation and to hold back those without room.

Rules, in the order they are applied:

* **Order**: highest restart priority first, then the largest server (by its
  scarcest resource), then the name: when room is short, the highest
  priorities get it.
* **Where**: a host that takes servers (enabled, up, not failing), in the
  server's availability zone when it must stay there; with
  ``method = reserved_hosts`` first the failed host's reserved spares (the
  closest first, as ``engine.reserved`` chooses), then, with the fallback to
  the scheduler, any host.
* **Room**: every resource class the server needs, within Placement's
  capacity and ``max_unit``, counting what this plan (and the evacuations
  already in flight, ``pending``) put there before.
* **Server groups**: hard anti-affinity never puts a member beside another
  (``max_server_per_host``, counting members already running); hard affinity
  puts members where the group's other members are; soft policies are
  preferences, dropped when nothing else fits.
* **Spread**: among the hosts allowed, the one with the most room left (the
  smallest share free of its resource classes is the score). Nova's scheduler
  sees the same free host for every request it weighs before the first claim
  is consumed (it consumes a host only after the Placement claim's round trip),
  so evacuations sent together all land on one host; naming each one's target
  from this plan spreads them.

The hosts as the placer reads them are ``capacity_index``; the room and
group rules, and why a server found no room, are ``capacity_ledger``.

Pure and deterministic: the same model gives the same plan.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
from collections.abc import Collection, Iterable, Mapping, Sequence

from instanceha.engine.capacity import Host, Model, Server, rank
from instanceha.engine.capacity_index import Index, Pool, typical
from instanceha.engine.capacity_ledger import Ledger, NoRoom
from instanceha.engine.reserved import Match

FAST_TRIES = 8
"""Candidates tried in score order before the exhaustive scan."""


@dataclasses.dataclass(frozen=True)
class PlanPolicy:
    spares: bool = False
    """``[recovery] method = reserved_hosts``: reserved spares first."""
    spare_match: Match = Match.AVAILABILITY_ZONE
    fallback_to_scheduler: bool = True


@dataclasses.dataclass(slots=True)
class Placed:
    """Not frozen, like ``Server`` (200,000 of them in the coverage of 5,000
    hosts): never changed once built."""

    server: Server
    target: str
    spare: bool = False


@dataclasses.dataclass(frozen=True)
class FailurePlan:
    failed: frozenset[str]
    placed: tuple[Placed, ...] = ()
    """In dispatch order: highest priority first."""
    unplaced: tuple[NoRoom, ...] = ()
    spares: tuple[str, ...] = ()
    """Reserved spares this plan enables, in the order used."""
    @property
    def groups(self) -> frozenset[str]:
        """The server groups of its servers (placed or not)."""
        return frozenset(s.group for s in itertools.chain(
            (p.server for p in self.placed), (u.server for u in self.unplaced))
            if s.group is not None)

    @property
    def covered(self) -> bool:
        return not self.unplaced

    def load(self) -> dict[str, dict[str, int]]:
        """Target host -> what the plan puts there."""
        out: dict[str, dict[str, int]] = {}
        for p in self.placed:
            into = out.setdefault(p.target, {})
            for rc, n in p.server.need.items():
                into[rc] = into.get(rc, 0) + n
        return out

    def shortfall(self) -> dict[str, int]:
        """Resource class -> what the servers without room need of the classes
        they found no room for, summed: room to add (where they may go)."""
        out: dict[str, int] = {}
        for u in self.unplaced:
            for rc, n in u.lacking.items():
                out[rc] = out.get(rc, 0) + n
        return out

    def target_of(self, server_id: str) -> str | None:
        return next((p.target for p in self.placed if p.server.id == server_id), None)




def order(servers: Iterable[Server]) -> list[Server]:
    """Dispatch order: highest priority, then the largest, then the name."""
    return sorted(servers, key=rank)


def plan(model: Model, index: Index, failed: Collection[str], policy: PlanPolicy = PlanPolicy(),
         servers: Sequence[Server] | None = None,
         pending: Iterable[tuple[Server, str]] = (),
         avoid: Mapping[str, Collection[str]] | None = None,
         most_room: bool = False) -> FailurePlan:
    """The plan for ``failed`` hosts failing together.

    ``servers``: those to place (default: every evacuable server of the failed
    hosts); ``pending``: (server, target) of evacuations in flight, not yet in
    Placement's usage; ``avoid``: server id -> targets Nova refused for it.
    ``most_room``: each server to the allowed host with the most room left,
    counting what this plan and ``pending`` put there (a recovery's plan:
    several hosts failing together spread over the whole cloud) instead of
    next fit in the index's order (coverage: the same answer, cheaper)."""
    failed = frozenset(failed)
    ordered: Sequence[Server]
    if servers is None and len(failed) == 1:
        ordered = model.evacuable(next(iter(failed)))
    elif servers is None:
        ordered = order(s for h in failed for s in model.evacuable(h))
    else:
        ordered = order(servers)
    placer = _Placer(model, index, failed, policy, pending, avoid or {})
    placer.most_room = most_room
    return placer.run(ordered)


class _Placer:
    def __init__(self, model: Model, index: Index, failed: frozenset[str], policy: PlanPolicy,
                 pending: Iterable[tuple[Server, str]],
                 avoid: Mapping[str, Collection[str]]) -> None:
        self.model = model
        self.index = index
        self.failed = failed
        self.policy = policy
        self.avoid = avoid
        self.ledger = Ledger(model, index, failed)
        self.next: dict[str | None, int] = {}
        """Pool -> where its next server is tried first (next fit, wrapping)."""
        self.most_room = False
        self.heaps: dict[str | None, list[tuple[float, str]]] = {}
        for server, target in pending:
            self.ledger.take(server, target)

    # -- placing --------------------------------------------------------------
    def run(self, servers: Sequence[Server]) -> FailurePlan:
        placed: list[Placed] = []
        unplaced: list[NoRoom] = []
        spares_used: list[str] = []
        remaining = servers
        if self.policy.spares:
            by_failed: dict[str, list[Server]] = {}
            for s in servers:
                by_failed.setdefault(s.host, []).append(s)
            remaining = order(self._spares(by_failed, placed, spares_used))
            if not self.policy.fallback_to_scheduler:
                for s in remaining:
                    missing = self.ledger.missing(s)
                    unplaced.append(NoRoom(s, "no reserved spare with room left (and no "
                                           "fallback to the scheduler)",
                                           {rc: s.need[rc] for rc in missing} or dict(s.need)))
                remaining = []
        # the hot loop of the coverage (every host's plan): the common case (no
        # server group, next fit finds room within FAST_TRIES) inlined
        pools, rows, failed = self.index.pools, self.index.rows, self.failed
        loads = self.ledger.load
        nxt = self.next
        fast = not self.most_room and not self.avoid
        in_order: dict[str | None, list[str]] = {}
        for s in remaining:
            target = None
            if fast and s.group is None:
                zone = s.zone
                names = in_order.get(zone)
                if names is None:
                    pool = pools.get(zone) if zone is not None else pools[None]
                    names = in_order[zone] = pool.names_in_order() if pool is not None else []
                n = len(names)
                need = s.need.items()
                at = nxt.get(zone, 0)
                for _ in range(n if n < FAST_TRIES else FAST_TRIES):
                    if at >= n:  # wrap (at < 2n: one step past the end at most)
                        at -= n
                    name = names[at]
                    at += 1
                    if name in failed:
                        continue
                    load = loads.get(name)
                    if load is None:
                        room = rows[name].room
                        for rc, q in need:
                            if room.get(rc, 0) < q:
                                break
                        else:
                            loads[name] = dict(s.need)
                            target = name
                            break
                    else:
                        row = rows[name]
                        free, max_unit = row.free, row.max_unit
                        for rc, q in need:
                            if free.get(rc, 0) - load.get(rc, 0) < q or max_unit.get(rc, 0) < q:
                                break
                        else:
                            for rc, q in need:
                                load[rc] = load.get(rc, 0) + q
                            target = name
                            break
                if target is not None:
                    nxt[zone] = at
                    placed.append(Placed(s, target))
                    continue
            target = self._choose(s)
            if target is None:
                unplaced.append(self.ledger.no_room(s, self.avoid.get(s.id, ())))
            else:
                self.ledger.take(s, target)
                placed.append(Placed(s, target))
        if self.policy.spares:
            placed.sort(key=lambda p: rank(p.server))
        return FailurePlan(self.failed, tuple(placed), tuple(unplaced), tuple(spares_used))

    def _spares(self, by_failed: dict[str, list[Server]], placed: list[Placed],
                used: list[str]) -> list[Server]:
        """Each failed host's servers onto its closest spares (one spare at a
        time, the overflow to the next); returns those left for the scheduler."""
        left: list[Server] = []
        for failed_name in sorted(by_failed):
            todo = by_failed[failed_name]
            failed = self.model.hosts.get(failed_name) or Host(failed_name)
            for spare in self._spare_order(failed, used):
                zone = self.model.hosts[spare].zone
                took = []
                for s in todo:
                    if (s.zone is None or s.zone == zone) \
                            and spare not in self.avoid.get(s.id, ()) \
                            and self.ledger.group_ok(s, spare, soft=False) \
                            and self.ledger.fits(s, spare):
                        self.ledger.take(s, spare)
                        placed.append(Placed(s, spare, spare=True))
                        took.append(s)
                if took:
                    used.append(spare)
                    todo = [s for s in todo if s not in took]
                if not todo:
                    break
            left.extend(todo)
        return left

    def _spare_order(self, failed: Host, used: list[str]) -> list[str]:
        match = self.policy.spare_match
        out = []
        for name in self.index.spares:
            if name in self.failed or name in used:
                continue
            spare = self.model.hosts[name]
            if match is Match.AGGREGATE and not failed.aggregates & spare.aggregates:
                continue
            if match is Match.AVAILABILITY_ZONE and (failed.zone is None
                                                     or spare.zone != failed.zone):
                continue
            out.append(spare)
        out.sort(key=lambda h: (not (failed.zone is not None and h.zone == failed.zone),
                                -len(failed.aggregates & h.aggregates), h.name))
        return [h.name for h in out]

    def _choose(self, server: Server) -> str | None:
        pool = self.index.pool_of(server.zone)
        if pool is None or not len(pool):
            return None
        group = self.model.group_of(server)
        if group is not None and not group.policy.anti:
            # affinity: the members' hosts first (hard: only those)
            where = self.ledger.affinity_hosts(group.id)
            for name in sorted(where):
                if self._allowed(server, name, pool, soft=True):
                    return name
            if group.policy.hard and where:
                return None
        found = self._search(server, pool, soft=True)
        if found is None and group is not None and not group.policy.hard:
            found = self._search(server, pool, soft=False)
        return found

    def _allowed(self, server: Server, name: str, pool: Pool, soft: bool) -> bool:
        if name not in pool or name in self.failed or name in self.avoid.get(server.id, ()):
            return False
        if server.group is not None and not self.ledger.group_ok(server, name, soft):
            return False
        return self.index.rows[name].fits(server.need, self.ledger.load.get(name))

    def _key(self, name: str, pool: Pool) -> float:
        load = self.ledger.load.get(name)
        return pool.key(name) if load is None else -self.index.rows[name].score(load)

    def _most(self, server: Server, pool: Pool, soft: bool) -> str | None:
        """The allowed host with the most room left, this plan's load counted
        (a heap per pool; an entry whose host was loaded since is put back
        with its new score when it comes up)."""
        heap = self.heaps.get(server.zone)
        if heap is None:
            heap = self.heaps[server.zone] = [(self._key(n, pool), n)
                                              for _, n in pool.order if n not in self.failed]
            heapq.heapify(heap)
        tried, found = [], None
        while heap:
            key, name = heapq.heappop(heap)
            now = self._key(name, pool)
            if now != key:
                heapq.heappush(heap, (now, name))
                continue
            if self._allowed(server, name, pool, soft):
                found = name
                break
            tried.append((key, name))
        for entry in tried:
            heapq.heappush(heap, entry)
        if found is not None:
            load = dict(self.ledger.load.get(found, {}))
            for rc, n in server.need.items():
                load[rc] = load.get(rc, 0) + n
            heapq.heappush(heap, (-self.index.rows[found].score(load), found))
        return found

    def _search(self, server: Server, pool: Pool, soft: bool) -> str | None:
        """Next fit in score order: the host after the one the previous server
        of this pool went to (wrapping), so that a plan spreads one server per
        host over the hosts with the most room; a few tries, then every host
        with enough of the server's scarcest resource class."""
        if self.most_room:
            return self._most(server, pool, soft)
        entries = pool.order
        n = len(entries)
        start = self.next.get(server.zone, 0) % n
        for step in range(min(n, FAST_TRIES)):
            at = (start + step) % n
            name = entries[at][1]
            if self._allowed(server, name, pool, soft):
                self.next[server.zone] = at + 1
                return name
        found = self._scan(server, pool, soft)
        if found is not None:
            self.next[server.zone] = pool.position(found) + 1
        return found

    def _scan(self, server: Server, pool: Pool, soft: bool) -> str | None:
        """The first allowed host in score order among those with enough of
        the server's scarcest resource class (exhaustive: None means none)."""
        if not server.need:
            return None
        rc = max(server.need, key=lambda c: server.need[c] / typical(pool, c))
        need = server.need[rc]
        best: tuple[float, str] | None = None
        for neg_free, name in pool.by_rc.get(rc, ()):
            if -neg_free < need:
                break
            if self._allowed(server, name, pool, soft):
                entry = (pool.key(name), name)
                if best is None or entry < best:
                    best = entry
        return best[1] if best is not None else None


__all__ = ["FailurePlan", "Index", "NoRoom", "PlanPolicy", "Placed", "Pool", "order", "plan"]
