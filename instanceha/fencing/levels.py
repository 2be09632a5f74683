"""Fencing levels, as Pacemaker's fencing topology.

A host has an ordered list of levels; a level is one or more devices (a BMC;
or the two PDU outlets of a host with two power supplies). A level counts
only when EVERY one of its devices read back the requested state through the
one confirm loop (``confirm.confirm``); its devices are driven one after the
other, each with its own deadline. The next level is tried only when the
previous one could not confirm, whatever the reason (a BMC that lost power
with its host, a wrong password, a hanging agent). The host counts as fenced
only when one whole level read back off; otherwise ``LevelsFailed`` lists what
each level said (a host with one level raises that level's error unchanged).

A device of a failed level that did go off is left off: the host is dead
anyway, and Pacemaker does the same.
"""

from __future__ import annotations

import dataclasses
import logging

from instanceha.clock import Clock
from instanceha.exceptions import Action
from instanceha.fencing import exceptions as exc
from instanceha.fencing.base import FenceDriver, PowerState
from instanceha.fencing.confirm import FenceEvidence, FencePolicy, confirm

LOG = logging.getLogger(__name__)


def _label(driver: FenceDriver) -> str:
    return driver.entry.describe()


def _levels_failed(host: str, state: PowerState, failures: list) -> exc.LevelsFailed:
    text = "; ".join(f"level {n} ({_label(d)}): {type(e).__name__}: {e}"
                     for n, d, e in failures)
    err = exc.LevelsFailed(host=host, requested=state.value, levels=text)
    if not any(e.retryable for _, _, e in failures):
        err.action = Action.ESCALATE  # nothing will pass by itself: an operator must act
    err.failures = [(n, _label(d), e) for n, d, e in failures]
    return err


def run(host: str, levels: list[list[FenceDriver]], state: PowerState, policy: FencePolicy,
        clock: Clock) -> FenceEvidence:
    """Bring ``host`` to ``state`` through the first level that confirms it."""
    start, started_at = clock.monotonic(), clock.wall()
    failures: list = []
    for n, devices in enumerate(levels, 1):
        proofs = []
        try:
            for d in devices:
                proofs.append(confirm(d, state, policy, deadline=d.entry.deadline,
                                      clock=clock))
        except exc.FencingError as e:
            failures.append((n, d, e))
            if n < len(levels):
                LOG.warning("power %s of %s: level %d (%s) could not confirm (%s); trying "
                            "level %d", state, host, n, _label(d), type(e).__name__, n + 1)
            continue
        first = proofs[0]
        return dataclasses.replace(
            first, attempts=sum(p.attempts for p in proofs), reads=sum(p.reads for p in proofs),
            started_at=started_at, finished_at=clock.wall(), duration=clock.monotonic() - start,
            level=n, levels=len(levels), devices=tuple(_label(d) for d in devices),
            failed_levels=tuple(f"level {m} ({_label(fd)}): {type(fe).__name__}"
                                for m, fd, fe in failures))
    if len(levels) == 1:
        raise failures[0][2]
    raise _levels_failed(host, state, failures)
