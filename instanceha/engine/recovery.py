"""What to do next for one host's recovery, from what Nova and the detector say.

The recovery's state lives in Nova (the marker in the nova-compute service's
``disabled_reason``, see ``marker.py``), never in a controller's memory: a new
leader reads it back and resumes. Each tick, ``next_stage()`` maps the
detector's phase and that durable state to the next step; the executor does
it and writes the next marker. Rules, first match wins:

========================================  =========================  ===========
durable state (marker)                    detector phase             stage
========================================  =========================  ===========
not ours, service disabled                any                        LEAVE_ALONE
HELD or RESERVED                          any                        IDLE
UNKNOWN (ours, unreadable)                any                        HOLD
FENCED or RECOVERING                      HEALTHY or DEGRADED        HOLD
none                                      FAILED                     FENCE
FENCED or RECOVERING                      FAILED                     RECOVER
RECOVERED                                 HEALTHY, nova up, clean    REENABLE
RECOVERED, flapping or re-enable off      HEALTHY, nova up, clean    HOLD
anything else                             anything else              IDLE
========================================  =========================  ===========

"clean": no evacuation migration from the host is still waiting for the
host's own clean-up (Nova turns ``done`` into ``completed`` when the
returning nova-compute has destroyed its stale copies). A host that comes
back while its instances are not yet recovered is HELD: its guests may
restart there while copies start elsewhere, so an operator decides.
"""

from __future__ import annotations

import dataclasses
import enum

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


ALIVE = frozenset({Phase.HEALTHY, Phase.DEGRADED})
IN_PROGRESS = frozenset({MarkerState.FENCED, MarkerState.RECOVERING})


def next_stage(facts: HostFacts, policy: RecoveryPolicy) -> Decision:
    m = facts.marker
    if m is None and facts.disabled:
        return Decision(Stage.LEAVE_ALONE, "disabled by an operator (reason not ours): left alone")
    if m is not None and m.state is MarkerState.RESERVED:
        return Decision(Stage.IDLE, "reserved spare: enabled when a failed host needs it "
                        "([recovery] method = reserved_hosts)")
    if m is not None and m.state is MarkerState.HELD:
        return Decision(Stage.IDLE, f"marked {m.state.value}: waiting for an operator")
    if m is not None and m.state is MarkerState.UNKNOWN:
        return Decision(Stage.HOLD, f"our marker is unreadable ({m.raw!r}): held for an operator")
    if m is not None and m.state in IN_PROGRESS and facts.phase in ALIVE:
        return Decision(Stage.HOLD, f"host is alive again ({facts.phase.value}) while its "
                        f"recovery was {m.state.value}: held, its guests may run twice")
    if facts.phase is Phase.FAILED:
        if m is None:
            return Decision(Stage.FENCE, "failed and not fenced yet")
        if m.state in IN_PROGRESS:
            return Decision(Stage.RECOVER, f"fenced (token {m.token}): recover its instances")
        return Decision(Stage.IDLE, f"marked {m.state.value}: waiting for the host to return")
    if m is not None and m.state is MarkerState.RECOVERED and facts.phase is Phase.HEALTHY:
        if not facts.nova_up:
            return Decision(Stage.IDLE, "agent back, waiting for nova-compute to report up")
        if facts.pending_migrations:
            return Decision(Stage.IDLE, f"waiting for the host to clean up "
                            f"{facts.pending_migrations} evacuated instance(s)")
        if facts.recent_failures >= policy.flap_failures:
            return Decision(Stage.HOLD, f"failed {facts.recent_failures} times within "
                            f"{policy.flap_window:g} s: flapping, held for an operator")
        if not policy.reenable:
            return Decision(Stage.HOLD, "repaired; automatic re-enable is off")
        return Decision(Stage.REENABLE, "repaired: back in service")
    if m is not None and m.state is MarkerState.RECOVERED:
        return Decision(Stage.IDLE, f"marked recovered, host {facts.phase.value}: waiting "
                        "for it to be HEALTHY")
    return Decision(Stage.IDLE, "nothing to do")
