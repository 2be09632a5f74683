"""The notifications instanceha emits: event types and payload builders.

Pure: no I/O, no clock, no configuration. The controller builds an event here
and hands it to the notifier::

    notifier.emit(events.host_failed(host="compute1", reason="membership lost and "
                                     "heartbeat stale", incident_id=incident))

The event type names below are a public interface (VNF managers route on
them): never rename one. Every payload carries ``version`` (``MAJOR.MINOR``):
a new optional field bumps MINOR, anything a consumer could trip on bumps
MAJOR. The JSON Schema of each event type is
``doc/notifications/<event_type>.schema.json``; the unit tests validate every
builder's output against it.

Fields every payload has: ``version``, ``incident_id`` (ties the events of one
failure together; null only in a safety hold not tied to one incident),
``idempotency_key`` (one per step of an incident: the same on every copy of
that step's event, whoever sends it; see ``idempotency_key()``), ``dry_run``
(the controller only says what it would do). Host events add ``host``, the
failed host; instance events add ``instance_id``, ``project_id`` and
``policy`` so an event-alarm service can route them to the owning tenant.
"""

from __future__ import annotations

import dataclasses
import hashlib
import types
from collections.abc import Iterable, Mapping

from instanceha.notify import fields as valid

PAYLOAD_VERSION = "1.2"
"""1.1: host.fence.end adds level and devices; 1.2: idempotency_key in every
payload, host.fence.error adds attempt, host.recovery.start adds batch."""

PREFIX = "instanceha."

HOST_FAILED = "instanceha.host.failed"
FENCE_START = "instanceha.host.fence.start"
FENCE_END = "instanceha.host.fence.end"
FENCE_ERROR = "instanceha.host.fence.error"
RECOVERY_START = "instanceha.host.recovery.start"
RECOVERY_END = "instanceha.host.recovery.end"
RECOVERY_ERROR = "instanceha.host.recovery.error"
EVACUATE_START = "instanceha.instance.evacuate.start"
EVACUATE_END = "instanceha.instance.evacuate.end"
EVACUATE_ERROR = "instanceha.instance.evacuate.error"
RECOVERY_REQUIRED = "instanceha.instance.recovery_required"
HOST_RESTORED = "instanceha.host.restored"
SAFETY_HOLD = "instanceha.safety.hold"
INSTANCE_FAILED = "instanceha.instance.failed"
EVACUATE_DEFERRED = "instanceha.instance.evacuate.deferred"
CAPACITY_CHANGED = "instanceha.capacity.changed"

# oslo.messaging priorities (they become the topic suffix: notifications.info)
INFO = "INFO"
ERROR = "ERROR"

PRIORITIES: Mapping[str, str] = types.MappingProxyType({
    HOST_FAILED: INFO,
    FENCE_START: INFO,
    FENCE_END: INFO,
    FENCE_ERROR: ERROR,
    RECOVERY_START: INFO,
    RECOVERY_END: INFO,
    RECOVERY_ERROR: ERROR,
    EVACUATE_START: INFO,
    EVACUATE_END: INFO,
    EVACUATE_ERROR: ERROR,
    RECOVERY_REQUIRED: INFO,
    HOST_RESTORED: INFO,
    SAFETY_HOLD: INFO,
    INSTANCE_FAILED: ERROR,
    EVACUATE_DEFERRED: ERROR,
    CAPACITY_CHANGED: INFO,
})

EVENT_TYPES: tuple[str, ...] = tuple(PRIORITIES)
"""Every event type, in the order of the life of a failure."""

POLICIES = ("evacuate", "notify")
"""Per-instance policies that produce notifications ("ignore" produces none)."""

GUEST_POLICIES = ("restart", "notify")
"""Guest-failure policies that produce instanceha.instance.failed."""
GUEST_REASONS = ("crashed", "stopped_failed", "shutdown_by_guest", "paused_io_error",
                 "watchdog", "io_error")
"""What failed (engine.guest.KINDS)."""
GUEST_ACTIONS = ("none", "reboot", "start")
"""What instanceha does about it: nothing (notify-only, or it will not
restart it: see ``note``), a hard reboot or a start requested from Nova."""


