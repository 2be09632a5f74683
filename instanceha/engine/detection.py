"""The failure detector: a transition table as data, and ``decide()``.

Each tick, the controller hands ``decide()`` one host's observation, the
previous view of that host, its own session state, the policy and the time.
``decide()`` derives the *signals* the observation carries, walks ``RULES`` in
order and takes the first rule whose signals are all present. One guard then
applies: no host becomes FAILED while the controller's own session is not
connected or has not been connected for ``policy.settle_time`` (the heartbeat
ages it observes cannot be trusted yet); such a host is held in SUSPECT.

The table, ``RULES``, in order (first match wins):

{RULES}

The second source (``HostObservation.second_source``): an agent's death is
not its host's death. Before a host whose agent looks dead is FAILED, a
source that does not depend on the agent process is asked (the controller's
probe of the host's management address): while it shows the host alive, the
host is AGENT_DOWN ("agent dead, host alive": an alert, never a fence); a
host that does not answer within the probe's timeout is FAILED; so is one
whose nova-compute Nova reports down meanwhile (the host's kernel answers but
its user space is dead or hung). A host with no second source (none
configured, no address known) is HOST_SILENT: decided by its agent alone.
``asks_second_source()`` says which observations ask; a host once FAILED
stays FAILED until its agent is back (a fence may be under way: a late
answer never takes that decision back).
"""

from __future__ import annotations

import dataclasses
import enum

from instanceha.engine import tables
from instanceha.engine.model import (
    ControllerObservation,
    DetectionPolicy,
    HostObservation,
    HostView,
    Phase,
    PolicyError,
    SecondSource,
    SessionState,
)

NOVA_COMPUTE = "nova-compute"


class Signal(str, enum.Enum):
    MEMBER_LOST = "MEMBER_LOST"
    """The agent's session-bound membership is gone."""
    HEARTBEAT_STALE = "HEARTBEAT_STALE"
    """No sign of life for longer than heartbeat_stale_after (``heartbeat_age``:
    the live session and its loop watchdog, or the data heartbeat)."""
    HEARTBEAT_HUNG = "HEARTBEAT_HUNG"
    """No sign of life for longer than hung_after."""
    PLANNED_STOP = "PLANNED_STOP"
    """The agent announced a planned stop and is not a member."""
    SERVICE_DOWN = "SERVICE_DOWN"
    """The agent reports nova-compute not running, or Nova reports it down."""
    HOST_ANSWERS = "HOST_ANSWERS"
    """The second source shows the host alive since its agent fell silent."""
    HOST_SILENT = "HOST_SILENT"
    """The second source got no answer within its timeout, or there is none for
    this host. (Neither signal: the second source was asked, no answer yet.)"""
    NOVA_DOWN = "NOVA_DOWN"
    """Nova reports the host's nova-compute service down (whatever the agent says)."""


@dataclasses.dataclass(frozen=True)
class Rule:
    name: str
    signals: frozenset[Signal]
    phase: Phase
    reason: str


def _rule(name: str, signals: tuple[Signal, ...], phase: Phase, reason: str) -> Rule:
    return Rule(name, frozenset(signals), phase, reason)


