"""Stage HOLD: keep the host disabled, marked HELD, for an operator (it came
back while its recovery was under way, it flaps, or its marker is unreadable)."""

from __future__ import annotations

import logging

from instanceha.controller.journal import IncidentState
from instanceha.engine import marker as mk

from .context import StageContext

LOG = logging.getLogger(__name__)


def run(ctx: StageContext, host: str, svc, verify, reason: str) -> None:
    m = svc.marker
    token = m.token if m and m.token is not None else None
    ctx.guarded(verify).disable(host, ctx.marker(mk.MarkerState.HELD, token, reason))
    LOG.error("host=%s HELD for an operator: %s", host, reason)
    ctx.report.record(host, "held", f"held for an operator: {reason}", state=IncidentState.HELD,
                      opens=True)
