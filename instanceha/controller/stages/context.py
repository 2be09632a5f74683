"""What every recovery stage works with: the guarded Nova client, the durable
histories kept in the coordinator, and the stage context itself."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Mapping
from typing import Any

from instanceha.backoff import Backoff
from instanceha.clock import SYSTEM, Clock
from instanceha.compute.calls import ApiCalls
from instanceha.compute.nova import NovaClient, mutating_methods
from instanceha.controller.stores import ControlStore, FailureStore
from instanceha.engine import marker as mk
from instanceha.engine.instance_policy import Recovery
from instanceha.engine.model import Phase
from instanceha.engine.recovery import RecoveryPolicy
from instanceha.engine.reserved import TargetPolicy

from .report import Reporter


@dataclasses.dataclass(frozen=True)
class ActuatorSettings:
    name: str
    policy: RecoveryPolicy = RecoveryPolicy()
    default_recovery: Recovery = Recovery.EVACUATE
    workers: int = 8
    """Hosts whose recovery (evacuations, re-enable, hold) runs at the same time."""
    fence_workers: int = 10
    """Hosts fenced at the same time, never queued behind a recovery: as many as
    the mass-failure guard lets through at once (its ``max_failed_hosts``)."""
    nova_refresh: float = 2.0
    retry_backoff: float = 2.0
    retry_backoff_max: float = 60.0
    dry_run: bool = False
    power_on_after_recovery: bool = False
    target: TargetPolicy = TargetPolicy()  # [recovery]: the scheduler, or reserved spares

    @property
    def retry(self) -> Backoff:
        """Between two tries of a host's recovery step that failed."""
        return Backoff(self.retry_backoff, self.retry_backoff_max)


class Guarded:
    """The Nova client, with leadership verified before every call that changes
    the world (the evacuator gets this one): the methods ``NovaClient`` marks
    ``@mutating``, whatever object is wrapped (a test's fake too)."""

    MUTATING = mutating_methods(NovaClient)

    def __init__(self, nova, verify: Callable[[], int]) -> None:
        self._nova = nova
        self._verify = verify

    def __getattr__(self, name):
        attr = getattr(self._nova, name)
        if name not in self.MUTATING:
            return attr

        def guarded(*args, **kwargs):
            self._verify()
            return attr(*args, **kwargs)

        return guarded


class FailureHistory:
    """Fence times per host, kept in the coordinator's host registry (they
    outlive every controller), for flap damping. ``records()`` returns the
    latest observed registry (the reconciler's last snapshot): no extra read."""

    def __init__(self, coordinator: FailureStore, records: Callable[[], Mapping],
                 clock: Clock = SYSTEM) -> None:
        self.coordinator = coordinator
        self.records = records
        self.clock = clock

    def record(self, host: str) -> None:
        self.coordinator.record_failure(host, self.clock.wall())

    def count(self, host: str, window: float) -> int:
        record = self.records().get(host)
        if record is None:
            return 0
        now = self.clock.wall()
        return sum(1 for t in record.failures if now - t <= window)


class Attestations:
    """Operators' attestations that a host is powered off (``instanceha host
    confirm-down``), kept in the coordinator's control node: they outlive any
    controller; each is consumed by the fence it allowed."""

    PREFIX = "attest:"

    def __init__(self, coordinator: ControlStore, control: Callable[[], Mapping]) -> None:
        self.coordinator = coordinator
        self.control = control

    def get(self, host: str):
        return self.control().get(self.PREFIX + host)

    def consume(self, host: str) -> None:
        self.coordinator.update_control({self.PREFIX + host: None})

    def since(self, host: str, failed_since: datetime.datetime) -> dict | None:
        """The attestation that ``host`` is off, if made during this failure."""
        record = self.get(host)
        if not isinstance(record, dict) or not isinstance(record.get("at"), (int, float)):
            return None
        at = datetime.datetime.fromtimestamp(record["at"], datetime.timezone.utc)
        return record if at >= failed_since else None


@dataclasses.dataclass
class StageContext:
    """Everything a stage uses; the actuator builds one and hands it to each
    stage function. No state of a recovery lives here: that is in Nova's
    marker and the incident journal."""

    settings: ActuatorSettings
    fencer: Any
    nova: Any
    evacuator_factory: Callable[[Any], Any]
    placement: Any
    report: Reporter
    failures: FailureHistory | None
    attestations: Attestations | None
    phases: Callable[[], Mapping[str, Phase]]
    clock: Clock
    calls: ApiCalls = dataclasses.field(default_factory=ApiCalls)
    dispatcher: Any = None
    """The capacity dispatcher (controller.capacity_dispatch): priority order,
    planned targets, held-back servers, the shared throttle. None: as before."""

    def guarded(self, verify: Callable[[], int]) -> Guarded:
        return Guarded(self.nova, verify)

    def marker(self, state: mk.MarkerState, token: int | None, note: str = "",
               spares: tuple[str, ...] = (), waiting: int = 0) -> str:
        return mk.encode(state, at=self.clock.utcnow(), token=token, note=note, spares=spares,
                         waiting=waiting)

    def still_failed(self, host: str) -> bool:
        """The detector's latest phase of ``host`` is still FAILED."""
        return self.phases().get(host) is Phase.FAILED
