"""A failed host, from fence to recovery, without waiting for a tick.

While the fence runs, the recovery's reads are made (plan, and the spare with
``reserved_hosts``), unless the plan was read ahead while the guard held the
host; nothing is written before the power-off is read back.
Once forced down, the host is recovered at once if the detector still sees it
FAILED (a host back alive meanwhile is left to the next tick, which holds it):
the fence returns the recovery, which the actuator runs on a recovery worker,
so that a fence worker is never held by a recovery waiting on Nova.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable

from instanceha import exceptions
from instanceha.compute import calls

from . import fence, recover
from .context import StageContext
from .plan import read_plan

LOG = logging.getLogger(__name__)


def fence_then_recover(ctx: StageContext, reads: concurrent.futures.Executor, host: str, view,
                       svc, verify, plan: concurrent.futures.Future | None = None
                       ) -> Callable[[], None] | None:
    """Fence ``host`` now (on the caller's thread, a fence worker); returns its
    recovery, to be run next on a recovery worker, or None when the host is
    not to be recovered now. ``plan``: the plan read ahead for this failure
    (its requests already counted for this incident); None: read it now,
    beside the fence."""
    if plan is None:
        ctx.calls.restart(host)  # a new incident: its API calls counted from here
        plan = calls.submit(reads, read_plan, ctx.nova, host, ctx.settings.default_recovery)
    spare = calls.submit(reads, ctx.placement.prepare, host, svc.marker)
    try:
        fenced = fence.run(ctx, host, view, svc, verify)
    except BaseException:
        _release(ctx, host, spare)
        raise
    if not ctx.still_failed(host):
        LOG.warning("host=%s fenced but no longer FAILED (%s): the next tick decides",
                    host, ctx.phases().get(host))
        _release(ctx, host, spare)
        return None

    def recovery() -> None:
        try:
            recover.run(ctx, host, fenced, verify, plan=_ready(host, plan, "plan"),
                        prepared=_ready(host, spare, "spare choice"))
        finally:
            _release(ctx, host, spare)

    return recovery


def _release(ctx: StageContext, host: str, spare: concurrent.futures.Future) -> None:
    if not spare.cancel():  # a choice still being made would hold the spare again
        concurrent.futures.wait([spare])
    ctx.placement.release(host)


def _ready(host: str, future: concurrent.futures.Future, what: str):
    """The prepared read, or None when it failed (the stage reads it itself)."""
    try:
        return future.result()
    except exceptions.InstanceHAError as e:
        LOG.warning("host=%s %s read during the fence failed (%s): read again now", host,
                    what, e)
        return None