S = Signal
RULES: tuple[Rule, ...] = (
    _rule("planned-stop", (S.PLANNED_STOP,), Phase.STOPPED, "the agent announced a planned stop"),
    _rule(
        "dead",
        (S.MEMBER_LOST, S.HEARTBEAT_STALE, S.HOST_SILENT),
        Phase.FAILED,
        "membership lost and silent for {age:.1f} s{second}",
    ),
    _rule(
        "hung",
        (S.HEARTBEAT_HUNG, S.HOST_SILENT),
        Phase.FAILED,
        "silent for {age:.1f} s while the session lives: agent main loop or host "
        "hung{second}",
    ),
    _rule(
        "dead-nova-down",
        (S.MEMBER_LOST, S.HEARTBEAT_STALE, S.NOVA_DOWN),
        Phase.FAILED,
        "membership lost {age:.1f} s ago and Nova reports nova-compute down: the host's "
        "user space is dead or hung{second}",
    ),
    _rule(
        "hung-nova-down",
        (S.HEARTBEAT_HUNG, S.NOVA_DOWN),
        Phase.FAILED,
        "agent silent for {age:.1f} s and Nova reports nova-compute down: the host's user "
        "space is dead or hung{second}",
    ),
    _rule(
        "agent-dead",
        (S.MEMBER_LOST, S.HEARTBEAT_STALE, S.HOST_ANSWERS),
        Phase.AGENT_DOWN,
        "agent dead, host alive: membership lost {age:.1f} s ago but the host answers the "
        "second source; not fenced (an alert: the host is unprotected until its agent is back)",
    ),
    _rule(
        "agent-hung",
        (S.HEARTBEAT_HUNG, S.HOST_ANSWERS),
        Phase.AGENT_DOWN,
        "agent hung, host alive: silent for {age:.1f} s but the host answers the second "
        "source; not fenced (an alert: the host is unprotected until its agent is back)",
    ),
    _rule("asking", (S.MEMBER_LOST, S.HEARTBEAT_STALE), Phase.SUSPECT,
          "membership lost and silent for {age:.1f} s: asking the second source whether "
          "the host lives"),
    _rule("asking-hung", (S.HEARTBEAT_HUNG,), Phase.SUSPECT,
          "silent for {age:.1f} s while the session lives: asking the second source whether "
          "the host lives"),
    _rule("member-lost", (S.MEMBER_LOST,), Phase.SUSPECT,
          "membership lost, last sign of life too recent to call it dead"),
    _rule(
        "heartbeat-stale",
        (S.HEARTBEAT_STALE,),
        Phase.SUSPECT,
        "silent for {age:.1f} s, membership alive",
    ),
    _rule("service-down", (S.SERVICE_DOWN,), Phase.DEGRADED, "{service_reason}"),
    _rule("alive", (), Phase.HEALTHY, "member with a fresh heartbeat"),
)
del S

HOLD_RULE = "held-controller-unsettled"

RECONNECT_JITTER = 0.2
"""The coordinator client's back-off may sleep this share past its bound (kazoo's
``max_jitter`` as coordination/zk_session.py configures it)."""


def default_reconnect_grace(reconnect_max_delay: float, heartbeat_interval: float) -> float:
    """The ``reconnect_grace`` that covers the agents' own reconnection.

    An outage of the coordinator that the controller sees (a lost quorum, a
    restart) cut the agents off too. When it ends, an agent's client may still
    sleep up to ``reconnect_max_delay`` (plus jitter) before its next attempt;
    if that is longer than the session timeout its session has expired
    meanwhile: its membership is gone and its heartbeat stale although it is
    alive, until it reconnects and re-joins (one more heartbeat interval). A
    controller that trusts its observations sooner than that declares live
    hosts FAILED (measured: tests/functional/chaos, quorum loss)."""
    return round(reconnect_max_delay * (1 + RECONNECT_JITTER) + heartbeat_interval, 3)


CUT_NOTICE_SHARE = 2.0 / 3.0
"""A ZooKeeper client on a dead link (no FIN, no RST) notices at most this share
of the session timeout T after its last send. kazoo 2.11
(``kazoo/protocol/connection.py``, ``ConnectionHandler._connect_attempt``)
waits for traffic until T/3 (half its read timeout of 2/3 T, less a jitter of
0.01-0.4 s) after its last send; when that passes without a send it pings, and
when the next such wait passes with the ping unanswered it drops the connection
(the session is then SUSPENDED). A reply received does not move that deadline,
a request sent does."""


def cut_off_window(session_timeout: float, heartbeat_interval: float) -> float:
    """How old a live host's heartbeat can look to a leader cut off from the
    coordinator while that leader's client still believes it is connected:
    ``heartbeat_interval + CUT_NOTICE_SHARE x session_timeout``.

    At the cut the last heartbeat the leader saw is up to one heartbeat
    interval old; its client notices the cut at most ``CUT_NOTICE_SHARE`` x
    ``session_timeout`` later (then no host becomes FAILED and the leader stops
    leading). Ticks are not aligned with the cut, so the tick interval gives no
    margin.

    Assumes that during the cut only the tick thread sends requests, and
    waits for each answer (so no tick decides until the client notices), and
    that heartbeats reach the controller every ``heartbeat_interval``. A
    request sent by another thread (the incident journal's writer, a fence's
    leadership check) postpones the notice, to at most 2/3 T after the last
    such request: a fence is still refused (its ``verify()`` waits for the
    notice and fails), but the tick may see live hosts FAILED meanwhile."""
    return round(heartbeat_interval + session_timeout * CUT_NOTICE_SHARE, 6)


