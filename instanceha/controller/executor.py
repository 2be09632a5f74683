"""The thin executor: acts on the engine's decisions, only while leading.

Leadership is state re-read before every action, not an event remembered:
``leadership.verify()`` makes a round trip to the coordinator right before
each hand-over and yields the fencing token of the current term. Before
that, two switches can stop everything: an operator's pause and the
mass-failure guard (dry-run mode is the actuator's).

The guard's hold outlives the leader: the leader writes it (``guard_hold``
in the coordinator's control node, only when it changes) and a controller
that becomes leader starts from a hold written in another term, level-
triggered, from the control map of each tick's snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Protocol

from instanceha import exceptions
from instanceha.clock import SYSTEM, Clock
from instanceha.coordination import Leadership
from instanceha.engine import guard
from instanceha.engine.model import HostView

LOG = logging.getLogger(__name__)

PAUSED = "paused"
GUARD_OVERRIDE_UNTIL = "guard_override_until"
GUARD_HOLD = "guard_hold"
"""The leader's safety hold: {"held": true, "reason", "since" (epoch s), "token"}."""
REWRITE_AFTER = 5.0
"""Seconds before the same guard_hold record is written again when the
snapshot still does not show it (a write not yet seen, or one undone)."""

AggregatesProvider = Callable[[], guard.Aggregates | None]


class Verify(Protocol):
    """``verify()`` re-checks leadership (a round trip) and returns the fencing
    token; ``token`` is the term as known locally, for bookkeeping only."""

    def __call__(self) -> int: ...

    @property
    def token(self) -> int | None: ...


class Actuator(Protocol):
    """What the executor, the service and the metrics use of an actuator (the
    recovery actuator, or the log-only one): every capability declared here,
    none probed. ``BaseActuator`` gives the optional ones their no-op."""

    def act(self, views: Mapping[str, HostView], fence_allowed: list[str],
            verify: Verify) -> None:
        """Drive recovery, called every tick while this controller leads and is
        not paused. ``fence_allowed``: the FAILED hosts the guard lets it fence
        this tick. ``verify()`` re-checks leadership (a round trip) and returns
        the fencing token: call it right before every world-changing action.
        Must be idempotent and must not block the tick."""

    def idle(self) -> None:
        """Called on every tick it is not given (not leading, paused): let go
        of what only a leader uses. Must not block."""

    @property
    def revision(self) -> int:
        """Grows when what ``nova_status()`` shows changes (a reader skips a
        rebuild while it does not)."""

    def nova_status(self) -> dict[str, dict[str, object]] | None:
        """Nova's view of each host and the recovery decision, for ``instanceha
        status``; None without Nova."""

    def nova_up(self) -> Mapping[str, bool]:
        """Whether Nova reports each host's nova-compute up (empty: no Nova)."""

    def close(self) -> None:
        """Stop the actuator's own threads (shutdown)."""


class BaseActuator:
    """The optional capabilities of an ``Actuator``, as an actuator without Nova has them."""

    revision = 0

    def idle(self) -> None:
        pass

    def nova_status(self) -> dict[str, dict[str, object]] | None:
        return None

    def nova_up(self) -> Mapping[str, bool]:
        return {}

    def close(self) -> None:
        pass


class LogOnlyActuator(BaseActuator):
    """What runs when no fencing is configured: nothing is fenced, nothing is
    evacuated (an instance is never moved off an unfenced host); each failure
    is logged once with the term's token."""

    def __init__(self) -> None:
        self.handed: dict[tuple[str, float], int] = {}

    def act(self, views: Mapping[str, HostView], fence_allowed: list[str],
            verify: Verify) -> None:
        for host in fence_allowed:
            view = views[host]
            key = (host, view.since)
            if key in self.handed:
                continue
            try:
                token = verify()
            except exceptions.NotLeader as e:
                LOG.warning("host=%s action=skipped: %s", host, e)
                return
            self.handed[key] = token
            LOG.warning(
                "host=%s phase=FAILED action=none token=%d: no fencing configured, "
                "the host is NOT fenced and nothing is evacuated", host, token)


class Verifier:
    """``verify()`` for the actuator: a round trip that re-checks leadership and
    returns the fencing token; ``token`` is the term as known locally (no round
    trip), for bookkeeping only (the incident journal notices a new term)."""

    def __init__(self, leadership: Leadership) -> None:
        self._leadership = leadership

    def __call__(self) -> int:
        return self._leadership.verify()

    @property
    def token(self) -> int | None:
        return self._leadership.token


