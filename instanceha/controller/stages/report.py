"""The recovery's three reports, in one place: the incident journal, the
notifications on the bus and the metrics. Each is optional (a log-only or
test set-up has none); none of them ever stops a recovery."""

from __future__ import annotations

import logging

from instanceha.notify import events

LOG = logging.getLogger(__name__)

__all__ = ["FENCE_ATTEMPTS", "Reporter"]

FENCE_ATTEMPTS = "fence_attempts"
"""The incident's counter of fencing attempts (its summary, kept across leaders)."""


class Reporter:
    def __init__(self, notifier=None, events=None, journal=None, metrics=None) -> None:
        self.notifier = notifier
        self.events = events
        self.journal = journal
        self.metrics = metrics

    def emit(self, name: str, **kwargs) -> None:
        """Build the event ``name`` (``instanceha.notify.events``) and hand it to
        the outbox (returns at once), unless the incident's journal says that
        step's notification was sent already (its idempotency key): by this
        controller, or by a leader before it. Recorded as sent once delivered."""
        if self.notifier is None or self.events is None:
            return
        try:
            event = getattr(self.events, name)(**kwargs)
        except ValueError as e:  # a payload our schema refuses: a bug, never a stall
            LOG.error("notification %s not built: %s", name, e)
            return
        journal, incident = self.journal, event.payload.get("incident_id")
        key = event.payload.get("idempotency_key")
        if journal is None or incident is None:
            self.notifier.emit(event)
            return
        if not journal.claim(incident, key):
            LOG.info("notification %s not sent again: incident %s has sent it (%s)",
                     event.event_type, incident, key)
            return
        sent = self.notifier.emit(event, on_done=lambda delivered: journal.notified(
            incident, key, delivered))
        if sent is None:  # notifications disabled: nothing on its way
            journal.notified(incident, key, False)

    def opened_at(self, incident: str) -> float | None:
        """When the incident opened (wall seconds; None without a journal)."""
        return self.journal.opened_at(incident) if self.journal is not None else None

    @property
    def tells(self) -> bool:
        """Notifications go out, and the journal records which were (``told``)."""
        return self.notifier is not None and self.events is not None \
            and self.journal is not None and self.notifier.enabled

    def told(self, event_type: str, incident: str, instance_id: str | None = None) -> bool:
        """Was the notification ``event_type`` of this incident (and instance)
        delivered, by this controller or a leader before it, or is it on its
        way? False without a journal: nothing says it was."""
        if self.journal is None:
            return False
        return self.journal.told(incident,
                                 events.idempotency_key(incident, event_type, instance_id))

    def attempt(self, incident: str) -> int:
        """The number of the fencing attempt under way (counted in the journal
        across leaders; 1 without a journal)."""
        if self.journal is None:
            return 1
        return max(1, self.journal.count(incident, FENCE_ATTEMPTS))

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