def check_cut_off_leader(hung_after: float, heartbeat_interval: float,
                         session_timeout: float) -> None:
    """Refuse a ``hung_after`` that a cut-off leader could reach before its
    client notices the cut: it would declare live hosts FAILED (the hung rule:
    every membership still looks alive to it) and may raise a safety hold,
    sent on the bus. Raises PolicyError naming ``hung_after`` and
    ``session_timeout``.

    ``heartbeat_stale_after`` is not part of it: SUSPECT is not acted on."""
    window = cut_off_window(session_timeout, heartbeat_interval)
    if hung_after > window:
        return
    longest = round((hung_after - heartbeat_interval) / CUT_NOTICE_SHARE, 3)
    raise PolicyError(
        "hung_after",
        f"{hung_after} s is not longer than {window:.3f} s, the age a live host's "
        f"heartbeat can reach for a leader cut off from the coordinator before its "
        f"client notices the cut (heartbeat_interval {heartbeat_interval} s + 2/3 x "
        f"session_timeout {session_timeout} s): that leader would declare live hosts "
        f"FAILED. Make hung_after longer than {window:.3f} s"
        + (f" or session_timeout shorter than {longest} s" if longest > 0 else ""),
        other="session_timeout",
    )


def signals(obs: HostObservation, policy: DetectionPolicy) -> frozenset[Signal]:
    """The signals one observation carries."""
    found = set()
    if not obs.member:
        found.add(Signal.MEMBER_LOST)
        if obs.planned_stop:
            found.add(Signal.PLANNED_STOP)
    if obs.heartbeat_age > policy.heartbeat_stale_after:
        found.add(Signal.HEARTBEAT_STALE)
    if obs.heartbeat_age > policy.hung_after:
        found.add(Signal.HEARTBEAT_HUNG)
    if obs.member and (obs.services.get(NOVA_COMPUTE) is False or obs.nova_service_up is False):
        found.add(Signal.SERVICE_DOWN)
    if obs.nova_service_up is False:
        found.add(Signal.NOVA_DOWN)
    if obs.second_source is SecondSource.ANSWERS:
        found.add(Signal.HOST_ANSWERS)
    elif obs.second_source is not SecondSource.ASKING:
        found.add(Signal.HOST_SILENT)
    return frozenset(found)


_ASK_ON = frozenset({Signal.MEMBER_LOST, Signal.HEARTBEAT_STALE})


def asks_second_source(obs: HostObservation, policy: DetectionPolicy,
                       previous: HostView | None = None) -> bool:
    """Whether the second source must be asked about this host: its agent looks
    dead (membership lost, or silent past heartbeat_stale_after: asked before
    the hung window, so that its answer is there when that window passes), it
    did not stop on purpose, and it is not FAILED already (a FAILED host's
    answer changes nothing: see ``decide``)."""
    if previous is not None and previous.phase is Phase.FAILED:
        return False
    found = signals(obs, policy)
    return bool(found & _ASK_ON) and Signal.PLANNED_STOP not in found


def next_crossing(age: float, policy: DetectionPolicy) -> float | None:
    """Seconds until a ``heartbeat_age`` growing from ``age`` crosses the next
    window of ``policy`` (None: past the last one, time changes nothing more).
    The controller re-decides a host only when its observation changes or at
    such a crossing: a tick costs O(changed hosts)."""
    for window in (policy.heartbeat_stale_after, policy.hung_after):
        if age <= window:
            return window - age
    return None


def match(found: frozenset[Signal]) -> Rule:
    """The first rule whose signals are all in ``found``."""
    for rule in RULES:
        if rule.signals <= found:
            return rule
    raise AssertionError("RULES ends with a rule that needs no signal")  # pragma: no cover


