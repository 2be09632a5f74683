"""Keeps the capacity model (``engine.capacity.Model``) in step with Placement
and Nova, one incremental read at a time.

A read costs, on a steady cloud: the servers changed since the last read
(Nova's ``changes-since``, deleted ones included), one list of resource
providers, the inventories and usages of the providers whose generation
moved (Placement bumps it when allocations are written on a provider, not
when they are deleted) or that a changed server came to or left, one list of
server groups and the aggregates (cached by the Nova adapter). The first read lists
every server; the hypervisors (compute node uuid -> service host) are listed
again only when an unknown provider appears. Image properties (when neither
the server's metadata nor its flavor decides its recovery and priority) are
read once per image and kept ``image_ttl`` seconds.

Each server's recovery and restart priority are decided here with the
engine's rules (``instance_policy``), from the same facts the recovery reads.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Mapping

from instanceha.clock import SYSTEM, Clock
from instanceha.compute.capacity_reads import CapacityReads, GroupRecord, ServerRecord
from instanceha.engine import capacity as cap
from instanceha.engine import instance_policy as ip
from instanceha.engine.marker import MarkerState
from instanceha.engine.model import Phase

CHANGES_MARGIN = datetime.timedelta(seconds=5)
"""``changes-since`` is read from this long before the newest change seen
(Nova's clock and its whole-second stamps)."""
_TRUE = frozenset({"", "true", "yes", "1", "on"})


@dataclasses.dataclass(frozen=True)
class ReaderSettings:
    default_recovery: ip.Recovery = ip.Recovery.IGNORE
    default_priority: int = 300
    failure_domain_key: str = "instanceha:failure_domain"
    image_ttl: float = 3600.0


@dataclasses.dataclass
class ReadStats:
    requests: int = 0
    providers_read: int = 0
    servers_read: int = 0
    full: bool = False


@dataclasses.dataclass(frozen=True)
class Grouping:
    """Nova's server groups and aggregates as last read, and each host's
    aggregates (name -> metadata), rebuilt only when the aggregates change."""

    groups: tuple = ()
    aggregates: tuple = ()
    by_host: Mapping[str, dict[str, dict[str, str]]] = dataclasses.field(default_factory=dict)


class Providers:
    """What the model knows of Placement's root providers: which host each is
    (from the hypervisors), the generation last read, and each host's
    inventories and usages."""

    def __init__(self) -> None:
        self.rp_host: dict[str, str] = {}
        self.generation: dict[str, int] = {}
        self.inventory: dict[str, dict[str, cap.Inventory]] = {}
        self.used: dict[str, dict[str, int]] = {}

    def stale(self, uuid: str, generation: int, host: str | None, touched: set[str]) -> bool:
        """Must the provider's inventories and usages be read again?"""
        return self.generation.get(uuid) != generation or host in touched

    def apply(self, rp_host: dict[str, str], moved: Mapping, providers: Mapping) -> set:
        """Take what a read gave; returns the hosts whose provider moved or went."""
        self.rp_host = rp_host
        moved_hosts = {rp_host.get(u) for u in moved}
        for uuid, (generation, inventories, usages) in moved.items():
            host = rp_host.get(uuid)
            self.generation[uuid] = generation
            if host is None:
                continue
            self.inventory[host] = {rc: _inventory(v) for rc, v in inventories.items()}
            self.used[host] = usages
        for uuid in list(self.generation):
            if uuid not in providers:
                self.generation.pop(uuid)
                host = rp_host.get(uuid)
                if host is not None:
                    self.inventory.pop(host, None)
                    self.used.pop(host, None)
                    moved_hosts.add(host)
        return moved_hosts


class ModelReader:
    def __init__(self, reads: CapacityReads, settings: ReaderSettings = ReaderSettings(),
                 services: Callable[[], Mapping] | None = None,
                 phases: Callable[[], Mapping[str, Phase]] = dict,
                 clock: Clock = SYSTEM) -> None:
        """``services``: Nova's compute services by host as last read by the
        recovery actuator (no read of its own); None: read them."""
        self.reads = reads
        self.settings = settings
        self.services = services
        self.phases = phases
        self.clock = clock
        self.model = cap.Model()
        self.providers = Providers()
        self._records: dict[str, ServerRecord] = {}
        self._since: datetime.datetime | None = None
        self._images: dict[str, tuple[float, dict]] = {}
        self.grouping = Grouping()
        self._host_inputs: dict[str, tuple] = {}
        """host -> what its Host record was built from (rebuilt when it changes)."""

    # -- the read (I/O, outside the caller's lock) --------------------------------
    def read(self) -> tuple[dict | None, ReadStats]:
        """Everything that moved since the last read, as a batch for ``apply``;
        None while Nova's services are not known yet (the recovery actuator
        has not read them: every host would look out of service)."""
        stats = ReadStats()
        if self.services is not None and not self.services():
            return None, stats
        full = self._since is None
        since = None if self._since is None else self._since - CHANGES_MARGIN
        servers = self._count(stats, self.reads.servers, since)
        stats.servers_read, stats.full = len(servers), full
        # Placement bumps a provider's generation when allocations are written
        # on it, not when they are deleted: the hosts a server left (deleted,
        # moved) or came to are read again whatever their generation says
        touched: set[str] = set()
        for rec in servers:
            old = self._records.get(rec.id)
            touched.update(h for h in (rec.host, old.host if old else None) if h)
        providers = [p for p in self._count(stats, self.reads.providers) if p.root == p.uuid]
        rp_host = self.providers.rp_host
        if any(p.uuid not in rp_host for p in providers):
            rp_host = self._count(stats, self.reads.hypervisors)
        moved = {}
        for p in providers:
            if not self.providers.stale(p.uuid, p.generation, rp_host.get(p.uuid), touched):
                continue
            inventories = self._count(stats, self.reads.inventories, p.uuid)
            usages = self._count(stats, self.reads.usages, p.uuid)
            moved[p.uuid] = (p.generation, inventories, usages)
        stats.providers_read = len(moved)
        groups = self._count(stats, self.reads.server_groups)
        aggregates = self._count(stats, self.reads.aggregates)
        services = self.services() if self.services is not None else {
            s.host: s for s in self._count(stats, self.reads.services)}
        batch = {"providers": {p.uuid: p for p in providers}, "rp_host": rp_host,
                 "moved": moved, "servers": servers, "full": full, "groups": groups,
                 "aggregates": aggregates, "services": dict(services),
                 "phases": dict(self.phases())}
        batch["images"] = self._read_images(stats, batch)
        return batch, stats

    def _count(self, stats: ReadStats, call, *args):
        stats.requests += 1  # pages of a paged list count as one here
        return call(*args)

    def _read_images(self, stats: ReadStats, batch: dict) -> dict[str, dict]:
        """Image properties of the servers read now whose own facts (metadata,
        flavor) do not decide, when not cached or older than ``image_ttl``; a
        server not read again keeps what its image said when it was."""
        now = self.clock.monotonic()
        for rec in batch["servers"]:
            if not rec.image_id or rec.deleted or self._decided_without_image(rec):
                continue
            hit = self._images.get(rec.image_id)
            if hit is None or now - hit[0] >= self.settings.image_ttl:
                props = dict(self._count(stats, self.reads.image_properties, rec.image_id))
                self._images[rec.image_id] = (now, props)
        return {k: v for k, (_, v) in self._images.items()}

    @staticmethod
    def _decided_without_image(rec: ServerRecord) -> bool:
        facts = ip.InstanceFacts(server_metadata=rec.metadata,
                                 flavor_extra_specs=_specs(rec))
        return ip.decided_by_server_or_flavor(facts) and \
            ip.priority_decided_by_server_or_flavor(facts)

    # -- the apply (pure bookkeeping, under the caller's lock) ---------------------
    def apply(self, batch: dict) -> None:
        moved_hosts = self.providers.apply(batch["rp_host"], batch["moved"], batch["providers"])
        gone: set[str] = set()
        if batch["full"]:
            gone = set(self._records)
            self._records = {}
        for rec in batch["servers"]:
            if rec.deleted or not rec.host:
                if self._records.pop(rec.id, None) is not None:
                    gone.add(rec.id)
            else:
                self._records[rec.id] = rec
                gone.discard(rec.id)
            if rec.updated is not None and (self._since is None or rec.updated > self._since):
                self._since = rec.updated
        if self._since is None:  # an empty cloud: changes from now on
            self._since = self.clock.utcnow()
        aggregates = _aggregates(batch["aggregates"])
        groups = tuple(sorted(batch["groups"], key=lambda g: g.id))
        known = self.grouping
        regrouped, reaggregated = groups != known.groups, aggregates != known.aggregates
        everyone = batch["full"] or regrouped or reaggregated
        by_host = _by_host(aggregates) if reaggregated or not known.by_host else known.by_host
        self.grouping = Grouping(groups, aggregates, by_host)
        self._apply_hosts(batch, moved_hosts, everyone)
        if regrouped or batch["full"]:
            self.model.set_groups(group_of(g) for g in groups)
        member_group = {m: g.id for g in groups for m in g.members}
        changed = self._records.values() if everyone else \
            [r for r in batch["servers"] if r.id in self._records]
        memo: dict = {}  # servers alike (metadata, flavor, image, host's aggregates) decide alike
        for rec in changed:
            self.model.set_server(self._server(rec, member_group, by_host, batch["images"], memo))
        for sid in gone:
            self.model.remove_server(sid)

    def _apply_hosts(self, batch: dict, moved: set, everyone: bool) -> None:
        """A Host record for each host whose inputs changed (its provider's
        generation, its service, its phase, its aggregates)."""
        services, phases = batch["services"], batch["phases"]
        names = set(services) | set(self.providers.inventory)
        for name in names:
            svc = services.get(name)
            inputs = (_service_facts(svc), phases.get(name))
            if not everyone and name not in moved and self._host_inputs.get(name) == inputs:
                continue
            self._host_inputs[name] = inputs
            role, why = _role(svc, phases.get(name))
            aggs = self.grouping.by_host.get(name, {})
            self.model.set_host(cap.Host(
                name, self.providers.inventory.get(name, {}), self.providers.used.get(name, {}),
                zone=getattr(svc, "zone", None), aggregates=frozenset(aggs),
                domain=self._domain(aggs), role=role, why_out=why))
        for name in [h for h in self._host_inputs if h not in names]:
            del self._host_inputs[name]
            self.model.remove_host(name)

    def _domain(self, aggs: Mapping[str, Mapping[str, str]]) -> str | None:
        key = self.settings.failure_domain_key
        found = sorted((str(v).strip() if str(v).strip().lower() not in _TRUE else name)
                       for name, meta in aggs.items() for k, v in meta.items() if k == key)
        return found[0] if found else None

    def _server(self, rec: ServerRecord, member_group, by_host, images, memo: dict) -> cap.Server:
        flavor, meta = rec.flavor, rec.metadata
        specs = flavor.get("extra_specs")
        image = images.get(rec.image_id) if rec.image_id else None
        aggs = by_host.get(rec.host)
        # servers alike decide alike: the key is cheap (no sorting; two equal
        # dicts in another order only miss the memo), its parts exact
        key = (tuple(meta.items()) if meta else None,
               tuple(specs.items()) if specs and isinstance(specs, Mapping) else None,
               flavor.get("vcpus"), flavor.get("ram"), flavor.get("disk"),
               flavor.get("ephemeral"), flavor.get("swap"), rec.image_id is None,
               id(image), id(aggs))
        known = memo.get(key)
        if known is None:
            specs = _specs(rec)
            facts = ip.InstanceFacts(server_metadata=meta, flavor_extra_specs=specs,
                                     image_properties=image or {}, aggregates=aggs or {})
            recovery = ip.decide(facts, self.settings.default_recovery).recovery
            priority = ip.decide_priority(facts, self.settings.default_priority).priority
            need = cap.flavor_need(_int(flavor.get("vcpus")), _int(flavor.get("ram")),
                                   _int(flavor.get("disk")), _int(flavor.get("ephemeral")),
                                   _int(flavor.get("swap")), specs,
                                   volume_backed=rec.image_id is None)
            known = memo[key] = (need, recovery is ip.Recovery.EVACUATE, priority)
        need, evacuate, priority = known
        return cap.Server(rec.id, rec.name, rec.host or "", need, evacuate=evacuate,
                          priority=priority, zone=rec.zone, group=member_group.get(rec.id),
                          project_id=rec.project_id)


def _service_facts(svc) -> tuple | None:
    if svc is None:
        return None
    return (svc.up, svc.forced_down, svc.disabled, svc.disabled_reason, svc.zone)


def _role(svc, phase: Phase | None) -> tuple[cap.Role, str]:
    if svc is None:
        return cap.Role.OUT, "no nova-compute service"
    if svc.forced_down or not svc.up:
        return cap.Role.OUT, "nova-compute down"
    if phase is not None and phase not in (Phase.HEALTHY, Phase.DEGRADED):
        return cap.Role.OUT, f"agent {phase.value}"
    if svc.disabled:
        marker = svc.marker
        if marker is not None and marker.state is MarkerState.RESERVED:
            return cap.Role.SPARE, ""
        return cap.Role.OUT, "disabled"
    return cap.Role.TARGET, ""


def _inventory(v: Mapping) -> cap.Inventory:
    return cap.Inventory(total=_int(v.get("total")), reserved=_int(v.get("reserved")),
                         allocation_ratio=float(v.get("allocation_ratio") or 1.0),
                         max_unit=_int(v["max_unit"]) if v.get("max_unit") is not None
                         else None)


def _int(value) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _specs(rec: ServerRecord) -> dict[str, str]:
    specs = rec.flavor.get("extra_specs")
    return {str(k): str(v) for k, v in specs.items()} if isinstance(specs, Mapping) else {}


def group_of(g: GroupRecord) -> cap.Group:
    """The engine's group for Nova's record of it."""
    try:
        policy = cap.GroupPolicy(g.policy)
    except ValueError:  # a policy this version does not know: treated as soft
        policy = cap.GroupPolicy.SOFT_ANTI_AFFINITY
    return cap.Group(g.id, g.name, policy, max(1, g.max_per_host))


def _aggregates(items) -> tuple:
    return tuple(sorted((a.get("name", ""), tuple(sorted(a.get("hosts") or ())),
                         tuple(sorted((a.get("metadata") or {}).items()))) for a in items))


def _by_host(aggregates) -> dict[str, dict[str, dict[str, str]]]:
    """Host -> its aggregates (name -> metadata). Hosts in the same aggregates
    share one mapping: the decisions' memo keys on it, so that the servers of
    a rack decide once per kind, not once per host. Read-only."""
    member_of: dict[str, list[int]] = {}
    for i, (_, hosts, _) in enumerate(aggregates):
        for h in hosts:
            member_of.setdefault(h, []).append(i)
    shared: dict[tuple[int, ...], dict[str, dict[str, str]]] = {}
    out: dict[str, dict[str, dict[str, str]]] = {}
    for h, indexes in member_of.items():
        key = tuple(indexes)
        mapping = shared.get(key)
        if mapping is None:
            mapping = shared[key] = {aggregates[i][0]: dict(aggregates[i][2]) for i in key}
        out[h] = mapping
    return out
