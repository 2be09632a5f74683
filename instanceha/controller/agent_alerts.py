"""The incident journal's account of hosts whose agent alone is dead.

A host the second source holds (``AGENT_DOWN``: its agent is gone, the host
answers) is an alert, not a recovery: the leader opens an incident for it
(state ``agent-down``, "agent dead, host alive"), closes it when the agent is
back, and, when the host falls silent too (FAILED), says so in that same
incident: the fence that follows continues it, so ``instanceha incidents
show`` tells one story. A new leader journals the hosts it finds in
``AGENT_DOWN`` again (the entry goes to the incident already open) and, once
it has read the journal, closes the alerts of hosts whose agent came back
while no leader was watching.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from instanceha.controller.journal import IncidentJournal
from instanceha.controller.journal import IncidentState as Incident
from instanceha.engine.model import HostView, Phase

LOG = logging.getLogger(__name__)

BACK = frozenset({Phase.HEALTHY, Phase.DEGRADED, Phase.STOPPED})


class AgentDownAlerts:
    def __init__(self, journal: IncidentJournal) -> None:
        self.journal = journal
        self._views: Mapping[str, HostView] | None = None
        self._reconciled: int | None = None
        self.opened = 0

    def idle(self) -> None:
        """Not leading: what happens meanwhile is the leader's to journal."""
        self._views = None
        self._reconciled = None

    def tick(self, views: Mapping[str, HostView], token: int | None) -> None:
        """The leader, every tick: journal the changes of the views (the map is
        replaced when a view changes, never mutated: a steady cluster costs nothing)."""
        self.journal.term(token)
        if self._reconciled != token:
            self._reconcile(views, token)
        last, self._views = self._views, views
        if views is last:
            return
        if last is None:  # a new leader: the hosts held now
            for host, view in views.items():
                if view.phase is Phase.AGENT_DOWN:
                    self._opened(host, view)
            return
        for host, view in views.items():
            before = last.get(host)
            if before is view or (before is not None and before.phase is view.phase):
                continue
            if view.phase is Phase.AGENT_DOWN:
                self._opened(host, view)
            elif before is not None and before.phase is Phase.AGENT_DOWN:
                self._left(host, view)

    def _reconcile(self, views: Mapping[str, HostView], token: int | None) -> None:
        """Once per term, when the journal is read: close the alerts left open by
        an earlier term for hosts whose agent is back."""
        open_alerts = self.journal.open_in(Incident.AGENT_DOWN)
        if open_alerts is None:
            return  # not read yet: next tick
        self._reconciled = token
        for host in sorted(open_alerts):
            view = views.get(host)
            if view is None or view.phase in BACK:
                self.journal.record(host, "alert", "the agent is back (seen by a new leader): "
                                    + (view.reason if view else "the host is no longer "
                                       "registered"), close_if=frozenset({Incident.AGENT_DOWN}))

    def _opened(self, host: str, view: HostView) -> None:
        self.opened += 1
        LOG.warning("host=%s ALERT agent dead, host alive: %s", host, view.reason)
        self.journal.record(host, "alert", view.reason, opens=True, state=Incident.AGENT_DOWN,
                            phase=view.phase.value, rule=view.rule)

    def _left(self, host: str, view: HostView) -> None:
        if view.phase is Phase.FAILED:
            self.journal.record(host, "alert", f"the host no longer looks alive: {view.reason}; "
                                "handed to fencing", phase=view.phase.value, rule=view.rule)
        elif view.phase in BACK:
            self.journal.record(host, "alert", f"the agent is back ({view.phase.value}): "
                                f"{view.reason}", phase=view.phase.value,
                                close_if=frozenset({Incident.AGENT_DOWN}))
