"""The leader journals what the coordination store could not trust.

The coordinator's view reports an :class:`~instanceha.coordination.base.Alert`
for every entry it refused to believe (an index entry or a stall report of
another host's session, a guest failure written in a host's slot naming
another host) and for every membership node deleted while its session lived.
None of them is acted on; the leader records each one, once, in the incident
journal (``instanceha incidents``), where the host's operators look.
"""

from __future__ import annotations

import logging

from instanceha.controller.journal import IncidentState
from instanceha.coordination import ClusterSnapshot

LOG = logging.getLogger(__name__)


class AlertJournal:
    def __init__(self, journal) -> None:
        """``journal``: the incident journal (controller.journal), or None."""
        self.journal = journal
        self.seen = 0
        self.recorded = 0

    def tick(self, snapshot: ClusterSnapshot) -> int:
        new = [a for a in snapshot.alerts if a.seq > self.seen]
        if not new:
            return 0
        self.seen = new[-1].seq
        if self.journal is None:
            return 0
        for a in new:
            # an incident of its own, ended at once: a record, not a recovery
            self.journal.record(a.host, "tampering", f"{a.kind}: {a.detail}",
                                instance=f"coordination-{a.kind}", opens=True,
                                state=IncidentState.CLOSED, incident_type="tampering", alert=a.kind)
        self.recorded += len(new)
        return len(new)
