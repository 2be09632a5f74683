"""Incidents in memory: their states, and how a journal entry resolves to one.

``IncidentIndex`` holds the incidents a journal knows (id -> summary) and
applies entries to them: which incident an entry belongs to (the host's open
one, a new one, or the one named), its state change, its counters, and the
retention of ended incidents. It does no I/O and takes no lock: the journal
(``controller.journal``) calls it under its own lock and hands each change to
its outbox (``push``), which writes it to the coordinator.

Incident ids are ``<host>-<token>``: the host and the fencing token of the
term that opened it (``.2``, ``.3``... if a term opens several for one host;
``.<epoch milliseconds>`` for one opened while the store could not be read:
the id its notifications already carry, which no other incident has).
A guest failure is keyed by host *and* instance:
``<host>-<first 8 of the instance id>-<token>``, with ``instance_id`` in its
summary; it never mixes with the host's incidents.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping

MAX_TEXT = 2000
SENT = "notifications_sent"
"""The summary's list of the idempotency keys of the notifications delivered."""


class IncidentState(str, enum.Enum):
    DETECTED = "detected"
    """FAILED and to be fenced; not fenced yet (guard, per-tick cap, pause)."""
    FENCING = "fencing"
    """A fence started; its result is not recorded in Nova yet."""
    FENCE_FAILED = "fence-failed"
    """The last fence attempt failed; retried with back-off."""
    FENCED = "fenced"
    """Power-off confirmed (or attested) and the service forced down."""
    RECOVERING = "recovering"
    RECOVERED = "recovered"
    """Every instance handled; waiting for the host to come back."""
    HELD = "held"
    """Kept disabled for an operator."""
    AGENT_DOWN = "agent-down"
    """"Agent dead, host alive": the host's agent is gone but the host answers
    the second source. Nothing is fenced: an alert for an operator. Closed when
    the agent is back; a fence (the host fell silent too) continues it."""
    GAVE_UP = "gave-up"
    """A guest failure instanceha stopped restarting (too many, or Nova kept busy):
    left to an operator or the owner. Ends the incident, like closed."""
    CLOSED = "closed"


ENDED = frozenset({IncidentState.CLOSED, IncidentState.GAVE_UP})
ENDED_VALUES = frozenset(s.value for s in ENDED)
OPEN = frozenset(IncidentState) - ENDED
CONTINUED_BY_A_FENCE = frozenset({IncidentState.DETECTED, IncidentState.FENCING,
                                  IncidentState.FENCE_FAILED, IncidentState.AGENT_DOWN})
"""A new fence of the host continues an incident in these states (a leader
died before recording its fence in Nova); any other open one is over."""


@dataclasses.dataclass(frozen=True)
class Retention:
    keep: int = 500
    """Closed incidents kept (the newest)."""
    max_age: float = 90 * 86400.0
    """Closed incidents older than this (seconds since their last entry) are deleted."""

    def __post_init__(self) -> None:
        if self.keep < 1 or self.max_age <= 0:
            raise ValueError("incident retention must keep at least 1 incident for some time")


DEFAULT_RETENTION = Retention()


@dataclasses.dataclass(frozen=True)
class Entry:
    """One ``IncidentJournal.record`` call, as applied to the index."""

    host: str
    kind: str
    text: str
    facts: Mapping[str, object]
    at: float
    state: IncidentState | None
    opens: bool
    new_failure: bool
    close_if: frozenset[IncidentState]
    counts: Mapping[str, int]
    instance: str | None = None
    target: str | None = None
    new_id: str | None = None
    """The id of the incident this entry opens, if it opens one (and it is free)."""


Push = Callable[..., None]
"""``push(op, incident, summary=None, entry=None)``: hand a change to the store."""


