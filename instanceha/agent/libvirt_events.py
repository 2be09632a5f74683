"""libvirt's domain events and states, as data: which of them are guest failures.

Pure: no libvirt import (the enum values are libvirt.h's stable ones, checked
against the binding by the unit tests), no I/O. The guest monitor looks an
event (or, after a reconnect, a domain's state) up in the tables below and
reports what it finds; anything not in a table is a normal transition.
"""

from __future__ import annotations

from instanceha.engine.guest import GuestFailure

# libvirt's stable enum values (libvirt.h), so the mapping is testable without libvirt
EVENT_ID_LIFECYCLE, EVENT_ID_WATCHDOG, EVENT_ID_IO_ERROR_REASON = 0, 3, 6
STARTED, SUSPENDED, RESUMED, STOPPED, SHUTDOWN, CRASHED = 2, 3, 4, 5, 6, 8
STOPPED_CRASHED, STOPPED_FAILED = 2, 5
SUSPENDED_IOERROR, SUSPENDED_WATCHDOG = 2, 3
SHUTDOWN_GUEST = 1
STATE_PAUSED, STATE_SHUTOFF, STATE_CRASHED = 3, 5, 6
PAUSED_IOERROR, PAUSED_WATCHDOG, PAUSED_CRASHED = 5, 6, 10
SHUTOFF_CRASHED = 3

LIFECYCLE_NAMES = {0: "defined", 1: "undefined", 2: "started", 3: "suspended", 4: "resumed",
                   5: "stopped", 6: "shutdown", 7: "pmsuspended", 8: "crashed"}
LIFECYCLE_DETAILS = {
    STOPPED: {0: "shutdown", 1: "destroyed", 2: "crashed", 3: "migrated", 4: "saved",
              5: "failed", 6: "from_snapshot"},
    SUSPENDED: {0: "paused", 1: "migrated", 2: "ioerror", 3: "watchdog", 4: "restored",
                5: "from_snapshot", 6: "api_error", 7: "postcopy", 8: "postcopy_failed"},
    SHUTDOWN: {0: "finished", 1: "guest", 2: "host"},
    CRASHED: {0: "panicked", 1: "crashloaded"},
}
WATCHDOG_ACTIONS = {0: "none", 1: "pause", 2: "reset", 3: "poweroff", 4: "shutdown",
                    5: "debug", 6: "inject-nmi"}
IO_ERROR_ACTIONS = {0: "none", 1: "pause", 2: "report"}
CLOSE_REASONS = {0: "error", 1: "end of file (libvirtd stopped)", 2: "keepalive timeout",
                 3: "closed by the client"}

ANY = None
"""In a table key: whatever the detail (or reason)."""

LIFECYCLE_FAILURES: dict[tuple[int, int | None], GuestFailure] = {
    (STOPPED, STOPPED_FAILED): GuestFailure.STOPPED_FAILED,
    (STOPPED, STOPPED_CRASHED): GuestFailure.CRASHED,
    (CRASHED, ANY): GuestFailure.CRASHED,
    (SHUTDOWN, SHUTDOWN_GUEST): GuestFailure.SHUTDOWN_BY_GUEST,
    (SUSPENDED, SUSPENDED_IOERROR): GuestFailure.PAUSED_IO_ERROR,
    # (SUSPENDED, SUSPENDED_WATCHDOG) is not a failure here: its watchdog event reports it
}
"""(lifecycle event, detail) -> the guest failure it means."""

STATE_FAILURES: dict[tuple[int, int | None], GuestFailure] = {
    (STATE_SHUTOFF, SHUTOFF_CRASHED): GuestFailure.STOPPED_FAILED,  # QEMU went away ("crashed")
    (STATE_CRASHED, ANY): GuestFailure.CRASHED,
    (STATE_PAUSED, PAUSED_CRASHED): GuestFailure.CRASHED,
    (STATE_PAUSED, PAUSED_IOERROR): GuestFailure.PAUSED_IO_ERROR,
    (STATE_PAUSED, PAUSED_WATCHDOG): GuestFailure.WATCHDOG,
}
"""(domain state, reason) -> the guest failure it shows (the reconnect scan)."""

PERSISTENT = frozenset({GuestFailure.STOPPED_FAILED, GuestFailure.CRASHED,
                        GuestFailure.PAUSED_IO_ERROR})
"""Failures that leave the domain in a state the reconnect scan sees again."""


def _lookup(table: dict[tuple[int, int | None], GuestFailure], key: int,
            sub: int) -> GuestFailure | None:
    found = table.get((key, sub))
    return found if found is not None else table.get((key, ANY))


def lifecycle_kind(event: int, detail: int) -> GuestFailure | None:
    """The failure a lifecycle event means, or None (a normal transition)."""
    return _lookup(LIFECYCLE_FAILURES, event, detail)


def state_kind(state: int, reason: int) -> GuestFailure | None:
    """The failure a domain's current state shows (reconnect scan), or None."""
    return _lookup(STATE_FAILURES, state, reason)


def lifecycle_detail(event: int, detail: int) -> dict[str, object]:
    return {"event": "lifecycle", "state": LIFECYCLE_NAMES.get(event, str(event)),
            "detail": LIFECYCLE_DETAILS.get(event, {}).get(detail, str(detail)),
            "source": "event"}


def watchdog_detail(action: int) -> dict[str, object]:
    return {"event": "watchdog", "action": WATCHDOG_ACTIONS.get(action, str(action)),
            "source": "event"}


def io_error_detail(path: str, device: str, action: int, reason: str) -> dict[str, object]:
    return {"event": "io_error", "action": IO_ERROR_ACTIONS.get(action, str(action)),
            "path": path or None, "device": device or None, "reason": reason or None,
            "source": "event"}


def state_detail(state: int, reason: int, kind: GuestFailure) -> dict[str, object]:
    detail: dict[str, object] = {"event": "state",
                                 "state": LIFECYCLE_NAMES.get(state, str(state)),
                                 "reason": str(reason), "source": "reconnect_scan"}
    if kind is GuestFailure.WATCHDOG:
        detail["action"] = "pause"
    return detail
