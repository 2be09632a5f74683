"""What the leader does with one guest failure: pure, no I/O, no clock.

A guest failure is what an agent saw on a host that is itself fine: QEMU
died, the guest kernel crashed, the guest hung and its watchdog fired, the
guest shut itself down, or a disk I/O error paused it. The agent reports it
(``GuestEvent``), the leader gathers the facts (the instance's policy from
``instance_policy.decide_guest``, what Nova says of the server, the host's
phase, the restarts already requested) and ``decide()`` says what to do next.

The rules, in order (the first that applies decides):

1. the host itself is FAILED: left to the host recovery (it fences the host
   and recovers its instances); SUSPECT: wait for the detector to settle;
2. no such server in Nova (not an instance), or Nova places it on another
   host now (moved since): nothing to do;
3. the policy: ``ignore`` does nothing, ``notify`` tells the owner;
4. ``restart``: not when the hypervisor already reset the guest (watchdog
   action ``reset``) or the guest carries on (an I/O error reported to it);
   not twice (Nova shows a reboot or start since the failure); not while Nova
   acts on the server (a ``task_state``: wait, up to ``task_state_wait``); not
   a server its owner stopped (Nova's last action on it is a ``stop`` by a
   user), nor one in a state a restart does not apply to (shelved, deleted,
   rescued...); never more than ``max_restarts`` within ``window``: then it
   gives up and says so (and tells the owner). Otherwise a stopped server is
   started, any other hard-rebooted.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence

from instanceha.engine.instance_policy import GuestPolicy

CRASHED = "crashed"
"""The guest kernel crashed (pvpanic: lifecycle CRASHED, or STOPPED/CRASHED)."""
STOPPED_FAILED = "stopped_failed"
"""QEMU went away under the guest (killed, crashed): lifecycle STOPPED/FAILED."""
SHUTDOWN_BY_GUEST = "shutdown_by_guest"
"""The guest OS powered itself off (lifecycle SHUTDOWN/GUEST)."""
PAUSED_IO_ERROR = "paused_io_error"
"""A disk I/O error paused the guest (lifecycle SUSPENDED/IOERROR)."""
WATCHDOG = "watchdog"
"""The guest stopped feeding its watchdog device (watchdog event)."""
IO_ERROR = "io_error"
"""A disk I/O error (I/O error event, with the device and the reason)."""

KINDS = (CRASHED, STOPPED_FAILED, SHUTDOWN_BY_GUEST, PAUSED_IO_ERROR, WATCHDOG, IO_ERROR)

RESTARTABLE = frozenset({"active", "stopped", "paused", "error"})
"""Nova vm_states a restart applies to (hard reboot, or start when stopped)."""


class Action(enum.Enum):
    REBOOT = "reboot"  # hard reboot through Nova
    START = "start"  # start through Nova (the server is stopped in Nova)
    NOTIFY = "notify"  # only tell the owner
    WAIT = "wait"  # decide again later (event kept)
    NONE = "none"  # nothing to do (event done)


class Outcome(enum.Enum):
    RESTARTED = "restarted"
    NOTIFIED = "notified"
    IGNORED = "ignored"
    GAVE_UP = "gave_up"
    LEFT_ALONE = "left_alone"
    NOT_NEEDED = "not_needed"
    ALREADY = "already_restarted"
    HOST_FAILING = "host_failing"
    NOT_AN_INSTANCE = "not_an_instance"
    MOVED = "moved"
    WAITING = "waiting"
    COALESCED = "coalesced"
    DRY_RUN = "dry_run"


@dataclasses.dataclass(frozen=True)
class GuestEvent:
    """One guest failure as the agent reported it."""

    host: str
    instance_id: str
    kind: str
    at: float
    """Wall clock (epoch seconds) when the agent saw it."""
    detail: Mapping[str, object] = dataclasses.field(default_factory=dict)
    """The hypervisor's facts: the libvirt event, its detail, the watchdog or
    I/O error action, the device, the domain name..."""

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> GuestEvent:
        """From the coordinator's record; ValueError names what is wrong."""
        host, instance, kind, at = (record.get(k) for k in ("host", "instance_id", "kind", "at"))
        if not isinstance(host, str) or not host:
            raise ValueError(f"guest event without a host: {record!r}")
        if not isinstance(instance, str) or not instance:
            raise ValueError(f"guest event without an instance_id: {record!r}")
        if kind not in KINDS:
            raise ValueError(f"guest event of unknown kind {kind!r}")
        if isinstance(at, bool) or not isinstance(at, (int, float)):
            raise ValueError(f"guest event without a time: {record!r}")
        detail = record.get("detail")
        return cls(host, instance, kind, float(at), dict(detail) if isinstance(detail, Mapping)
                   else {})

    def describe(self) -> str:
        bits = [f"{k}={v}" for k, v in sorted(self.detail.items())
                if k in ("event", "state", "reason", "action", "device", "source")]
        return f"{self.kind} ({', '.join(bits)})" if bits else self.kind