def controller_settled(ctl: ControllerObservation, policy: DetectionPolicy) -> bool:
    return ctl.session is SessionState.CONNECTED and ctl.connected_for >= policy.settle_time


def _service_reason(obs: HostObservation) -> str:
    if obs.services.get(NOVA_COMPUTE) is False:
        return "agent alive, nova-compute not running on the host"
    return "agent alive, Nova reports the nova-compute service down"


_SECOND = {
    SecondSource.NONE: "",
    SecondSource.ASKING: "",
    SecondSource.ANSWERS: "; the host answers the second source",
    SecondSource.SILENT: "; the host does not answer the second source either",
}

LOOKS_DEAD = frozenset({Phase.SUSPECT, Phase.FAILED})


def decide(
    previous: HostView | None,
    obs: HostObservation,
    ctl: ControllerObservation,
    policy: DetectionPolicy,
    now: float,
) -> HostView:
    """Decide one host's phase. Pure: same inputs, same answer."""
    if previous is not None and previous.phase is Phase.FAILED \
            and obs.second_source is not SecondSource.NONE:
        # handed to fencing: a later answer of the second source never takes it back
        obs = dataclasses.replace(obs, second_source=SecondSource.SILENT)
    found = signals(obs, policy)
    rule = match(found)
    phase = rule.phase
    reason = rule.reason.format(age=obs.heartbeat_age, service_reason=_service_reason(obs),
                                second=_SECOND[obs.second_source])
    rule_name = rule.name
    if phase is Phase.FAILED and not controller_settled(ctl, policy):
        if previous is None or previous.phase is not Phase.FAILED:
            phase = Phase.SUSPECT
            rule_name = HOLD_RULE
            reason = (
                f"would be FAILED ({rule.name}: {reason}), but the controller's own "
                f"session is {ctl.session.value} and connected for {ctl.connected_for:.1f} s "
                f"(< {policy.settle_time:.1f} s): its observations are not trusted yet"
            )
    since = previous.since if previous is not None and previous.phase is phase else now
    incarnation = obs.incarnation if obs.member else (previous.incarnation if previous else None)
    boot_id = obs.boot_id or (previous.boot_id if previous else None)
    rejoined = bool(
        previous is not None
        and obs.member
        and previous.incarnation is not None
        and obs.incarnation is not None
        and obs.incarnation != previous.incarnation
    )
    rebooted = bool(
        rejoined and previous is not None and previous.boot_id and obs.boot_id
        and previous.boot_id != obs.boot_id
    )
    if rejoined:
        reason += " (rejoined as a new incarnation" + (
            ", boot id changed: the host rebooted)" if rebooted else ")"
        )
    lost_since = None
    if phase in LOOKS_DEAD:
        lost_since = now
        if previous is not None and previous.phase in LOOKS_DEAD \
                and previous.lost_since is not None:
            lost_since = previous.lost_since
    return HostView(
        host=obs.host,
        phase=phase,
        since=since,
        reason=reason,
        rule=rule_name,
        incarnation=incarnation,
        boot_id=boot_id,
        rejoined=rejoined,
        rebooted=rebooted,
        lost_since=lost_since,
    )


def decide_all(
    previous: dict[str, HostView],
    observations: list[HostObservation],
    ctl: ControllerObservation,
    policy: DetectionPolicy,
    now: float,
) -> dict[str, HostView]:
    """``decide()`` for every observed host; hosts no longer observed are dropped."""
    return {o.host: decide(previous.get(o.host), o, ctl, policy, now) for o in observations}


# -- the table, as the docstring and the documentation show it ---------------------------

TABLE_HEADER = ("rule", "signals required", "phase")


def table_rows(rules: tuple[Rule, ...] = RULES) -> list[tuple[str, str, str]]:
    order = list(Signal)
    return [(r.name, " + ".join(s.value for s in sorted(r.signals, key=order.index)) or "(none)",
             r.phase.value) for r in rules]


if __doc__ is not None:  # python -OO drops docstrings
    __doc__ = tables.fill(__doc__, "{RULES}", tables.render(TABLE_HEADER, table_rows()))