@dataclasses.dataclass(frozen=True)
class Event:
    """One notification, before the notifier gives it an id and a timestamp."""

    event_type: str
    priority: str
    payload: Mapping[str, object]

    def __post_init__(self) -> None:
        if self.event_type not in PRIORITIES:
            raise ValueError(f"unknown event type {self.event_type!r}")
        object.__setattr__(self, "payload", types.MappingProxyType(dict(self.payload)))

    def payload_dict(self) -> dict[str, object]:
        """A plain, JSON-ready copy of the payload."""
        return {k: (list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, Mapping)
                    else v) for k, v in self.payload.items()}


# -- helpers ---------------------------------------------------------------


def idempotency_key(incident_id: str, event_type: str, instance_id: str | None = None,
                    counter: object = None) -> str:
    """The key of one step of an incident: ``<incident_id>/<step>[/<instance_id>]``,
    where the step is the event type without ``instanceha.``, followed by
    ``#<counter>`` for a step an incident may take several times (a fence
    attempt, a second recovery batch, one guest failure among several).
    Every copy of a step's event carries the same key, whichever controller
    sends it: a consumer that acts once per key acts once per step."""
    step = event_type[len(PREFIX):] if event_type.startswith(PREFIX) else event_type
    if counter is not None:
        step = f"{step}#{counter}"
    return "/".join(p for p in (incident_id, step, instance_id) if p is not None)


def _event(event_type: str, incident_id: str | None, dry_run: bool, *, counter=None,
           key_incident: str | None = None, **fields) -> Event:
    payload = {
        "version": PAYLOAD_VERSION,
        "incident_id": None if incident_id is None else valid.text("incident_id", incident_id),
        "idempotency_key": idempotency_key(key_incident or incident_id or "-", event_type,
                                           fields.get("instance_id"), counter),
        "dry_run": valid.flag("dry_run", dry_run),
    }
    payload.update(fields)
    return Event(event_type, PRIORITIES[event_type], payload)


def _host_event(event_type, host, incident_id, dry_run, **fields) -> Event:
    return _event(event_type, valid.text("incident_id", incident_id), dry_run,
                  host=valid.text("host", host), **fields)


def _instance_event(event_type, host, incident_id, instance_id, project_id, policy,
                    dry_run, **fields) -> Event:
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
    return _host_event(event_type, host, incident_id, dry_run,
                       instance_id=valid.text("instance_id", instance_id),
                       project_id=valid.text("project_id", project_id),
                       policy=policy, **fields)


# -- host ------------------------------------------------------------------


def host_failed(*, host: str, reason: str, incident_id: str, dry_run: bool = False) -> Event:
    """The controller declared ``host`` failed (it will fence it next)."""
    return _host_event(HOST_FAILED, host, incident_id, dry_run, reason=valid.text("reason", reason))


def fence_start(*, host: str, driver: str, incident_id: str, attempt: int = 1,
                dry_run: bool = False) -> Event:
    """Fencing of ``host`` through ``driver`` begins (attempt counts from 1, over
    the whole incident, across leaders)."""
    return _host_event(FENCE_START, host, incident_id, dry_run, counter=attempt,
                       driver=valid.text("driver", driver),
                       attempt=valid.positive("attempt", attempt))


def fence_end(*, host: str, driver: str, incident_id: str, duration: float | None = None,
              level: int | None = None, devices: Iterable[str] = (),
              dry_run: bool = False) -> Event:
    """``host`` is confirmed powered off (read back OFF, or attested by an
    operator when ``driver`` says so). Instances on it may now be recovered.
    ``level`` is the fencing level that confirmed (from 1) and ``devices`` its
    devices (None and empty for an operator's attestation)."""
    if level is not None and valid.count("level", level) < 1:
        raise ValueError("level counts from 1")
    return _host_event(FENCE_END, host, incident_id, dry_run, driver=valid.text("driver", driver),
                       duration=valid.seconds("duration", duration), level=level,
                       devices=tuple(valid.text("devices", d) for d in devices))


def fence_error(*, host: str, driver: str, incident_id: str, error: str, retrying: bool,
                attempt: int = 1, dry_run: bool = False) -> Event:
    """Fencing attempt ``attempt`` failed; ``retrying`` says whether the
    controller tries again (false: held for an operator). Nothing on the host
    is recovered meanwhile."""
    return _host_event(FENCE_ERROR, host, incident_id, dry_run, counter=attempt,
                       driver=valid.text("driver", driver), error=valid.text("error", error),
                       retrying=valid.flag("retrying", retrying),
                       attempt=valid.positive("attempt", attempt))


