"""What a failover plan in progress has put where, and the rules it is held to.

The placer (``capacity_plan``) asks a ``Ledger`` whether a server may go to a
host: room (every resource class within the host's free amount and
``max_unit``, counting what the plan, and the evacuations already in flight,
put there before) and server groups (hard anti-affinity never puts a member
beside another, counting members already running; hard affinity puts members
where the group's other members are; soft policies only when ``soft``). And,
for a server that found no host, why: ``Ledger.no_room`` names the zone, the
group or the resource classes short and by how much.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping

from instanceha.engine.capacity import Model, Server
from instanceha.engine.capacity_index import Index


@dataclasses.dataclass(frozen=True, slots=True)
class NoRoom:
    server: Server
    reason: str
    lacking: Mapping[str, int]
    """Resource class -> the server's need of each class no host had enough
    of (empty when a zone or a server group, not room, stopped it)."""


class Ledger:
    """The load a plan puts on each host and the group members it adds."""

    def __init__(self, model: Model, index: Index, failed: frozenset[str]) -> None:
        self.model = model
        self.index = index
        self.failed = failed
        self.load: dict[str, dict[str, int]] = {}
        """Target host -> resource class -> what the plan put there."""
        self.added: dict[str, dict[str, int]] = {}
        """group id -> host -> members this plan (or ``pending``) put there."""

    def take(self, server: Server, target: str) -> None:
        into = self.load.get(target)
        if into is None:
            into = self.load[target] = {}
        for rc, n in server.need.items():
            into[rc] = into.get(rc, 0) + n
        if server.group is not None:
            per_host = self.added.setdefault(server.group, {})
            per_host[target] = per_host.get(target, 0) + 1

    def members(self, group: str, host: str) -> int:
        """Members of the group on ``host`` once the failed hosts' are gone."""
        base = 0 if host in self.failed else self.model.members.get(group, {}).get(host, 0)
        return base + self.added.get(group, {}).get(host, 0)

    def fits(self, server: Server, host: str) -> bool:
        row = self.index.rows.get(host)
        return row is not None and row.fits(server.need, self.load.get(host))

    def group_ok(self, server: Server, host: str, soft: bool) -> bool:
        """May ``server`` go to ``host`` by its group (``soft``: soft rules too)?"""
        group = self.model.group_of(server)
        if group is None or (not group.policy.hard and not soft):
            return True
        if group.policy.anti:
            # its own former place is a failed host: counted out by members()
            return self.members(group.id, host) < max(1, group.max_per_host)
        where = self.affinity_hosts(group.id)
        return not where or host in where

    def affinity_hosts(self, group: str) -> set[str]:
        hosts = {h for h, n in self.model.members.get(group, {}).items()
                 if n and h not in self.failed}
        hosts.update(h for h, n in self.added.get(group, {}).items() if n)
        return hosts

    # -- why not --------------------------------------------------------------
    def missing(self, server: Server) -> dict[str, int]:
        """Resource class -> how much more than the most free on any allowed
        host the server needs (empty: each class fits somewhere on its own)."""
        pool = self.index.pool_of(server.zone)
        out = {}
        for rc, n in server.need.items():
            best = 0
            for neg_free, name in (pool.by_rc.get(rc, ()) if pool is not None else ()):
                if -neg_free <= best:
                    break
                if name in self.failed:
                    continue
                row = self.index.rows[name]
                best = max(best, min(row.free.get(rc, 0) - self.load.get(name, {}).get(rc, 0),
                                     row.max_unit.get(rc, 0)))
            if best < n:
                out[rc] = n - best
        return out

    def no_room(self, server: Server, avoid: Collection[str] = ()) -> NoRoom:
        """Why ``server`` found no host (``avoid``: hosts Nova refused for it)."""
        where = f"zone {server.zone}" if server.zone is not None else "the cloud"
        pool = self.index.pool_of(server.zone)
        live = [n for n in (pool.names() if pool is not None else ()) if n not in self.failed
                and n not in avoid]
        if not live:
            return NoRoom(server, f"no host of {where} takes servers (every one is down, "
                          "disabled or failed)", {})
        group = self.model.group_of(server)
        if group is not None and group.policy.hard:
            if any(self.fits(server, n) for n in live):
                if group.policy.anti:
                    why = (f"{group.label()}: every host of {where} with room holds "
                           f"{max(1, group.max_per_host)} of its members")
                else:
                    why = (f"{group.label()}: its members are on "
                           f"{', '.join(sorted(self.affinity_hosts(group.id)))}, without "
                           "room for it")
                return NoRoom(server, why, {})
        missing = self.missing(server)
        if not missing:
            return NoRoom(server, f"no room: no single host of {where} has "
                          f"{_amounts(server.need)} free together", dict(server.need))
        most = ", ".join(f"{server.need[rc] - missing[rc]} {rc}" for rc in sorted(missing))
        return NoRoom(server, f"no room: needs {_amounts(server.need)}; the most free on a "
                      f"host of {where}: {most}", {rc: server.need[rc] for rc in missing})


def _amounts(need: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {rc}" for rc, n in sorted(need.items()))


__all__ = ["Ledger", "NoRoom"]
