"""The cloud's capacity as the failover planner sees it: hosts with their
Placement inventories and usages, the servers on them with what they need,
and the server groups they belong to.

Pure: the controller reads Placement and Nova (``controller/capacity.py``) and
feeds plain records in; nothing here does I/O or reads a clock. The model is
mutable so that one changed server or host costs an update, not a rebuild:
every change marks what it touched (``take_changes``), and the coverage
tracker (``capacity_coverage.py``) re-plans only what those changes can affect.

Room on a host follows Placement's own rule: a resource class has
``(total - reserved) * allocation_ratio`` units, of which ``used`` are
allocated; one server may take at most ``max_unit`` of it.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping

VCPU, PCPU, MEMORY_MB, DISK_GB = "VCPU", "PCPU", "MEMORY_MB", "DISK_GB"
STANDARD = (VCPU, PCPU, MEMORY_MB, DISK_GB)


@dataclasses.dataclass(frozen=True, slots=True)
class Inventory:
    """One resource class of one host, as Placement reports it."""

    total: int
    reserved: int = 0
    allocation_ratio: float = 1.0
    max_unit: int | None = None

    @property
    def capacity(self) -> int:
        """Placement's usable amount: ``(total - reserved) * allocation_ratio``."""
        return max(0, int((self.total - self.reserved) * self.allocation_ratio))


class Role(enum.Enum):
    TARGET = "target"
    """Enabled and up: Nova's scheduler may place servers here."""
    SPARE = "spare"
    """A reserved spare (disabled with instanceha's reserved marker): takes a
    failed host's servers with ``[recovery] method = reserved_hosts``."""
    OUT = "out"
    """Takes nothing: disabled by an operator, down, forced down, failing."""


@dataclasses.dataclass(frozen=True, slots=True)
class Host:
    name: str
    inventory: Mapping[str, Inventory] = dataclasses.field(default_factory=dict)
    used: Mapping[str, int] = dataclasses.field(default_factory=dict)
    zone: str | None = None
    aggregates: frozenset[str] = frozenset()
    domain: str | None = None
    """The failure domain (rack, power feed) the host shares with others."""
    role: Role = Role.TARGET
    why_out: str = ""
    """Why a host is OUT (``disabled``, ``nova-compute down``...), for reasons."""

    def free(self, rc: str) -> int:
        inv = self.inventory.get(rc)
        return inv.capacity - self.used.get(rc, 0) if inv is not None else 0

    def max_unit(self, rc: str) -> int:
        inv = self.inventory.get(rc)
        if inv is None:
            return 0
        return inv.max_unit if inv.max_unit is not None else inv.capacity


class GroupPolicy(enum.Enum):
    AFFINITY = "affinity"
    ANTI_AFFINITY = "anti-affinity"
    SOFT_AFFINITY = "soft-affinity"
    SOFT_ANTI_AFFINITY = "soft-anti-affinity"

    @property
    def hard(self) -> bool:
        return self in (GroupPolicy.AFFINITY, GroupPolicy.ANTI_AFFINITY)

    @property
    def anti(self) -> bool:
        return self in (GroupPolicy.ANTI_AFFINITY, GroupPolicy.SOFT_ANTI_AFFINITY)


@dataclasses.dataclass(frozen=True, slots=True)
class Group:
    """A Nova server group: its policy and (anti-affinity) ``max_server_per_host``."""

    id: str
    name: str
    policy: GroupPolicy
    max_per_host: int = 1

    def label(self) -> str:
        kind = "hard" if self.policy.hard else "soft"
        return f"{self.policy.value} group {self.name or self.id} ({kind})"


@dataclasses.dataclass(slots=True)
class Server:
    """Not frozen (a frozen dataclass's ``__init__`` goes through
    ``object.__setattr__``, a third of the model's build time at 100,000
    servers): never changed once built; a change is a new ``Server``."""

    id: str
    name: str
    host: str
    need: Mapping[str, int]
    """Resource class -> amount (the flavor's, as Placement allocates it)."""
    evacuate: bool = True
    """Its recovery policy is evacuate (notify/ignore servers need no room)."""
    priority: int = 300
    zone: str | None = None
    """The availability zone it must stay in (None: any)."""
    group: str | None = None
    """The id of its server group, if any."""
    project_id: str | None = None


@dataclasses.dataclass(frozen=True)
class Changes:
    """What changed since the last ``take_changes()``."""

    hosts: frozenset[str]
    """Hosts whose servers, inventory, usage, role or place changed."""
    freed: frozenset[str]
    """Of those, the hosts that may have more room than before."""
    groups: frozenset[str]
    """Server groups whose policy or members changed."""
    layout: bool
    """Hosts came, went, or changed zone, role, domain or aggregates."""

    def __bool__(self) -> bool:
        return bool(self.hosts or self.groups or self.layout)


