"""The thin executor: acts on the engine's decisions, only while leading.

Leadership is state re-read before every action, not an event remembered:
``leadership.verify()`` makes a round trip to the coordinator right before
each hand-over and yields the fencing token of the current term. Before
that, two switches can stop everything: an operator's pause and the
mass-failure guard (dry-run mode is the actuator's).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from instanceha import exceptions
from instanceha.coordination import Leadership
from instanceha.engine import guard
from instanceha.engine.model import HostView

LOG = logging.getLogger(__name__)

PAUSED = "paused"
GUARD_OVERRIDE_UNTIL = "guard_override_until"


class Actuator(Protocol):
    def act(self, views: Mapping[str, HostView], fence_allowed: list[str],
            verify: Callable[[], int]) -> None:
        """Drive recovery, called every tick while this controller leads and is
        not paused. ``fence_allowed``: the FAILED hosts the guard lets it fence
        this tick. ``verify()`` re-checks leadership (a round trip) and returns
        the fencing token: call it right before every world-changing action.
        Must be idempotent and must not block the tick."""


class LogOnlyActuator:
    """What runs when no fencing is configured: nothing is fenced, nothing is
    evacuated (an instance is never moved off an unfenced host); each failure
    is logged once with the term's token."""

    def __init__(self) -> None:
        self.handed: dict[tuple[str, float], int] = {}

    def act(self, views, fence_allowed, verify) -> None:
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
        wall: Callable[[], float] = time.time,
        on_hold: Callable[[guard.GuardState, guard.GuardPolicy], None] | None = None,
    ) -> None:
        self.leadership = leadership
        self.actuator = actuator
        self.guard_policy = guard_policy or guard.GuardPolicy()
        self.guard_state = guard.GuardState()
        self.wall = wall
        self.on_hold = on_hold
        self.verifier = Verifier(leadership)
        self._said: dict[str, str] = {}
        self._admitted: dict[str, float] = {}
        """Hosts handed over, with the ``since`` of the failure they were handed
        over for: they stay handed over; the per-tick cap paces the others."""

    def _say_once(self, key: str, message: str, *args) -> None:
        text = message % args
        if self._said.get(key) != text:
            self._said[key] = text
            LOG.warning(message, *args)

    def act(self, views: Mapping[str, HostView], now: float = 0.0,
            control: Mapping[str, object] | None = None) -> list[str]:
        """Hand the selected FAILED hosts over; returns their names."""
        control = control or {}
        override = control.get(GUARD_OVERRIDE_UNTIL)
        released = isinstance(override, (int, float)) and self.wall() < override
        state = guard.evaluate(dict(views), self.guard_state, self.guard_policy, now, released)
        if state.held and not self.guard_state.held:
            LOG.error("safety hold: fencing held for every host: %s", state.reason)
            if self.on_hold is not None and self.leadership.is_leader():
                self.on_hold(state, self.guard_policy)
        elif self.guard_state.held and not state.held:
            LOG.warning("safety hold lifted: %s", state.reason or "the picture is stable")
        self.guard_state = state
        selected = guard.select(dict(views), state, self.guard_policy, self._admitted)
        if not self.leadership.is_leader():
            self._admitted = {}
            return []
        if control.get(PAUSED):
            if selected:
                self._say_once("pause", "paused by an operator (%s): not acting on %s",
                               control[PAUSED], ", ".join(selected))
            return []
        self._said.pop("pause", None)
        self._admitted = {host: views[host].since for host in selected}
        self.actuator.act(views, selected, self.verifier)
        return selected