class Executor:
    def __init__(
        self,
        leadership: Leadership,
        actuator: Actuator,
        guard_policy: guard.GuardPolicy | None = None,
        clock: Clock = SYSTEM,
        on_hold: Callable[[guard.GuardState, guard.GuardPolicy], None] | None = None,
        aggregates: AggregatesProvider | None = None,
        persist: Callable[[Mapping[str, object]], object] | None = None,
    ) -> None:
        """``aggregates``: the host aggregates (name -> hosts), None while unknown;
        without a provider there is no grouping (cluster-wide limits only). It
        must answer at once (a cache refreshed elsewhere). ``persist``: the
        coordinator's ``update_control``, where the leader keeps its hold."""
        self.leadership = leadership
        self.actuator = actuator
        self.guard_policy = guard_policy or guard.GuardPolicy()
        self.guard_state = guard.GuardState()
        self.clock = clock
        self.on_hold = on_hold
        self.aggregates = aggregates
        self.persist = persist
        self.verifier = Verifier(leadership)
        self._said: dict[str, str] = {}
        self._admitted: dict[str, float] = {}
        """Hosts handed over, with the ``since`` of the failure they were handed
        over for: they stay handed over; the per-tick cap paces the others."""
        self.hold_since_wall: float | None = None
        self._adopted: tuple | None = None
        self._written: tuple[object, float] | None = None
        self._aggregates_known: bool | None = None

    def _say_once(self, key: str, message: str, *args) -> None:
        text = message % args
        if self._said.get(key) != text:
            self._said[key] = text
            LOG.warning(message, *args)

    def act(self, views: Mapping[str, HostView], now: float = 0.0,
            control: Mapping[str, object] | None = None,
            phases: guard.Phases | None = None) -> list[str]:
        """Hand the selected FAILED hosts over; returns their names. ``phases``:
        the views indexed by phase, when the caller keeps it."""
        control = control or {}
        override = control.get(GUARD_OVERRIDE_UNTIL)
        released = isinstance(override, (int, float)) and self.clock.wall() < override
        leader = self.leadership.is_leader()
        token = self.leadership.token if leader else None
        before = self.guard_state
        if leader:
            before = self._take_over(before, control.get(GUARD_HOLD), token, now)
        state = guard.evaluate(views, before, self.guard_policy, now, released,
                               self._grouping(), phases=phases)
        if state.held and not before.held:
            self.hold_since_wall = round(self.clock.wall(), 3)
            LOG.error("safety hold: fencing held for every host: %s", state.reason)
            if self.on_hold is not None and leader:
                self.on_hold(state, self.guard_policy)
        elif before.held and not state.held:
            self.hold_since_wall = None
            LOG.warning("safety hold lifted: %s", state.reason or "the picture is stable")
        self.guard_state = state
        if leader:
            self._keep_hold(control.get(GUARD_HOLD), token, now)
        selected = guard.select(views, state, self.guard_policy, self._admitted, phases, now)
        if not self.leadership.is_leader():
            self._admitted = {}
            self._idle()
            return []
        if control.get(PAUSED):
            if selected:
                self._say_once("pause", "paused by an operator (%s): not acting on %s",
                               control[PAUSED], ", ".join(selected))
            self._idle()
            return []
        self._said.pop("pause", None)
        self._admitted = {host: views[host].since for host in selected}
        self.actuator.act(views, selected, self.verifier)
        return selected

    def _idle(self) -> None:
        """A tick this controller does not act on (not leading, paused): the
        actuator's ``idle()`` lets go of what only a leader uses."""
        self.actuator.idle()

    # -- the per-aggregate grouping -------------------------------------------
    def _grouping(self) -> guard.Aggregates | None:
        if self.aggregates is None:
            return guard.NO_AGGREGATES
        error: str | None = None
        try:
            grouping = self.aggregates()
        except Exception as e:  # a provider must not break the guard: assume the worst
            LOG.exception("host aggregates provider failed")
            grouping, error = None, f"{type(e).__name__}"
        known = grouping is not None
        if known != self._aggregates_known:
            first = self._aggregates_known is None  # starting: not read yet is expected
            self._aggregates_known = known
            if grouping is not None:
                LOG.info("host aggregates known (%d aggregates): the per-aggregate limits "
                         "apply to them", len(grouping))
            else:
                (LOG.info if first else LOG.warning)(
                    "host aggregates unknown%s: the guard assumes every host that looks dead "
                    "may be in one aggregate", f" ({error})" if error else "")
        return grouping

    # -- the hold, persisted for the next leader -------------------------------
    def _take_over(self, state: guard.GuardState, record: object, token: int | None,
                   now: float) -> guard.GuardState:
        """Start from a hold written by the leader of another term (once per record)."""
        if not isinstance(record, Mapping) or not record.get("held"):
            return state
        key = (record.get("token"), record.get("since"))
        if record.get("token") == token or key == self._adopted:
            return state
        self._adopted = key
        if state.held:
            return state  # already held here: our own record replaces it below
        since = record.get("since")
        since = since if isinstance(since, (int, float)) and not isinstance(since, bool) \
            else self.clock.wall()
        cause = str(record.get("reason") or "a hold persisted by a previous leader")
        self.hold_since_wall = since
        LOG.warning("safety hold taken over from the previous leader (token %s, held for "
                    "%.0f s): %s", record.get("token"), max(0.0, self.clock.wall() - since), cause)
        return guard.adopt(state, cause, now - max(0.0, self.clock.wall() - since))

    def _keep_hold(self, current: object, token: int | None, now: float) -> None:
        """Write ``guard_hold`` when the hold changed (raised, cause, lifted)."""
        state = self.guard_state
        desired = None
        if state.held:
            desired = {"held": True, "reason": state.cause or state.reason,
                       "since": self.hold_since_wall, "token": token}
        if desired == current or self.persist is None:
            return
        if self._written is not None and self._written[0] == desired \
                and now - self._written[1] < REWRITE_AFTER:
            return  # written already, not seen in the snapshot yet
        try:
            self.persist({GUARD_HOLD: desired})
        except exceptions.CoordinationError as e:
            self._say_once("persist", "safety hold not persisted (a new leader may not "
                           "honour it): %s; retrying", e)
            return
        self._said.pop("persist", None)
        self._written = (desired, now)

    def guard_report(self) -> dict:
        """The guard's part of the published status."""
        state = self.guard_state
        describe = getattr(self.aggregates, "describe", None)
        if self.aggregates is None:
            aggregates: object = "not configured (cluster-wide limits only)"
        elif describe is not None:
            aggregates = describe()
        else:
            aggregates = "known" if state.aggregates_known else "unknown"
        return {"held": state.held, "reason": state.reason, "cause": state.cause,
                "since": self.hold_since_wall if state.held else None,
                "rules": list(state.rules), "aggregates": aggregates}
