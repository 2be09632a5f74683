"""The thin executor: acts on the engine's decisions, only while leading.

Leadership is state re-read before every action, not an event remembered:
``leadership.verify()`` makes a round trip to the coordinator right before
each hand-over and yields the fencing token of the current term.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from instanceha import exceptions
from instanceha.coordination import Leadership
from instanceha.engine.model import HostView, Phase

LOG = logging.getLogger(__name__)


class FailureHandler(Protocol):
    def handle_failed(self, view: HostView, token: int) -> None:
        """Make the failed host safe and recover it. Called every tick while the
        host is FAILED and this controller leads: must be idempotent."""


class LogOnlyHandler:
    """Records the hand-over when no fencing is configured: nothing is fenced,
    nothing is evacuated (an instance is never moved off an unfenced host)."""

    def __init__(self) -> None:
        self.handed: dict[tuple[str, float], int] = {}

    def handle_failed(self, view: HostView, token: int) -> None:
        key = (view.host, view.since)
        if key not in self.handed:
            self.handed[key] = token
            LOG.warning(
                "host=%s phase=FAILED action=none token=%d: no fencing configured, "
                "the host is NOT fenced and nothing is evacuated",
                view.host,
                token,
            )


class Executor:
    def __init__(self, leadership: Leadership, handler: FailureHandler) -> None:
        self.leadership = leadership
        self.handler = handler

    def act(self, views: Mapping[str, HostView]) -> int:
        """Hand every FAILED host over; returns how many were handed over."""
        failed = [v for v in views.values() if v.phase is Phase.FAILED]
        if not failed or not self.leadership.is_leader():
            return 0
        done = 0
        for view in failed:
            try:
                token = self.leadership.verify()
            except exceptions.NotLeader as e:
                LOG.warning("host=%s action=skipped: %s", view.host, e)
                return done
            self.handler.handle_failed(view, token)
            done += 1
        return done
