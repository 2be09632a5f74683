"""The recovery's three reports, in one place: the incident journal, the
notifications on the bus and the metrics. Each is optional (a log-only or
test set-up has none); none of them ever stops a recovery."""

from __future__ import annotations

import logging

LOG = logging.getLogger(__name__)

__all__ = ["Reporter"]


class Reporter:
    def __init__(self, notifier=None, events=None, journal=None, metrics=None) -> None:
        self.notifier = notifier
        self.events = events
        self.journal = journal
        self.metrics = metrics

    def emit(self, name: str, **kwargs) -> None:
        """Build the event ``name`` (``instanceha.notify.events``) and hand it to
        the outbox (returns at once)."""
        if self.notifier is None or self.events is None:
            return
        try:
            self.notifier.emit(getattr(self.events, name)(**kwargs))
        except ValueError as e:  # a payload our schema refuses: a bug, never a stall
            LOG.error("notification %s not built: %s", name, e)

    def record(self, host: str, kind: str, text: str, **kwargs) -> str | None:
        if self.journal is None:
            return None
        return self.journal.record(host, kind, text, **kwargs)

    def open(self, host: str, token: int, kind: str, text: str, **kwargs) -> str:
        if self.journal is None:
            return f"{host}-{token}"
        return self.journal.open(host, token, kind, text, **kwargs)

    def incident(self, host: str, token: int | None) -> str:
        """The id of the host's open incident (the term's fallback without one)."""
        incident = self.journal.current(host) if self.journal is not None else None
        return incident or f"{host}-{token}"

    def count(self, what: str, result: str, duration: float | None = None) -> None:
        if self.metrics is not None:
            getattr(self.metrics, what)(result, duration)

    def fenced_by(self, level: int, devices) -> None:
        """Which fencing level (and devices) confirmed a power-off."""
        if self.metrics is not None:
            self.metrics.fence_level(level, devices)