class IncidentIndex:
    """The incidents of one term as known here (``summaries``: id -> summary)."""

    def __init__(self, summaries: dict[str, dict], term: int | None, name: str,
                 retention: Retention, push: Push) -> None:
        self.summaries = summaries
        self.term = term
        self.name = name
        self.retention = retention
        self.push = push

    def get(self, incident: str) -> dict | None:
        return self.summaries.get(incident)

    def open_for(self, host: str, instance: str | None = None) -> str | None:
        """The host's (or the host's instance's) open incident, the newest."""
        candidates = [(s.get("opened_at", 0.0), i) for i, s in self.summaries.items()
                      if s.get("host") == host and s.get("instance_id") == instance
                      and s.get("state") in OPEN]
        return max(candidates)[1] if candidates else None

    def open_in(self, state: IncidentState) -> dict[str, str]:
        """host -> its open host incident in ``state``."""
        return {s["host"]: i for i, s in self.summaries.items()
                if s.get("state") == state.value and s.get("instance_id") is None}

    def _new_id(self, host: str, instance: str | None = None) -> str:
        base = f"{host}-{self.term if self.term is not None else 0}"
        if instance is not None:
            base = f"{host}-{instance[:8]}-{self.term if self.term is not None else 0}"
        incident, n = base, 1
        while incident in self.summaries:
            n += 1
            incident = f"{base}.{n}"
        return incident

    def apply(self, item: Entry) -> str | None:
        """Add the entry to its incident (opening one if it says so); the
        incident id, or None when the host has none open and it opens none."""
        if item.target is not None and item.target in self.summaries:
            self._transition(item.target, item.at, item.kind, item.text, item.state, item.facts)
            return item.target
        incident = self.open_for(item.host, item.instance)
        if item.new_failure and incident is not None and \
                self.summaries[incident]["state"] not in CONTINUED_BY_A_FENCE:
            self._transition(incident, item.at, "closed", "superseded: the host failed again "
                             "after being back in service", IncidentState.CLOSED)
            incident = None
        if incident is None:
            if not item.opens:
                return None  # nothing open for this host: not an incident's business
            incident = item.new_id if item.new_id is not None \
                and item.new_id not in self.summaries else self._new_id(item.host, item.instance)
            self.summaries[incident] = {
                "id": incident, "host": item.host, "state": IncidentState.DETECTED.value,
                "opened_at": item.at, "opened_by": self.name, "term": self.term,
                "updated_at": item.at, "closed_at": None, "entries": 0, "reason": "",
            }
            if item.instance is not None:
                self.summaries[incident].update(
                    type=item.facts.get("incident_type", "guest"), instance_id=item.instance)
            self._prune(item.at)
        summary = self.summaries[incident]
        state = item.state
        if state is None and item.close_if and IncidentState(summary["state"]) in item.close_if:
            state = IncidentState.CLOSED
        for key, value in item.counts.items():
            summary[key] = summary.get(key, 0) + value
        if "fence" in item.facts:
            summary["fence"] = item.facts["fence"]
        self._transition(incident, item.at, item.kind, item.text, state, item.facts)
        return incident

    def sent(self, incident: str, key: str) -> None:
        """Record a delivered notification in its incident (while it is open)."""
        summary = self.summaries.get(incident)
        if summary is None or summary.get("state") in ENDED_VALUES:
            return
        sent = list(summary.get(SENT, ()))
        if key in sent:
            return
        summary[SENT] = sent + [key]
        self.push("write", incident, dict(summary))

    def _transition(self, incident: str, at: float, kind: str, text: str,
                    state: IncidentState | None, facts: Mapping[str, object] | None = None) -> None:
        summary = self.summaries[incident]
        if state is not None:
            summary["state"] = state.value
            summary["reason"] = text
            if state in ENDED:
                summary["closed_at"] = at
                summary.pop(SENT, None)  # nothing is sent again for it: bounded
        summary["updated_at"] = at
        summary["entries"] = summary.get("entries", 0) + 1
        entry = {"at": at, "kind": kind, "text": text, "by": self.name, "term": self.term}
        if state is not None:
            entry["state"] = state.value
        entry.update(facts or {})
        self.push("write", incident, dict(summary), entry)

    def _prune(self, now: float) -> None:
        closed = sorted((s.get("updated_at", 0.0), i) for i, s in self.summaries.items()
                        if s.get("state") in ENDED_VALUES)
        doomed = {i for t, i in closed if now - t > self.retention.max_age}
        excess = len(closed) - self.retention.keep
        doomed.update(i for _, i in closed[:max(0, excess)])
        for incident in sorted(doomed):
            del self.summaries[incident]
            self.push("delete", incident)
