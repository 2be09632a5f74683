"""The bulk reads of the capacity model: Placement and Nova, through the
Nova adapter's session (same credentials, same typed errors, same API call
counting).

Pinned microversions:

* Placement 1.14: resource providers with ``root_provider_uuid`` (only roots,
  the compute nodes, are modelled; nested providers are not)
* Nova 2.53: hypervisors (detail: the only listing with the service host) by
  uuid (the compute node's uuid is its resource provider's)
* Nova 2.64: server groups with ``policy`` and ``rules`` (``max_server_per_host``)
* Nova 2.73: servers with their flavor (vcpus, ram, disk, ephemeral, swap,
  extra specs) embedded, ``changes-since`` for the incremental read

Every read is one request, or one per page of 1000; inventories and usages
are read per resource provider, only for those whose generation moved.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from urllib.parse import quote

from instanceha.compute import exceptions as exc
from instanceha.compute.model import parse_time

MV_PLACEMENT = "1.14"
MV_HYPERVISORS = "2.53"
MV_GROUPS = "2.64"
MV_SERVERS = "2.73"
PAGE = 1000


@dataclasses.dataclass(frozen=True)
class Provider:
    uuid: str
    name: str
    generation: int
    root: str


@dataclasses.dataclass(frozen=True)
class ServerRecord:
    """A server as the capacity model reads it."""

    id: str
    name: str
    host: str | None
    status: str
    project_id: str | None
    metadata: Mapping[str, str]
    flavor: Mapping[str, object]
    """vcpus, ram, disk, ephemeral, swap, extra_specs (Nova's embedded copy)."""
    image_id: str | None
    zone: str | None
    updated: datetime.datetime | None

    @property
    def deleted(self) -> bool:
        return self.status in ("DELETED", "SOFT_DELETED")

    @classmethod
    def from_api(cls, d: Mapping) -> ServerRecord:
        image = d.get("image")
        return cls(
            id=d["id"], name=d.get("name", ""), host=d.get("OS-EXT-SRV-ATTR:host"),
            status=d.get("status", ""), project_id=d.get("tenant_id"),
            metadata=dict(d.get("metadata") or {}), flavor=dict(d.get("flavor") or {}),
            image_id=image.get("id") if isinstance(image, dict) and image.get("id") else None,
            zone=d.get("OS-EXT-AZ:availability_zone"), updated=parse_time(d.get("updated")))


@dataclasses.dataclass(frozen=True)
class GroupRecord:
    id: str
    name: str
    policy: str
    max_per_host: int
    members: tuple[str, ...]

    @classmethod
    def from_api(cls, d: Mapping) -> GroupRecord:
        rules = d.get("rules") or {}
        try:
            per_host = int(rules.get("max_server_per_host", 1))
        except (TypeError, ValueError):
            per_host = 1
        policy = d.get("policy") or (d.get("policies") or ["?"])[0]
        return cls(id=d["id"], name=d.get("name") or "", policy=policy,
                   max_per_host=per_host, members=tuple(d.get("members") or ()))


class CapacityReads:
    """Placement and Nova as the capacity model reads them."""

    def __init__(self, nova) -> None:
        self.nova = nova  # a NovaClient: its session, recorder and error mapping

    def _get(self, url: str, operation: str, microversion: str, service: str = "compute"):
        resp = self.nova._call("GET", url, operation, microversion, service=service)
        return exc.raise_for_response(resp, operation).json()

    # -- Placement --------------------------------------------------------------
    def providers(self) -> list[Provider]:
        body = self._get("/resource_providers", "list resource providers", MV_PLACEMENT,
                         "placement")
        return [Provider(p["uuid"], p.get("name", ""), int(p.get("generation") or 0),
                         p.get("root_provider_uuid") or p["uuid"])
                for p in body.get("resource_providers", [])]

    def inventories(self, uuid: str) -> dict[str, dict]:
        body = self._get(f"/resource_providers/{uuid}/inventories",
                         f"read inventories of {uuid}", MV_PLACEMENT, "placement")
        return dict(body.get("inventories") or {})

    def usages(self, uuid: str) -> dict[str, int]:
        body = self._get(f"/resource_providers/{uuid}/usages", f"read usages of {uuid}",
                         MV_PLACEMENT, "placement")
        return {rc: int(n) for rc, n in (body.get("usages") or {}).items()}

    # -- Nova -----------------------------------------------------------------
    def hypervisors(self) -> dict[str, str]:
        """Compute node uuid (its resource provider's) -> its service host."""
        out = {}
        for h in self._paged("/os-hypervisors/detail", "hypervisors", "list hypervisors",
                             MV_HYPERVISORS):
            host = (h.get("service") or {}).get("host")
            if host:
                out[str(h["id"])] = host
        return out

    def servers(self, changes_since: datetime.datetime | None = None) -> list[ServerRecord]:
        """Every server of every project (or those changed since then, deleted
        ones included: they come back with status DELETED)."""
        url = "/servers/detail?all_tenants=1"
        if changes_since is not None:
            stamp = changes_since.astimezone(datetime.timezone.utc).replace(tzinfo=None)
            url += "&changes-since=" + quote(stamp.isoformat(timespec="seconds"))
        return [ServerRecord.from_api(s)
                for s in self.nova._paged(url, "servers", "list servers", MV_SERVERS)]

    def server_groups(self) -> list[GroupRecord]:
        items: list[dict] = []
        offset = 0
        while True:
            body = self._get(f"/os-server-groups?all_projects=True&limit={PAGE}"
                             f"&offset={offset}", "list server groups", MV_GROUPS)
            batch = body.get("server_groups", [])
            items.extend(batch)
            if len(batch) < PAGE:
                return [GroupRecord.from_api(g) for g in items]
            offset += len(batch)

    def _paged(self, url: str, key: str, operation: str, microversion: str) -> list[dict]:
        items: list[dict] = []
        page_url = f"{url}?limit={PAGE}"
        while True:
            batch = self._get(page_url, operation, microversion).get(key, [])
            items.extend(batch)
            if len(batch) < PAGE:
                return items
            page_url = f"{url}?limit={PAGE}&marker={batch[-1]['id']}"

    def aggregates(self) -> list[dict]:
        """Every aggregate: name, hosts, metadata (the adapter's cached read)."""
        return self.nova._all_aggregates()

    def image_properties(self, image_id: str) -> dict[str, object]:
        return self.nova.image_properties(image_id)

    def services(self):
        return self.nova.services()
