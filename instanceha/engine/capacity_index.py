"""The capacity model's hosts as a failover plan reads them.

One ``Row`` per host (free amount and ``max_unit`` per resource class), the
hosts that take servers grouped in a ``Pool`` per availability zone (and one
for the whole cloud), kept sorted by score (the most room first) and by the
free amount of each class, and the reserved spares. ``Index.update`` follows
the model's changed hosts, so that a model read again re-sorts only those
(``capacity_coverage``); ``Index.of`` builds it at once. The placer
(``capacity_plan``) reads it and never changes it.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping

from instanceha.engine.capacity import (
    DISK_GB,
    MEMORY_MB,
    PCPU,
    VCPU,
    Host,
    Model,
    Role,
)

SCORED = (VCPU, PCPU, MEMORY_MB, DISK_GB)
"""The resource classes a host's score (its room left) is judged on."""


class Row:
    """One host as the placer reads it: free amount and ``max_unit`` per class."""

    __slots__ = ("name", "free", "max_unit", "zone", "room", "capacity", "base")

    def __init__(self, host: Host) -> None:
        self.name = host.name
        self.zone = host.zone
        used = host.used
        capacity: dict[str, int] = {}
        free: dict[str, int] = {}
        max_unit: dict[str, int] = {}
        room: dict[str, int] = {}
        for rc, inv in host.inventory.items():  # one pass: 5,000 hosts per full read
            c = inv.capacity
            f = free[rc] = c - used.get(rc, 0)
            m = max_unit[rc] = inv.max_unit if inv.max_unit is not None else c
            room[rc] = f if f < m else m
            if c > 0 and rc in SCORED:
                capacity[rc] = c
        self.capacity, self.free, self.max_unit = capacity, free, max_unit
        self.room = room
        """What one server may take of each class while nothing is planned here."""
        self.base = self.score({})
        """The host's score while nothing is planned here (its key in a pool)."""

    def score(self, load: Mapping[str, int]) -> float:
        """The host's score once ``load`` is added: the smallest share of
        capacity left free over its resource classes."""
        shares = [(self.free.get(rc, 0) - load.get(rc, 0)) / c for rc, c in self.capacity.items()]
        return min(shares) if shares else 0.0

    def fits(self, need: Mapping[str, int], load: Mapping[str, int] | None) -> bool:
        free, max_unit = self.free, self.max_unit
        if load is None:
            for rc, n in need.items():
                if free.get(rc, 0) < n or max_unit.get(rc, 0) < n:
                    return False
            return True
        for rc, n in need.items():
            if free.get(rc, 0) - load.get(rc, 0) < n or max_unit.get(rc, 0) < n:
                return False
        return True


class Pool:
    """The hosts that take servers in one zone (or anywhere: zone None), kept
    sorted by score (the most room first) and by the free amount of each
    resource class."""

    def __init__(self) -> None:
        self.order: list[tuple[float, str]] = []
        self.by_rc: dict[str, list[tuple[int, str]]] = {}
        self._keys: dict[str, tuple[float, dict[str, int]]] = {}
        self._names: list[str] | None = None

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, name: str) -> bool:
        return name in self._keys

    def add(self, host: Host, row: Row) -> None:
        self.discard(host.name)
        key = -row.base
        bisect.insort(self.order, (key, host.name))
        self._names = None
        for rc, free in row.free.items():
            bisect.insort(self.by_rc.setdefault(rc, []), (-free, host.name))
        self._keys[host.name] = (key, dict(row.free))

    def discard(self, name: str) -> None:
        known = self._keys.pop(name, None)
        if known is None:
            return
        key, frees = known
        _remove(self.order, (key, name))
        self._names = None
        for rc, free in frees.items():
            _remove(self.by_rc[rc], (-free, name))

    def position(self, name: str) -> int:
        return bisect.bisect_left(self.order, (self._keys[name][0], name))

    def key(self, name: str) -> float:
        """The host's sort key in ``order`` (minus its score when indexed)."""
        return self._keys[name][0]

    def names_in_order(self) -> list[str]:
        """The hosts' names as ``order`` sorts them (kept until it changes)."""
        if self._names is None:
            self._names = [name for _, name in self.order]
        return self._names

    def names(self) -> Iterable[str]:
        """The hosts of the pool (in no particular order)."""
        return self._keys.keys()

    def append(self, host: Host, row: Row) -> None:
        """Add without keeping the order: ``sort()`` once after the last."""
        key = -row.base
        self.order.append((key, host.name))
        self._names = None
        for rc, free in row.free.items():
            self.by_rc.setdefault(rc, []).append((-free, host.name))
        self._keys[host.name] = (key, dict(row.free))

    def sort(self) -> None:
        self.order.sort()
        self._names = None
        for items in self.by_rc.values():
            items.sort()


def _remove(items: list[tuple[float, str]] | list[tuple[int, str]],
            entry: tuple[float, str]) -> None:
    i = bisect.bisect_left(items, entry)
    if i < len(items) and items[i] == entry:
        del items[i]


class Index:
    """The model's hosts as the placer reads them: the target hosts by zone,
    the spares, one ``Row`` per host; kept as the model changes."""

    def __init__(self) -> None:
        self.pools: dict[str | None, Pool] = {None: Pool()}
        self.spares: set[str] = set()
        self.rows: dict[str, Row] = {}
        self._zone: dict[str, str | None] = {}

    def update(self, model: Model, names: Iterable[str]) -> None:
        for name in names:
            old_zone = self._zone.pop(name, None)
            self.pools[None].discard(name)
            if old_zone is not None and old_zone in self.pools:
                self.pools[old_zone].discard(name)
            self.spares.discard(name)
            self.rows.pop(name, None)
            host = model.hosts.get(name)
            if host is None:
                continue
            row = self.rows[name] = Row(host)
            if host.role is Role.SPARE:
                self.spares.add(name)
            elif host.role is Role.TARGET:
                self._zone[name] = host.zone
                self.pools[None].add(host, row)
                if host.zone is not None:
                    self.pools.setdefault(host.zone, Pool()).add(host, row)

    @classmethod
    def of(cls, model: Model) -> Index:
        """Built at once (sorted once, not inserted one by one)."""
        index = cls()
        for name, host in model.hosts.items():
            row = index.rows[name] = Row(host)
            if host.role is Role.SPARE:
                index.spares.add(name)
            elif host.role is Role.TARGET:
                index._zone[name] = host.zone
                for zone in (None, host.zone) if host.zone is not None else (None,):
                    index.pools.setdefault(zone, Pool()).append(host, row)
        for pool in index.pools.values():
            pool.sort()
        return index

    def pool_of(self, zone: str | None) -> Pool | None:
        """The pool a server of ``zone`` is placed from (None: no host takes
        servers in that zone)."""
        return self.pools.get(zone) if zone is not None else self.pools[None]


def typical(pool: Pool, rc: str) -> float:
    """A resource class's scale in the pool (the largest free amount), for
    choosing the server's scarcest class."""
    items = pool.by_rc.get(rc)
    return float(max(1, -items[0][0])) if items else 1.0


__all__ = ["SCORED", "Index", "Pool", "Row", "typical"]
