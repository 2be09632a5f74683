"""What to do next for one host's recovery, from what Nova and the detector say.

The recovery's state lives in Nova (the marker in the nova-compute service's
``disabled_reason``, see ``marker.py``), never in a controller's memory: a new
leader reads it back and resumes. Each tick, ``next_stage()`` maps the
detector's phase and that durable state to the next step; the executor does
it and writes the next marker. ``RULES`` is the table, in order (the first
rule that matches decides):

{RULES}

"clean": no evacuation migration from the host is still waiting for the
host's own clean-up (Nova turns ``done`` into ``completed`` when the
returning nova-compute has destroyed its stale copies). A host that comes
back while its instances are not yet recovered is HELD: its guests may
restart there while copies start elsewhere, so an operator decides.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable, Sequence

from instanceha.engine import tables
from instanceha.engine.marker import Marker, MarkerState
from instanceha.engine.model import Phase


class Stage(enum.Enum):
    IDLE = "idle"
    FENCE = "fence"
    """Power the host off (read back OFF), then force nova-compute down and mark FENCED."""
    RECOVER = "recover"
    """Evacuate or notify each instance by its policy, then mark RECOVERED."""
    REENABLE = "reenable"
    """Unset forced-down; once Nova itself reports the service up, enable it: the
    host is back in service (enabling a service Nova sees down leaves placement's
    COMPUTE_STATUS_DISABLED trait on it until the compute's next resource update)."""
    HOLD = "hold"
    """Keep the host disabled, marked HELD, for an operator."""
    LEAVE_ALONE = "leave-alone"
    """Disabled by an operator for a reason not ours: never touched."""


@dataclasses.dataclass(frozen=True)
class RecoveryPolicy:
    reenable: bool = True
    """Re-enable a repaired host automatically."""
    flap_failures: int = 2
    """A host that failed this many times within ``flap_window`` stays disabled."""
    flap_window: float = 3600.0

    def __post_init__(self) -> None:
        if self.flap_failures < 1 or self.flap_window < 0:
            raise ValueError("flap_failures must be >= 1 and flap_window >= 0")


@dataclasses.dataclass(frozen=True)
class HostFacts:
    phase: Phase
    disabled: bool = False
    marker: Marker | None = None
    nova_up: bool | None = None
    pending_migrations: int = 0
    """Evacuation migrations from this host not yet ``completed``."""
    recent_failures: int = 0
    """Failures of this host within the flap window, this one included."""


@dataclasses.dataclass(frozen=True)
class Decision:
    stage: Stage
    reason: str


ALIVE = frozenset({Phase.HEALTHY, Phase.DEGRADED, Phase.AGENT_DOWN})
"""AGENT_DOWN: the host answers (someone powered a fenced host back on): held."""
IN_PROGRESS = frozenset({MarkerState.FENCED, MarkerState.RECOVERING})
NO_MARKER = None
"""In a rule's markers: the service carries no marker of ours."""


class Condition(enum.Enum):
    """What a rule asks of the facts beyond the marker and the phase."""

    DISABLED = "service disabled"
    NOVA_NOT_UP = "nova-compute not up"
    NOT_CLEAN = "not clean"
    FLAPPING = "flapping"
    REENABLE_OFF = "re-enable off"


_HOLDS: dict[Condition, Callable[[HostFacts, RecoveryPolicy], bool]] = {
    Condition.DISABLED: lambda f, p: f.disabled,
    Condition.NOVA_NOT_UP: lambda f, p: not f.nova_up,
    Condition.NOT_CLEAN: lambda f, p: f.pending_migrations > 0,
    Condition.FLAPPING: lambda f, p: f.recent_failures >= p.flap_failures,
    Condition.REENABLE_OFF: lambda f, p: not p.reenable,
}


@dataclasses.dataclass(frozen=True)
class Rule:
    """One row: the markers (None: any) and phases (None: any) it applies to,
    a condition, the stage and the reason (a template over ``_fields``)."""

    markers: frozenset[MarkerState | None] | None
    phases: frozenset[Phase] | None
    stage: Stage
    reason: str
    condition: Condition | None = None

    def matches(self, facts: HostFacts, policy: RecoveryPolicy) -> bool:
        state = facts.marker.state if facts.marker is not None else NO_MARKER
        return ((self.markers is None or state in self.markers)
                and (self.phases is None or facts.phase in self.phases)
                and (self.condition is None or _HOLDS[self.condition](facts, policy)))


def _rule(markers: Iterable[MarkerState | None] | None, phases: Iterable[Phase] | None,
          stage: Stage, reason: str, condition: Condition | None = None) -> Rule:
    return Rule(None if markers is None else frozenset(markers),
                None if phases is None else frozenset(phases), stage, reason, condition)


M, S, C = MarkerState, Stage, Condition
RULES: tuple[Rule, ...] = (
    _rule([NO_MARKER], None, S.LEAVE_ALONE,
          "disabled by an operator (reason not ours): left alone", C.DISABLED),
    _rule([M.RESERVED], None, S.IDLE,
          "reserved spare: enabled when a failed host needs it ([recovery] method = "
          "reserved_hosts)"),
    _rule([M.HELD], None, S.IDLE, "marked {marker}: waiting for an operator"),
    _rule([M.UNKNOWN], None, S.HOLD, "our marker is unreadable ({raw!r}): held for an operator"),
    _rule(IN_PROGRESS, ALIVE, S.HOLD,
          "host is alive again ({phase}) while its recovery was {marker}: held, its guests "
          "may run twice"),
    _rule([NO_MARKER], [Phase.FAILED], S.FENCE, "failed and not fenced yet"),
    _rule(IN_PROGRESS, [Phase.FAILED], S.RECOVER, "fenced (token {token}): recover its instances"),
    _rule(None, [Phase.FAILED], S.IDLE, "marked {marker}: waiting for the host to return"),
    _rule([M.RECOVERED], [Phase.HEALTHY], S.IDLE,
          "agent back, waiting for nova-compute to report up", C.NOVA_NOT_UP),
    _rule([M.RECOVERED], [Phase.HEALTHY], S.IDLE,
          "waiting for the host to clean up {pending} evacuated instance(s)", C.NOT_CLEAN),
    _rule([M.RECOVERED], [Phase.HEALTHY], S.HOLD,
          "failed {failures} times within {window:g} s: flapping, held for an operator",
          C.FLAPPING),
    _rule([M.RECOVERED], [Phase.HEALTHY], S.HOLD, "repaired; automatic re-enable is off",
          C.REENABLE_OFF),
    _rule([M.RECOVERED], [Phase.HEALTHY], S.REENABLE, "repaired: back in service"),
    _rule([M.RECOVERED], None, S.IDLE,
          "marked recovered, host {phase}: waiting for it to be HEALTHY"),
    _rule(None, None, S.IDLE, "nothing to do"),
)
del M, S, C


def _fields(facts: HostFacts, policy: RecoveryPolicy) -> dict[str, object]:
    m = facts.marker
    return {"marker": m.state.value if m else "none", "raw": m.raw if m else None,
            "token": m.token if m else None, "phase": facts.phase.value,
            "pending": facts.pending_migrations, "failures": facts.recent_failures,
            "window": policy.flap_window}


def next_stage(facts: HostFacts, policy: RecoveryPolicy) -> Decision:
    """The first rule of ``RULES`` that matches decides (the last matches always)."""
    rule = next(r for r in RULES if r.matches(facts, policy))
    return Decision(rule.stage, rule.reason.format_map(_fields(facts, policy)))


# -- the table, as the docstring and the documentation show it ---------------------------

TABLE_HEADER = ("durable state (marker)", "detector phase", "and", "stage")


def _names(values: frozenset[MarkerState | None] | frozenset[Phase] | None,
           none: str = "none") -> str:
    if values is None:
        return "any"
    order: dict[MarkerState | Phase | None, int] = {
        v: i for i, v in enumerate([NO_MARKER, *MarkerState, *Phase])}
    return " or ".join(none if v is None else v.name
                       for v in sorted(values, key=lambda v: order[v]))


def table_rows(rules: Sequence[Rule] = RULES) -> list[tuple[str, str, str, str]]:
    return [(_names(r.markers), _names(r.phases),
             r.condition.value if r.condition else "", r.stage.name) for r in rules]


if __doc__ is not None:  # python -OO drops docstrings
    __doc__ = tables.fill(__doc__, "{RULES}", tables.render(TABLE_HEADER, table_rows()))