def recovery_start(*, host: str, incident_id: str, evacuate: int, notify: int,
                   batch: int = 1, dry_run: bool = False) -> Event:
    """Recovery of the fenced host's instances begins: ``evacuate`` of them
    will be evacuated, ``notify`` of them only announced (recovery_required).
    ``batch`` 2: servers found on the host after its force-down (they landed
    there while it was fenced), recovered after the first batch."""
    return _host_event(RECOVERY_START, host, incident_id, dry_run,
                       counter=batch if batch != 1 else None,
                       evacuate=valid.count("evacuate", evacuate),
                       notify=valid.count("notify", notify),
                       batch=valid.positive("batch", batch))


def recovery_end(*, host: str, incident_id: str, evacuated: int, failed: int, notified: int,
                 duration: float | None = None, dry_run: bool = False) -> Event:
    """Recovery finished: counts of evacuated, failed and notify-only instances."""
    return _host_event(RECOVERY_END, host, incident_id, dry_run,
                       evacuated=valid.count("evacuated", evacuated),
                       failed=valid.count("failed", failed),
                       notified=valid.count("notified", notified),
                       duration=valid.seconds("duration", duration))


def recovery_error(*, host: str, incident_id: str, error: str, retrying: bool,
                   dry_run: bool = False) -> Event:
    """Recovery of the host as a whole failed (e.g. Nova unreachable)."""
    return _host_event(RECOVERY_ERROR, host, incident_id, dry_run, error=valid.text("error", error),
                       retrying=valid.flag("retrying", retrying))


def host_restored(*, host: str, incident_id: str, reason: str, dry_run: bool = False) -> Event:
    """The host is back in service (enabled in Nova again); closes the incident."""
    return _host_event(HOST_RESTORED, host, incident_id, dry_run,
                       reason=valid.text("reason", reason))


# -- instances ---------------------------------------------------------------


def evacuate_start(*, host: str, incident_id: str, instance_id: str, project_id: str,
                   policy: str = "evacuate", dry_run: bool = False) -> Event:
    return _instance_event(EVACUATE_START, host, incident_id, instance_id, project_id, policy,
                           dry_run)


def evacuate_end(*, host: str, incident_id: str, instance_id: str, project_id: str,
                 target_host: str | None, policy: str = "evacuate",
                 duration: float | None = None, dry_run: bool = False) -> Event:
    """The instance runs again, on ``target_host`` (verified, not just accepted)."""
    return _instance_event(EVACUATE_END, host, incident_id, instance_id, project_id, policy,
                           dry_run,
                           target_host=None if target_host is None
                           else valid.text("target_host", target_host),
                           duration=valid.seconds("duration", duration))


def evacuate_error(*, host: str, incident_id: str, instance_id: str, project_id: str,
                   error: str, retrying: bool, policy: str = "evacuate",
                   dry_run: bool = False) -> Event:
    return _instance_event(EVACUATE_ERROR, host, incident_id, instance_id, project_id, policy,
                           dry_run, error=valid.text("error", error),
                           retrying=valid.flag("retrying", retrying))


def recovery_required(*, host: str, incident_id: str, instance_id: str, project_id: str,
                      host_fenced: bool = True, policy: str = "notify",
                      dry_run: bool = False) -> Event:
    """The instance's policy is notify-only: its owner (a VNF manager) must
    recover it. ``host_fenced`` true means the host is confirmed off, so
    starting a replacement cannot split-brain."""
    return _instance_event(RECOVERY_REQUIRED, host, incident_id, instance_id, project_id, policy,
                           dry_run, host_fenced=valid.flag("host_fenced", host_fenced))


# -- safety ----------------------------------------------------------------


