"""The recovery actuator: the tick and the dispatch of the recovery stages.

Level-triggered. Every tick it reads what Nova says of each host (refreshed
in the background by ``nova_view.NovaView``, so a slow Nova never stalls
detection), asks the pure ``engine.recovery.next_stage()`` what to do, and
runs that step as a job: one job per host at a time, so one slow BMC or one
long evacuation never holds up another host. The stages themselves, one
module each, are in ``instanceha.controller.stages`` (read its docstring for
the pipeline top to bottom).

Fences first: a fence never waits for a recovery (``jobs.Jobs``). A FENCE
job hands its host's recovery over to the recovery workers as soon as the
force-down is acknowledged, with the reads it needs made while the fence
ran. A FAILED
host the guard still holds has its plan read ahead already
(``read_ahead.ReadAhead``), read-only, so that the fence finds it ready.
Each step ends by writing the next durable marker into Nova; a controller
that dies mid-way leaves a marker the next leader resumes from.

Leadership is re-verified (a round trip to ZooKeeper) right before each
world-changing call: every fence, force-down, evacuation, reset and enable.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
from collections.abc import Mapping

from instanceha.clock import SYSTEM, Clock
from instanceha.compute import calls as api_calls
from instanceha.compute.calls import ApiCalls
from instanceha.engine.model import HostView, Phase
from instanceha.engine.recovery import HostFacts, Stage, next_stage

from .executor import Verify
from .jobs import HostSlot, Jobs
from .journal import IncidentState
from .nova_view import NovaView
from .placement import Placement
from .read_ahead import MAX_AGE as READ_AHEAD_MAX_AGE
from .read_ahead import ReadAhead
from .stages import hold as hold_stage
from .stages import pipeline
from .stages import recover as recover_stage
from .stages import reenable as reenable_stage
from .stages.context import (  # noqa: F401 - the actuator's public names, kept here
    ActuatorSettings,
    Attestations,
    FailureHistory,
    Guarded,
    StageContext,
)
from .stages.plan import read_plan
from .stages.report import Reporter

LOG = logging.getLogger(__name__)

__all__ = ["READ_AHEAD_MAX_AGE", "ActuatorSettings", "Attestations", "FailureHistory",
           "Guarded", "HostSlot", "RecoveryActuator"]

QUIET = (Stage.IDLE, Stage.LEAVE_ALONE)


class RecoveryActuator:
    def __init__(self, settings: ActuatorSettings, fencer, nova, evacuator_factory,
                 notifier=None, events=None, failures=None, attestations=None, metrics=None,
                 journal=None, clock: Clock = SYSTEM, nova_events=None,
                 calls: ApiCalls | None = None) -> None:
        """``nova_events``: a ``NovaEventFeed`` (Nova's notifications), listened to
        while leading. ``calls``: the ``ApiCalls`` the Nova client reports to
        (each host's recovery counts its own)."""
        self.settings = settings
        self.nova_events = nova_events
        self.nova_view = NovaView(nova, settings.nova_refresh, clock)
        self.read_ahead = ReadAhead(settings.workers, clock)
        self.hosts: dict[str, HostSlot] = {}
        self._active: set[str] = set()
        """Hosts decided again every tick: a marker of ours, a stage under way."""
        self._views: Mapping[str, HostView] | None = None
        """The views of the last tick acted on; None: decide every host next tick."""
        self._decided = 0
        self._inventory: tuple | None = None
        """The fencing inventory file as the last tick saw it."""
        self.ctx = StageContext(
            settings=settings, fencer=fencer, nova=nova, evacuator_factory=evacuator_factory,
            placement=Placement(settings.target, nova, self._phases),
            report=Reporter(notifier, events, journal, metrics), failures=failures,
            attestations=attestations, phases=self._phases, clock=clock,
            calls=calls if calls is not None else ApiCalls(clock))
        self.jobs = Jobs(settings, clock, self.ctx.calls, self.nova_view.invalidate)

    # what the stages work with, as the edge wires it (cmd/controller.py sets metrics later)
    nova = property(lambda self: self.ctx.nova)
    fencer = property(lambda self: self.ctx.fencer)
    calls = property(lambda self: self.ctx.calls)
    clock = property(lambda self: self.ctx.clock)
    report = property(lambda self: self.ctx.report)
    notifier = property(lambda self: self.report.notifier,
                        lambda self, v: setattr(self.report, "notifier", v))
    events = property(lambda self: self.report.events,
                      lambda self, v: setattr(self.report, "events", v))
    journal = property(lambda self: self.report.journal,
                       lambda self, v: setattr(self.report, "journal", v))
    metrics = property(lambda self: self.report.metrics,
                       lambda self, v: setattr(self.report, "metrics", v))

    # -- what the leader's status shows ---------------------------------------
    @property
    def revision(self) -> int:
        """Grows when Nova's record of a host or a recovery decision changes
        (what ``nova_status()`` shows), so that a reader can skip a rebuild."""
        return self.nova_view.revision + self._decided

    def nova_up(self) -> Mapping[str, bool]:
        return self.nova_view.nova_up()

    def decision(self, host: str) -> tuple[Stage, str] | None:
        """The last recovery decision for ``host``: (stage, reason)."""
        slot = self.hosts.get(host)
        return slot.decision if slot is not None else None

    def running(self) -> list[str]:
        """The hosts with a step under way."""
        return sorted(h for h, slot in dict(self.hosts).items() if slot.running())

    def nova_status(self) -> dict[str, dict]:
        """Nova's view of each host and this controller's recovery decision,
        for ``instanceha status``."""
        out = {}
        for host, s in self.nova_view.services.items():
            decision = self.decision(host)
            out[host] = {"state": "up" if s.up else "down",
                         "status": "disabled" if s.disabled else "enabled",
                         "forced_down": s.forced_down,
                         "marker": s.marker.state.value if s.marker else None,
                         "recovery": decision[0].value if decision else None}
            waiting = self.calls.waiting_on(host)
            if waiting is not None:  # a recovery waiting on a slow API answer
                out[host]["waiting_on"] = waiting
        return out

    # -- each tick --------------------------------------------------------
    def idle(self) -> None:
        """Not leading (or paused): Nova's notifications are the leader's to read."""
        self._views = None  # what happened meanwhile is not known: decide every host
        if self.nova_events is not None:
            self.nova_events.stop()

    def _to_decide(self, views: Mapping[str, HostView], fence_allowed: list[str],
                   moved: set[str]) -> list[str]:
        """The hosts to decide this tick: every host on the first tick (and the
        first after an idle one); then those whose view changed (looked at only
        when the reconciler handed a new views map: it replaces the map when a
        view changes, never mutates it) or whose Nova record moved,
        the hosts the guard hands over, and the active ones. A host with no
        marker of ours, no job and a quiet decision has nothing that changes
        with time alone."""
        last, self._views = self._views, views
        if last is None:
            return list(views)
        names = moved | self._active
        names.update(fence_allowed)
        if views is not last:
            names.update(h for h, v in views.items() if last.get(h) != v)
        return [h for h in names if h in views]

    def _quiet(self, host: str, slot: HostSlot, svc, stage: Stage) -> bool:
        if stage not in QUIET or svc.disabled_reason:
            return False  # a marker of ours (or a reason an operator wrote) is looked at
        if slot.running() or host in self.read_ahead:
            return False
        # a step just ended: its host is decided again on the next read of Nova
        return slot.job_done_at is None or self.nova_view.read_after(slot.job_done_at)

    def act(self, views: Mapping[str, HostView], fence_allowed: list[str],
            verify: Verify) -> None:
        if self.nova_events is not None:
            self.nova_events.ensure()
        self.nova_view.maybe_refresh()
        if self.journal is not None:
            self.journal.term(verify.token)
        services, moved = self.nova_view.take()
        names = self._to_decide(views, fence_allowed, moved)
        self._observe(views, names)
        if not services:
            self._views = None
            return  # nothing known of Nova yet: no decision without its durable state
        now = self.clock.monotonic()
        self._retry_fences_if_inventory_changed(now)
        self.read_ahead.keep_only(lambda h: h in views and h in services)
        self._active.intersection_update(views)
        try:
            for host in sorted(names):
                self._decide(host, views[host], services.get(host), fence_allowed, verify, now)
        except BaseException:
            self._views = None  # a host not reached this tick is not left undecided
            raise

    def _decide(self, host: str, view: HostView, svc, fence_allowed: list[str],
                verify: Verify, now: float) -> None:
        if svc is None:
            self._active.discard(host)
            return
        slot = self.hosts.setdefault(host, HostSlot())
        # forced down, Nova's state says "down" whatever runs: then the agent's
        # report (HEALTHY includes "nova-compute running") is the evidence
        nova_up = view.phase is Phase.HEALTHY if svc.forced_down else svc.up
        facts = HostFacts(phase=view.phase, disabled=svc.disabled, marker=svc.marker,
                          nova_up=nova_up, recent_failures=self._recent_failures(host))
        decision = next_stage(facts, self.settings.policy)
        stage = decision.stage
        if slot.decision is None or slot.decision[0] is not stage:
            LOG.info("host=%s recovery=%s reason=%s", host, stage.value, decision.reason)
            if not slot.running():  # a job under way is already doing it (fence -> recover)
                self._journal_decision(host, slot, view, decision)
        if slot.decision != (stage, decision.reason):
            self._decided += 1
        slot.decision = (stage, decision.reason)
        if self._quiet(host, slot, svc, stage):
            self._active.discard(host)
        else:
            self._active.add(host)
        if stage is not Stage.FENCE:
            self.read_ahead.drop(host)
        if stage in QUIET:
            return
        if stage is Stage.FENCE and host not in fence_allowed:
            self._held(host, slot, view)
            return  # the guard, its wait or the per-tick cap holds it
        if slot.running() or now < slot.next_try:
            return
        if not self.nova_view.read_after(slot.job_done_at):
            return  # decide again only on a view of Nova read after the last step
        if self.settings.dry_run:
            self._dry_run(host, slot, view, stage, decision.reason, verify, now)
            return
        self.jobs.start(host, slot, stage, functools.partial(self._dispatch, host, slot, stage,
                                                             view, svc, verify))

    def _retry_fences_if_inventory_changed(self, now: float) -> None:
        """A fence that failed is tried again as soon as the fencing inventory
        file changes (a fixed password or address), not at its next back-off
        step: every minute of waiting is an outage for the host's servers."""
        stamp = self.fencer.inventory_stamp() if self.fencer is not None else None
        seen, self._inventory = self._inventory, stamp
        if seen is None or stamp is None or stamp == seen:
            return
        wall = self.clock.wall()
        for host, slot in list(self.hosts.items()):
            if slot.failed_stage is not Stage.FENCE or slot.next_try <= now:
                continue
            due = slot.next_try - now
            slot.next_try = now
            LOG.warning("host=%s the fencing inventory changed: fence retried now (its "
                        "back-off had it in %.0f s)", host, due)
            self.report.record(host, "inventory_changed", "the fencing inventory file "
                               f"changed: the fence is tried again now, not in {due:.0f} s",
                               retry_was_due_at=round(wall + due, 3))

    def _held(self, host: str, slot: HostSlot, view: HostView) -> None:
        """A FAILED host not handed to fencing yet: its plan read ahead, and
        the hold said once per failure."""
        if not self.settings.dry_run:
            self.read_ahead.start(host, view.since, lambda: self._read_plan(host))
        if slot.held_since != view.since:
            slot.held_since = view.since
            self.report.record(host, "held", "not handed to fencing yet: the mass-failure "
                               "guard holds every fence, the per-tick cap was reached, or "
                               "the host failed moments ago (the guard first waits to see "
                               "whether others fail with it)")

    def _read_plan(self, host: str) -> concurrent.futures.Future:
        self.calls.restart(host)  # the incident's requests counted from its first read
        with self.calls.scope(host):
            return api_calls.submit(self.jobs.reads, read_plan, self.nova, host,
                                    self.settings.default_recovery)

    def _dry_run(self, host: str, slot: HostSlot, view: HostView, stage: Stage, reason: str,
                 verify: Verify, now: float) -> None:
        LOG.warning("DRY-RUN host=%s would run recovery stage %s: %s", host, stage.value,
                    reason)
        slot.next_try = now + self.settings.retry_backoff_max
        if slot.dry_said == (stage, view.since):
            return
        slot.dry_said = (stage, view.since)
        self.report.record(host, "dry_run", f"DRY-RUN: would run {stage.value}: {reason}")
        if stage is Stage.FENCE:
            incident = self.report.incident(host, verify.token)
            self.report.emit("host_failed", host=host, reason=view.reason,
                             incident_id=incident, dry_run=True)

    # -- the steps ------------------------------------------------------------
    def _dispatch(self, host: str, slot: HostSlot, stage: Stage, view: HostView, svc,
                  verify: Verify) -> None:
        ctx = self.ctx
        if stage is Stage.FENCE:
            then = pipeline.fence_then_recover(ctx, self.jobs.reads, host, view, svc, verify,
                                               plan=self.read_ahead.take(host, view.since))
            if then is not None:  # the recovery goes on without holding a fence worker
                self.jobs.hand_over(host, slot, then)
        elif stage is Stage.RECOVER:
            recover_stage.run(ctx, host, svc, verify)
        elif stage is Stage.REENABLE:
            wait, slot.cleanup_seen = reenable_stage.run(ctx, host, svc, verify,
                                                         slot.cleanup_seen)
            if wait is not None:
                slot.next_try = self.clock.monotonic() + wait
        elif stage is Stage.HOLD:
            reason = slot.decision[1] if slot.decision else "held"
            hold_stage.run(ctx, host, svc, verify, reason)

    def wait(self, timeout: float | None = None) -> None:
        """Until every step under way (and the recovery a fence hands over) and
        every plan read ahead has ended; TimeoutError after ``timeout`` s."""
        self.jobs.wait(list(self.hosts.values()), self.read_ahead.plans(), timeout)

    # -- the incident journal -----------------------------------------------
    def _observe(self, views: Mapping[str, HostView], names) -> None:
        """Keep each host's last phase changes (of ``names``, the hosts whose view
        may have changed): the signals an incident starts with."""
        now = self.clock.wall()
        for host in names:
            view = views[host]
            seen = self.hosts.setdefault(host, HostSlot()).signals
            if seen and seen[-1]["phase"] == view.phase.value and \
                    seen[-1]["since"] == view.since:
                continue
            seen.append({"at": now, "since": view.since, "phase": view.phase.value,
                         "rule": view.rule, "reason": view.reason})

    def _journal_decision(self, host: str, slot: HostSlot, view: HostView, decision) -> None:
        if self.journal is None:
            return
        text = f"decided {decision.stage.value}: {decision.reason}"
        if decision.stage is Stage.FENCE:
            signals = [{k: v for k, v in s.items() if k != "since"} for s in slot.signals]
            self.journal.record(host, "decision", text, new_failure=True, signals=signals,
                                phase=view.phase.value)
        elif decision.stage is Stage.IDLE and view.phase in (Phase.HEALTHY, Phase.DEGRADED):
            # back before any fence: that incident is over
            self.journal.record(host, "decision", text, phase=view.phase.value,
                                close_if=frozenset({IncidentState.DETECTED}))
        else:
            self.journal.record(host, "decision", text, phase=view.phase.value)

    def _recent_failures(self, host: str) -> int:
        if self.ctx.failures is None:
            return 0
        return self.ctx.failures.count(host, self.settings.policy.flap_window)

    def _phases(self) -> dict[str, Phase]:
        """The detector's last phase of each host (spares must be HEALTHY)."""
        return {h: Phase(slot.signals[-1]["phase"]) for h, slot in dict(self.hosts).items()
                if slot.signals}

    def close(self) -> None:
        if self.nova_events is not None:
            self.nova_events.close()
        self.jobs.close()
        self.nova_view.close()
        if self.journal is not None:
            self.journal.close()
