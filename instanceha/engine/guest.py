"""What the leader does with one guest failure: pure, no I/O, no clock.

A guest failure is what an agent saw on a host that is itself fine: QEMU
died, the guest kernel crashed, the guest hung and its watchdog fired, the
guest shut itself down, or a disk I/O error paused it. The agent reports it
(``GuestEvent``), the leader gathers the facts (the instance's policy from
``instance_policy.decide_guest``, what Nova says of the server, the host's
phase, the restarts already requested) and ``decide()`` says what to do next.

The rules, ``RULES``, in order (the first that applies decides; "owner told":
an ``instanceha.instance.failed`` notification):

{RULES}

A restart is at most ``max_restarts`` within ``window``; a stopped server is
started, any other hard-rebooted. A server whose owner stopped it is one whose
newest Nova action is a ``stop`` by a user; states a restart does not apply to
are those outside ``RESTARTABLE`` (shelved, deleted, rescued...).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping, Sequence

from instanceha.engine import tables
from instanceha.engine.instance_policy import GuestPolicy
from instanceha.engine.model import Phase


class GuestFailure(enum.StrEnum):
    """What failed in a guest (the ``kind`` of a guest event; a ``str``, as stored)."""

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


KINDS = tuple(GuestFailure)

RESTARTABLE = frozenset({"active", "stopped", "paused", "error"})
"""Nova vm_states a restart applies to (hard reboot, or start when stopped)."""


class GuestAction(enum.Enum):
    REBOOT = "reboot"  # hard reboot through Nova
    START = "start"  # start through Nova (the server is stopped in Nova)
    NOTIFY = "notify"  # only tell the owner
    WAIT = "wait"  # decide again later (event kept)
    NONE = "none"  # nothing to do (event done)


class GuestOutcome(enum.Enum):
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
    kind: GuestFailure
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
        if not isinstance(kind, str) or kind not in KINDS:
            raise ValueError(f"guest event of unknown kind {kind!r}")
        if isinstance(at, bool) or not isinstance(at, (int, float)):
            raise ValueError(f"guest event without a time: {record!r}")
        detail = record.get("detail")
        return cls(host, instance, GuestFailure(kind), float(at),
                   dict(detail) if isinstance(detail, Mapping) else {})

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
    action: GuestAction
    outcome: GuestOutcome
    reason: str
    notify: bool = False
    """Tell the owner (instanceha.instance.failed)."""


def needs_restart(kind: GuestFailure, detail: Mapping[str, object]) -> str | None:
    """None when a restart applies; else why not."""
    action = str(detail.get("action") or "")
    if kind is GuestFailure.WATCHDOG and action == "reset":
        return "the hypervisor already reset the guest (watchdog action reset)"
    if kind is GuestFailure.IO_ERROR and action in ("report", "none"):
        return f"the guest carries on (I/O error action {action}: reported to the guest)"
    return None


def restarts_in_window(restarts: Sequence[float], now: float, window: float) -> int:
    return sum(1 for t in restarts if 0 <= now - t <= window)


@dataclasses.dataclass(frozen=True)
class Situation:
    """What one decision is about: the event and every fact gathered for it."""

    event: GuestEvent
    policy: GuestPolicy
    server: ServerFacts | None
    phase: Phase | None
    restarts: int
    """Restarts already requested for this server within the window."""
    settings: GuestSettings
    waited: float
    why_not: str | None
    """Why a restart does not apply to this failure (``needs_restart``), or None."""

    def fields(self) -> dict[str, object]:
        srv = self.server
        return {"host": self.event.host, "waited": self.waited, "why_not": self.why_not,
                "now_on": (srv.host if srv else None) or "no host",
                "since": srv.restarted_since if srv else None,
                "task": srv.task_state if srv else None, "vm_state": srv.vm_state if srv else None,
                "done": self.restarts, "next": self.restarts + 1,
                "max": self.settings.max_restarts, "window": self.settings.window}


@dataclasses.dataclass(frozen=True)
class Rule:
    """One row: when it applies (``holds``, described by ``when``), and the step."""

    name: str
    when: str
    holds: Callable[[Situation], bool]
    action: GuestAction
    outcome: GuestOutcome
    reason: str
    """A template over ``Situation.fields()``."""
    notify: bool = False


def _srv(s: Situation) -> ServerFacts:
    assert s.server is not None  # the rules before the first use rule a missing server out
    return s.server


A, Out = GuestAction, GuestOutcome
RULES: tuple[Rule, ...] = (
    Rule("host-failed", "the host is FAILED", lambda s: s.phase is Phase.FAILED,
         A.NONE, Out.HOST_FAILING, "host {host} is FAILED: left to the host recovery"),
    Rule("host-settling", "the host is SUSPECT, for less than task_state_wait",
         lambda s: s.phase is Phase.SUSPECT and s.waited < s.settings.task_state_wait,
         A.WAIT, Out.WAITING, "host {host} is SUSPECT: waiting for the detector"),
    Rule("host-suspect", "the host stayed SUSPECT", lambda s: s.phase is Phase.SUSPECT,
         A.NONE, Out.HOST_FAILING, "host {host} stayed SUSPECT for {waited:.0f} s: left to "
         "the host recovery"),
    Rule("not-an-instance", "no such server in Nova", lambda s: s.server is None,
         A.NONE, Out.NOT_AN_INSTANCE, "no such server in Nova (a domain Nova does not manage)"),
    Rule("moved", "Nova places the server on another host",
         lambda s: _srv(s).host != s.event.host,
         A.NONE, Out.MOVED, "the server is on {now_on} now, not on {host}"),
    Rule("ignore", "policy ignore", lambda s: s.policy is GuestPolicy.IGNORE,
         A.NONE, Out.IGNORED, "policy ignore"),
    Rule("notify", "policy notify", lambda s: s.policy is GuestPolicy.NOTIFY,
         A.NOTIFY, Out.NOTIFIED, "policy notify: its owner recovers it", notify=True),
    Rule("not-needed", "the hypervisor reset the guest, or the guest carries on",
         lambda s: bool(s.why_not), A.NONE, Out.NOT_NEEDED, "{why_not}", notify=True),
    Rule("already", "Nova shows a reboot or start since the failure",
         lambda s: bool(_srv(s).restarted_since),
         A.NONE, Out.ALREADY, "already restarted since the failure ({since})"),
    Rule("task-wait", "Nova acts on the server, for less than task_state_wait",
         lambda s: bool(_srv(s).task_state) and s.waited < s.settings.task_state_wait,
         A.WAIT, Out.WAITING, "Nova is acting on the server (task_state {task}): waiting"),
    Rule("task-gave-up", "Nova still acts on the server", lambda s: bool(_srv(s).task_state),
         A.NONE, Out.GAVE_UP, "Nova still acts on the server (task_state {task}) after "
         "{waited:.0f} s: not restarted", notify=True),
    Rule("owner-stopped", "stopped by its owner",
         lambda s: _srv(s).vm_state == "stopped" and _srv(s).owner_stopped,
         A.NONE, Out.LEFT_ALONE, "stopped by its owner: not restarted"),
    Rule("not-restartable", "a vm_state a restart does not apply to",
         lambda s: _srv(s).vm_state not in RESTARTABLE,
         A.NONE, Out.LEFT_ALONE, "vm_state {vm_state}: a restart does not apply"),
    Rule("gave-up", "max_restarts reached within window",
         lambda s: s.restarts >= s.settings.max_restarts,
         A.NONE, Out.GAVE_UP, "gave up: already restarted {done} time(s) within {window:.0f} s "
         "(max {max})", notify=True),
    Rule("start", "stopped in Nova", lambda s: _srv(s).vm_state == "stopped",
         A.START, Out.RESTARTED, "start (restart {next} of at most {max} within {window:.0f} s)",
         notify=True),
    Rule("reboot", "any other", lambda s: True,
         A.REBOOT, Out.RESTARTED, "hard reboot (restart {next} of at most {max} within "
         "{window:.0f} s)", notify=True),
)
del A, Out


def decide(event: GuestEvent, policy: GuestPolicy, server: ServerFacts | None,
           host_phase: Phase | None, restarts: Sequence[float], settings: GuestSettings,
           now: float, waited: float = 0.0) -> Step:
    """``now``: wall clock (epoch s); ``restarts``: wall times of the restarts
    already requested for this server; ``waited``: how long this event has
    already waited (host settling, task_state). The first rule of ``RULES``
    that holds decides (the last always does)."""
    situation = Situation(event, policy, server, host_phase,
                          restarts_in_window(restarts, now, settings.window), settings, waited,
                          needs_restart(event.kind, event.detail))
    rule = next(r for r in RULES if r.holds(situation))
    return Step(rule.action, rule.outcome, rule.reason.format_map(situation.fields()),
                notify=rule.notify)


# -- the table, as the docstring and the documentation show it ---------------------------

TABLE_HEADER = ("rule", "when", "action", "outcome", "owner told")


def table_rows(rules: Sequence[Rule] = RULES) -> list[tuple[str, str, str, str, str]]:
    return [(r.name, r.when, r.action.value, r.outcome.value, "yes" if r.notify else "")
            for r in rules]


if __doc__ is not None:  # python -OO drops docstrings
    __doc__ = tables.fill(__doc__, "{RULES}", tables.render(TABLE_HEADER, table_rows()))