def safety_hold(*, rule: str, reason: str, hosts: Iterable[str], limit: float, observed: float,
                incident_id: str | None = None, hold_id: str | None = None,
                dry_run: bool = False) -> Event:
    """A safety guard holds fencing and recovery (e.g. too many hosts look
    failed at once): ``observed`` exceeded ``limit`` of ``rule``. ``hold_id``
    names this hold in the idempotency key (for example when it began);
    without it the key is made of the rule and the hosts."""
    hosts = tuple(valid.text("hosts[]", h) for h in hosts)
    for name, value in (("limit", limit), ("observed", observed)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, not {value!r}")
    if hold_id is None:
        hold_id = hashlib.sha256("\n".join((rule, *sorted(hosts))).encode()).hexdigest()[:16]
    return _event(SAFETY_HOLD, incident_id, dry_run, counter=valid.text("hold_id", hold_id),
                  key_incident=incident_id or "safety", rule=valid.text("rule", rule),
                  reason=valid.text("reason", reason), hosts=hosts, limit=limit, observed=observed)


# -- guest failures ----------------------------------------------------------


def instance_failed(*, host: str, incident_id: str, instance_id: str, project_id: str,
                    policy: str, reason: str, detail: Mapping[str, object], action: str,
                    note: str, occurrence: str | None = None, dry_run: bool = False) -> Event:
    """The instance's guest failed on ``host`` (the host itself is fine):
    ``reason`` says what failed, ``detail`` carries the hypervisor's facts
    (libvirt event, detail, watchdog or I/O error action, device), ``action``
    what instanceha does about it and ``note`` why. ``occurrence`` tells this
    guest failure from others coalesced into the same incident (the guest
    event's id) in the idempotency key."""
    if policy not in GUEST_POLICIES:
        raise ValueError(f"policy must be one of {GUEST_POLICIES}, not {policy!r}")
    if reason not in GUEST_REASONS:
        raise ValueError(f"reason must be one of {GUEST_REASONS}, not {reason!r}")
    if action not in GUEST_ACTIONS:
        raise ValueError(f"action must be one of {GUEST_ACTIONS}, not {action!r}")
    if not isinstance(detail, Mapping):
        raise ValueError(f"detail must be a mapping, not {detail!r}")
    facts = {}
    for key, value in detail.items():
        if not isinstance(key, str) or not (value is None or isinstance(value, (str, int, float,
                                                                                  bool))):
            raise ValueError(f"detail {key!r} must be a string key with a scalar value, "
                             f"not {value!r}")
        facts[key] = value
    return _host_event(INSTANCE_FAILED, host, incident_id, dry_run, counter=occurrence,
                       instance_id=valid.text("instance_id", instance_id),
                       project_id=valid.text("project_id", project_id), policy=policy,
                       reason=reason, detail=types.MappingProxyType(facts), action=action,
                       note=valid.text("note", note))


# -- failover capacity ------------------------------------------------------------


def evacuate_deferred(*, host: str, incident_id: str, instance_id: str, project_id: str,
                      reason: str, priority: int, policy: str = "evacuate",
                      dry_run: bool = False) -> Event:
    """The instance is not sent to Nova yet: no host has room for it now
    (``reason``: which resource, zone or server group). It stays on the fenced
    host (not in ERROR) and is evacuated when room appears; the other
    instances, of higher ``priority`` first, took what room there was."""
    return _instance_event(EVACUATE_DEFERRED, host, incident_id, instance_id, project_id,
                           policy, dry_run, reason=valid.text("reason", reason),
                           priority=valid.count("priority", priority), retrying=True)


def capacity_changed(*, covered: bool, previous: bool | None, tolerance: str, hosts: int,
                     failures: Iterable[Mapping[str, object]], uncovered: int,
                     shortfall: Mapping[str, int], reason: str, change_id: str,
                     dry_run: bool = False) -> Event:
    """Failover coverage flipped: the cloud can (``covered``) or cannot take the
    servers of the failures its tolerance asks to survive. ``failures``: the
    first ones not covered (name, servers without room, shortfall by resource
    class); ``uncovered``: how many in all; ``change_id`` names this answer in
    the idempotency key (the time of the model read that gave it)."""
    if tolerance not in ("hosts", "domain"):
        raise ValueError(f"tolerance must be hosts or domain, not {tolerance!r}")
    listed = []
    for f in failures:
        short = f.get("short") or {}
        if not isinstance(short, Mapping):
            raise ValueError(f"failures[].short must be a mapping, not {short!r}")
        listed.append({"name": valid.text("failures[].name", f.get("name")),
                       "without_room": valid.count("failures[].without_room",
                                              f.get("without_room")),
                       "short": {valid.text("short key", k): valid.count("short value", v)
                                 for k, v in short.items()}})
    if previous is not None:
        valid.flag("previous", previous)
    return _event(CAPACITY_CHANGED, None, dry_run, counter=valid.text("change_id", change_id),
                  key_incident="capacity", covered=valid.flag("covered", covered),
                  previous=previous, tolerance=tolerance, hosts=valid.count("hosts", hosts),
                  failures=tuple(listed), uncovered=valid.count("uncovered", uncovered),
                  shortfall={valid.text("shortfall key", k): valid.count("shortfall value", v)
                             for k, v in shortfall.items()},
                  reason=valid.text("reason", reason))
