"""What the Nova adapter returns: frozen, plain data parsed from Nova's JSON."""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Mapping

from instanceha.engine import marker as marker_mod
from instanceha.exceptions import InstanceHAError


def parse_time(value: str | None) -> datetime.datetime | None:
    """Nova's timestamps ('2026-11-21T17:31:36.000000', maybe with 'Z'), as UTC."""
    if not value:
        return None
    try:
        t = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=datetime.timezone.utc)


@dataclasses.dataclass(frozen=True)
class ComputeService:
    id: str
    host: str
    state: str  # "up" | "down": Nova's own liveness view
    status: str  # "enabled" | "disabled"
    forced_down: bool
    disabled_reason: str | None
    zone: str | None
    updated_at: datetime.datetime | None

    @property
    def up(self) -> bool:
        return self.state == "up"

    @property
    def disabled(self) -> bool:
        return self.status == "disabled"

    @property
    def marker(self) -> marker_mod.Marker | None:
        """instanceha's marker in disabled_reason; None when the reason is not ours."""
        return marker_mod.decode(self.disabled_reason)

    @classmethod
    def from_api(cls, d: Mapping) -> ComputeService:
        return cls(id=str(d["id"]), host=d["host"], state=d.get("state", "down"),
                   status=d.get("status", "enabled"), forced_down=bool(d.get("forced_down")),
                   disabled_reason=d.get("disabled_reason"), zone=d.get("zone"),
                   updated_at=parse_time(d.get("updated_at")))


@dataclasses.dataclass(frozen=True)
class Server:
    id: str
    name: str
    status: str  # ACTIVE, SHUTOFF, ERROR, REBUILD, ...
    vm_state: str | None  # active, stopped, error, ...
    task_state: str | None  # None when idle
    host: str | None
    project_id: str | None
    locked: bool
    metadata: Mapping[str, str]
    flavor_extra_specs: Mapping[str, str]
    image_id: str | None  # None: boots from volume
    availability_zone: str | None
    fault: str | None = None  # Nova's fault message, shown while in ERROR

    @property
    def volume_backed(self) -> bool:
        return self.image_id is None

    @classmethod
    def from_api(cls, d: Mapping) -> Server:
        image = d.get("image")
        flavor = d.get("flavor") or {}
        return cls(
            id=d["id"], name=d.get("name", ""), status=d.get("status", ""),
            vm_state=d.get("OS-EXT-STS:vm_state"), task_state=d.get("OS-EXT-STS:task_state"),
            host=d.get("OS-EXT-SRV-ATTR:host"), project_id=d.get("tenant_id"),
            locked=bool(d.get("locked")), metadata=dict(d.get("metadata") or {}),
            flavor_extra_specs=dict(flavor.get("extra_specs") or {}),
            image_id=image.get("id") if isinstance(image, dict) and image.get("id") else None,
            availability_zone=d.get("OS-EXT-AZ:availability_zone"),
            fault=(d.get("fault") or {}).get("message"),
        )


@dataclasses.dataclass(frozen=True)
class Migration:
    id: int
    uuid: str | None
    instance_uuid: str
    migration_type: str | None
    status: str  # evacuation: accepted, pre-migrating, done, completed, error, failed
    source_compute: str | None
    dest_compute: str | None
    created_at: datetime.datetime | None
    updated_at: datetime.datetime | None

    @property
    def succeeded(self) -> bool:
        # 'done' on success; 'completed' once the source host came back and cleaned up
        return self.status in ("done", "completed")

    @property
    def failed(self) -> bool:
        return self.status in ("error", "failed")

    @classmethod
    def from_api(cls, d: Mapping) -> Migration:
        return cls(id=int(d["id"]), uuid=d.get("uuid"), instance_uuid=d["instance_uuid"],
                   migration_type=d.get("migration_type"), status=d.get("status", ""),
                   source_compute=d.get("source_compute"), dest_compute=d.get("dest_compute"),
                   created_at=parse_time(d.get("created_at")),
                   updated_at=parse_time(d.get("updated_at")))


@dataclasses.dataclass(frozen=True)
class InstanceAction:
    """One entry of Nova's instance action log (``os-instance-actions``)."""

    action: str  # stop, start, reboot, create, evacuate, ...
    user_id: str | None  # None: Nova itself (e.g. its power-state sync)
    request_id: str | None
    start_time: datetime.datetime | None

    @classmethod
    def from_api(cls, d: Mapping) -> InstanceAction:
        return cls(action=d.get("action", ""), user_id=d.get("user_id"),
                   request_id=d.get("request_id"), start_time=parse_time(d.get("start_time")))


@dataclasses.dataclass(frozen=True)
class EvacuationSettings:
    concurrency: int = 32
    attempts: int = 3
    timeout: float = 300.0  # seconds, per attempt
    poll_interval: float = 2.0  # seconds: the longest wait between two reads
    poll_initial: float = 0.25  # seconds: the first wait, grown by half up to poll_interval
    lost_write_grace: float = 60.0  # seconds an unanswered evacuate may still be in Nova

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.attempts < 1:
            raise ValueError("concurrency and attempts must be >= 1")
        if not 0 < self.poll_initial <= self.poll_interval:
            raise ValueError("poll_initial must be > 0 and <= poll_interval")



class Outcome(enum.Enum):
    EVACUATED = "evacuated"
    FAILED = "failed"
    NO_CAPACITY = "no capacity"


@dataclasses.dataclass(frozen=True)
class EvacuationResult:
    server_id: str
    name: str
    source_host: str
    outcome: Outcome
    attempts: int
    seconds: float
    dest_host: str | None = None
    status: str | None = None  # the server's final status
    migration_id: int | None = None
    migration_status: str | None = None
    error: InstanceHAError | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.EVACUATED