@dataclasses.dataclass(frozen=True)
class ServerFacts:
    """What Nova says of the server, as read right before deciding."""

    host: str | None
    vm_state: str | None
    task_state: str | None
    owner_stopped: bool = False
    """Nova's newest action on the server is a ``stop`` requested by a user
    (Nova's own power-state sync records its stop without a user)."""
    restarted_since: str | None = None
    """A reboot or start Nova recorded after the failure (``reboot by <user>``)."""


@dataclasses.dataclass(frozen=True)
class GuestSettings:
    max_restarts: int = 3
    window: float = 3600.0
    task_state_wait: float = 300.0
    coalesce: float = 10.0
    """Seconds after a handled failure of a server during which its further
    failures are recorded in the same incident, not acted on again."""

    def __post_init__(self) -> None:
        if self.max_restarts < 1 or self.window <= 0 or self.task_state_wait < 0 \
                or self.coalesce < 0:
            raise ValueError("guest settings: max_restarts >= 1, window > 0, "
                             "task_state_wait >= 0, coalesce >= 0")


@dataclasses.dataclass(frozen=True)
class Step:
    action: Action
    outcome: Outcome
    reason: str
    notify: bool = False
    """Tell the owner (instanceha.instance.failed)."""


def needs_restart(kind: str, detail: Mapping[str, object]) -> str | None:
    """None when a restart applies; else why not."""
    action = str(detail.get("action") or "")
    if kind == WATCHDOG and action == "reset":
        return "the hypervisor already reset the guest (watchdog action reset)"
    if kind == IO_ERROR and action in ("report", "none"):
        return f"the guest carries on (I/O error action {action}: reported to the guest)"
    return None


def restarts_in_window(restarts: Sequence[float], now: float, window: float) -> int:
    return sum(1 for t in restarts if 0 <= now - t <= window)


def decide(event: GuestEvent, policy: GuestPolicy, server: ServerFacts | None,
           host_phase: str | None, restarts: Sequence[float], settings: GuestSettings,
           now: float, waited: float = 0.0) -> Step:
    """``now``: wall clock (epoch s); ``restarts``: wall times of the restarts
    already requested for this server; ``waited``: how long this event has
    already waited (host settling, task_state)."""
    if host_phase == "FAILED":
        return Step(Action.NONE, Outcome.HOST_FAILING, f"host {event.host} is FAILED: left "
                    "to the host recovery")
    if host_phase == "SUSPECT":
        if waited < settings.task_state_wait:
            return Step(Action.WAIT, Outcome.WAITING, f"host {event.host} is SUSPECT: waiting "
                        "for the detector")
        return Step(Action.NONE, Outcome.HOST_FAILING, f"host {event.host} stayed SUSPECT for "
                    f"{waited:.0f} s: left to the host recovery")
    if server is None:
        return Step(Action.NONE, Outcome.NOT_AN_INSTANCE, "no such server in Nova (a domain "
                    "Nova does not manage)")
    if server.host != event.host:
        return Step(Action.NONE, Outcome.MOVED, f"the server is on {server.host or 'no host'} "
                    f"now, not on {event.host}")
    if policy is GuestPolicy.IGNORE:
        return Step(Action.NONE, Outcome.IGNORED, "policy ignore")
    if policy is GuestPolicy.NOTIFY:
        return Step(Action.NOTIFY, Outcome.NOTIFIED, "policy notify: its owner recovers it",
                    notify=True)
    why_not = needs_restart(event.kind, event.detail)
    if why_not:
        return Step(Action.NONE, Outcome.NOT_NEEDED, why_not, notify=True)
    if server.restarted_since:
        return Step(Action.NONE, Outcome.ALREADY, f"already restarted since the failure "
                    f"({server.restarted_since})")
    if server.task_state:
        if waited < settings.task_state_wait:
            return Step(Action.WAIT, Outcome.WAITING, f"Nova is acting on the server "
                        f"(task_state {server.task_state}): waiting")
        return Step(Action.NONE, Outcome.GAVE_UP, f"Nova still acts on the server (task_state "
                    f"{server.task_state}) after {waited:.0f} s: not restarted", notify=True)
    if server.vm_state == "stopped" and server.owner_stopped:
        return Step(Action.NONE, Outcome.LEFT_ALONE, "stopped by its owner: not restarted")
    if server.vm_state not in RESTARTABLE:
        return Step(Action.NONE, Outcome.LEFT_ALONE, f"vm_state {server.vm_state}: a restart "
                    "does not apply")
    done = restarts_in_window(restarts, now, settings.window)
    if done >= settings.max_restarts:
        return Step(Action.NONE, Outcome.GAVE_UP, f"gave up: already restarted {done} time(s) "
                    f"within {settings.window:.0f} s (max {settings.max_restarts})",
                    notify=True)
    action = Action.START if server.vm_state == "stopped" else Action.REBOOT
    what = "start" if action is Action.START else "hard reboot"
    return Step(action, Outcome.RESTARTED, f"{what} (restart {done + 1} of at most "
                f"{settings.max_restarts} within {settings.window:.0f} s)", notify=True)
