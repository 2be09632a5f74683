"""Stage REENABLE: put a repaired host back in service, in two steps.

First only forced-down is unset: Nova then shows the service up once
nova-compute really reports (a forced-down one reads down whatever runs).
Enabling before that leaves placement's COMPUTE_STATUS_DISABLED trait on the
host (nova-api syncs it at enable time only for a service it sees up) and the
scheduler refuses the host until the compute's next resource update. A later
tick, on a view where Nova reports the service up, enables it.
"""

from __future__ import annotations

import logging

from instanceha.controller.journal import IncidentState

from .context import StageContext

LOG = logging.getLogger(__name__)


def run(ctx: StageContext, host: str, svc, verify,
        seen: int | None = None) -> tuple[float | None, int | None]:
    """Returns how long to wait before the next try (None when done) and the
    evacuated instances not cleaned up yet (None: none). ``seen``: that count
    as the last try saw it (said again only when it changes)."""
    pending = [m for m in ctx.nova.evacuations(source_host=host) if m.status == "done"]
    if pending:
        if seen != len(pending):
            LOG.info("host=%s waiting for nova-compute to clean up %d evacuated "
                     "instance(s)", host, len(pending))
        return ctx.settings.nova_refresh, len(pending)
    if svc.forced_down:
        ctx.guarded(verify).unset_forced_down(host)
        ctx.report.record(host, "unforced", "forced-down unset (still disabled): enabled "
                          "once Nova itself reports its nova-compute up")
        LOG.info("host=%s forced-down unset; enabled once Nova reports nova-compute up", host)
        return None, None
    ctx.guarded(verify).enable(host, unset_forced_down=True)
    m = svc.marker
    incident = ctx.report.incident(host, m.token if m and m.token is not None else None)
    ctx.report.record(host, "restored", "back in service: nova-compute up, evacuations "
                      "cleaned up; enabled", state=IncidentState.CLOSED)
    ctx.report.emit("host_restored", host=host, incident_id=incident,
                    reason="repaired: nova-compute up, evacuations cleaned up")
    LOG.warning("host=%s back in service: enabled (nova-compute reported up)", host)
    return None, None
