"""What the controller uses of the coordinator's stores, declared.

``coordination.base.Coordinator`` is the whole contract of a backend (the
coordination package's own); each part of the controller depends only on the
store it uses, so a test's fake has to provide only that, and mypy checks the
coordinator against each of them where it is passed in (``cmd/controller``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol


class IncidentStore(Protocol):
    """The incident journal's (``controller.journal``)."""

    def incident_write(self, incident_id: str, summary: Mapping[str, object],
                       entries: Sequence[Mapping[str, object]] = ()) -> None: ...

    def incidents(self) -> dict[str, Mapping[str, object]]: ...

    def incident_delete(self, incident_id: str) -> None: ...


class GuestEventStore(Protocol):
    """The guest actuator's (``controller.guests``): the agents' failure queue and
    the restarts already requested."""

    def guest_events(self) -> list[tuple[str, Mapping[str, object]]]: ...

    def guest_event_delete(self, event_id: str) -> None: ...

    def guest_restarts(self, instance_id: str) -> list[float]: ...

    def guest_restart_record(self, instance_id: str, at: float, keep: int = 20) -> None: ...


class FailureStore(Protocol):
    """The flap damping's (``stages.context.FailureHistory``)."""

    def record_failure(self, host: str, at: float, keep: int = 10) -> None: ...


class ControlStore(Protocol):
    """The operators' switches and attestations (``stages.context.Attestations``)."""

    def update_control(self, changes: Mapping[str, object | None]) -> Mapping[str, object]: ...