class Model:
    """Hosts, servers and groups, kept current by the controller's reader."""

    def __init__(self) -> None:
        self.hosts: dict[str, Host] = {}
        self.servers: dict[str, Server] = {}
        self.on_host: dict[str, dict[str, Server]] = {}
        self.groups: dict[str, Group] = {}
        self.members: dict[str, dict[str, int]] = {}
        """group id -> host -> how many of its members run there."""
        self._evacuable: dict[str, tuple[Server, ...]] = {}
        """host -> its evacuable servers in dispatch order (kept until it changes)."""
        self._hosts_changed: set[str] = set()
        self._freed: set[str] = set()
        self._groups_changed: set[str] = set()
        self._layout = True

    # -- hosts ----------------------------------------------------------------
    def set_host(self, host: Host) -> None:
        old = self.hosts.get(host.name)
        if old == host:
            return
        self.hosts[host.name] = host
        self.on_host.setdefault(host.name, {})
        self._hosts_changed.add(host.name)
        if old is None or (old.zone, old.role, old.domain, old.aggregates) != \
                (host.zone, host.role, host.domain, host.aggregates):
            self._layout = True
            self._freed.add(host.name)
        elif any(host.free(rc) > old.free(rc) for rc in host.inventory):
            self._freed.add(host.name)

    def remove_host(self, name: str) -> None:
        if self.hosts.pop(name, None) is not None:
            self._hosts_changed.add(name)
            self._layout = True

    # -- servers --------------------------------------------------------------
    def set_server(self, server: Server) -> None:
        old = self.servers.get(server.id)
        if old == server:
            return
        if old is not None:
            self._unplace(old)
        self.servers[server.id] = server
        self.on_host.setdefault(server.host, {})[server.id] = server
        self._hosts_changed.add(server.host)
        self._evacuable.pop(server.host, None)
        if server.group is not None:
            per_host = self.members.setdefault(server.group, {})
            per_host[server.host] = per_host.get(server.host, 0) + 1
            self._groups_changed.add(server.group)

    def remove_server(self, server_id: str) -> None:
        old = self.servers.pop(server_id, None)
        if old is not None:
            self._unplace(old)

    def _unplace(self, old: Server) -> None:
        self.on_host.get(old.host, {}).pop(old.id, None)
        self._evacuable.pop(old.host, None)
        self._hosts_changed.add(old.host)
        self._freed.add(old.host)
        if old.group is not None:
            per_host = self.members.get(old.group, {})
            left = per_host.get(old.host, 0) - 1
            if left > 0:
                per_host[old.host] = left
            else:
                per_host.pop(old.host, None)
            self._groups_changed.add(old.group)

    # -- groups ---------------------------------------------------------------
    def set_groups(self, groups: Iterable[Group]) -> None:
        fresh = {g.id: g for g in groups}
        for gid in fresh.keys() | self.groups.keys():
            if fresh.get(gid) != self.groups.get(gid):
                self._groups_changed.add(gid)
        self.groups = fresh

    def group_of(self, server: Server) -> Group | None:
        return self.groups.get(server.group) if server.group is not None else None

    # -- changes --------------------------------------------------------------
    def take_changes(self) -> Changes:
        changes = Changes(frozenset(self._hosts_changed), frozenset(self._freed),
                          frozenset(self._groups_changed), self._layout)
        self._hosts_changed, self._freed, self._groups_changed = set(), set(), set()
        self._layout = False
        return changes

    def evacuable(self, host: str) -> tuple[Server, ...]:
        """The host's evacuable servers, highest priority first, then the
        largest, then the name (the order a recovery sends them in)."""
        known = self._evacuable.get(host)
        if known is None:
            known = self._evacuable[host] = tuple(sorted(
                (s for s in self.on_host.get(host, {}).values() if s.evacuate), key=rank))
        return known

    def hosts_of_group(self, group_id: str) -> frozenset[str]:
        return frozenset(self.members.get(group_id, {}))

    def domains(self) -> dict[str, frozenset[str]]:
        """Failure domain -> its hosts (hosts without one are in none)."""
        out: dict[str, set[str]] = {}
        for h in self.hosts.values():
            if h.domain:
                out.setdefault(h.domain, set()).add(h.name)
        return {d: frozenset(hs) for d, hs in out.items()}

    def demand(self, host: str) -> dict[str, int]:
        """What the host's evacuable servers need, per resource class."""
        total: dict[str, int] = {}
        for s in self.on_host.get(host, {}).values():
            if s.evacuate:
                for rc, n in s.need.items():
                    total[rc] = total.get(rc, 0) + n
        return total


def rank(s: Server) -> tuple[int, int, str, str]:
    """Dispatch order: highest priority, then the largest (its largest
    class's amount), then the name."""
    return (-s.priority, -max(s.need.values(), default=0), s.name, s.id)


def flavor_need(vcpus: int, ram: int, disk: int, ephemeral: int = 0, swap: int = 0,
                extra_specs: Mapping[str, str] | None = None,
                volume_backed: bool = False) -> dict[str, int]:
    """What Placement allocates for a flavor, as Nova computes it: VCPU (PCPU
    with ``hw:cpu_policy=dedicated``), MEMORY_MB, DISK_GB (root disk unless the
    server boots from a volume, plus ephemeral and swap), then the flavor's
    ``resources:CLASS=N`` extra specs override or add classes (0 removes)."""
    specs = extra_specs or {}
    need = {MEMORY_MB: int(ram)}
    cpu = PCPU if str(specs.get("hw:cpu_policy", "")).lower() == "dedicated" else VCPU
    need[cpu] = int(vcpus)
    disk_gb = (0 if volume_backed else int(disk)) + int(ephemeral or 0) \
        + (int(swap or 0) + 1023) // 1024
    if disk_gb:
        need[DISK_GB] = disk_gb
    for key, value in specs.items():
        if not key.startswith("resources") or ":" not in key:
            continue
        rc = key.split(":", 1)[1].strip().upper()
        try:
            amount = int(value)
        except (TypeError, ValueError):
            continue
        if amount > 0:
            need[rc] = amount
        else:
            need.pop(rc, None)
    return {rc: n for rc, n in need.items() if n > 0}
