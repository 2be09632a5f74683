"""The recovery actuator: the tick and the dispatch of the recovery stages.

Level-triggered. Every tick it reads what Nova says of each host (refreshed
in the background, so a slow Nova never stalls detection), asks the pure
``engine.recovery.next_stage()`` what to do, and runs that step as a job on a
bounded pool: one job per host at a time, so one slow BMC or one long
evacuation never holds up another host. The stages themselves, one module
each, are in ``instanceha.controller.stages`` (read its docstring for the
pipeline top to bottom): a FENCE job goes on into the recovery as soon as the
force-down is acknowledged, with the reads it needs made while the fence ran.
A FAILED host the mass-failure guard still holds (its short wait for
companions, or the per-tick cap) has its plan read ahead already, read-only,
so that the fence finds it ready; a read older than ``READ_AHEAD_MAX_AGE`` is
not used (the fence reads again), and at most ``workers`` hosts are read
ahead at a time (a mass failure the guard holds does not become a burst of
server lists on Nova).
Each step ends by writing the next durable marker into Nova; a controller
that dies mid-way leaves a marker the next leader resumes from.

Leadership is re-verified (a round trip to ZooKeeper) right before each
world-changing call: every fence, force-down, evacuation, reset and enable.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import types
from collections.abc import Mapping

from instanceha import exceptions
from instanceha.backoff import Retries
from instanceha.clock import SYSTEM, Clock
from instanceha.compute import calls as api_calls
from instanceha.compute.calls import ApiCalls
from instanceha.compute.model import ComputeService
from instanceha.engine.model import HostView, Phase
from instanceha.engine.recovery import HostFacts, Stage, next_stage

from .executor import Verify
from .journal import IncidentState
from .placement import Placement
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

READ_AHEAD_MAX_AGE = 10.0
"""Seconds: a plan read ahead of the fence longer ago than this is read again."""

__all__ = ["ActuatorSettings", "Attestations", "FailureHistory", "Guarded",
           "RecoveryActuator"]


def _decided_by(svc) -> tuple | None:
    """What of Nova's record of a service a recovery decision reads (not its
    ``updated_at``, which changes with every report of a live compute)."""
    if svc is None:
        return None
    return (svc.state, svc.status, svc.forced_down, svc.disabled_reason)


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
        self.fencer = fencer
        self.nova = nova
        self.evacuator_factory = evacuator_factory
        self.report = Reporter(notifier, events, journal, metrics)
        self.failures = failures
        self.attestations = attestations
        self.signals: dict[str, collections.deque] = {}
        self.clock = clock
        self.pool = concurrent.futures.ThreadPoolExecutor(settings.workers, "recovery")
        # the reads made while a fence runs: never queued behind the jobs themselves
        self.reads = concurrent.futures.ThreadPoolExecutor(settings.workers, "recovery-read")
        # Nova's services read on a thread of its own: never queued behind the
        # jobs of hosts whose recoveries wait on a busy API
        self.refresher = concurrent.futures.ThreadPoolExecutor(1, "nova-refresh")
        self.jobs: dict[str, concurrent.futures.Future] = {}
        self.job_done_at: dict[str, float] = {}
        self._waiting: dict[str, int] = {}
        self.next_try: dict[str, float] = {}
        self.retries: dict[str, Retries] = {}
        """Hosts whose last recovery step failed: the back-off of their next try."""
        self.services: dict[str, ComputeService] = {}
        self.services_at: float | None = None
        self.services_error: str | None = None
        self._refreshing: concurrent.futures.Future | None = None
        self._lock = threading.Lock()
        # what a tick decides again (a steady cloud costs a tick nothing per host)
        self._moved: set[str] = set()
        """Hosts whose Nova record changed in a refresh not yet acted on."""
        self._nova_up: Mapping[str, bool] = types.MappingProxyType({})
        self._active: set[str] = set()
        """Hosts decided again every tick: a marker of ours, a stage under way."""
        self._views: Mapping[str, HostView] | None = None
        """The views of the last tick acted on; None: decide every host next tick."""
        self.revision = 0
        """Grows when Nova's record of a host or a recovery decision changes
        (what ``nova_status()`` shows), so that a reader can skip a rebuild."""
        self.decisions: dict[str, tuple[Stage, str]] = {}
        self._held: dict[str, float] = {}
        self._ahead: dict[str, tuple[float, float, concurrent.futures.Future]] = {}
        """Hosts held before their fence: (the failure's since, read at, the plan)."""
        self._dry_said: dict[str, tuple] = {}
        self.placement = Placement(settings.target, nova, self._phases)
        self.calls = calls if calls is not None else ApiCalls(clock)
        self.ctx = StageContext(settings=settings, fencer=fencer, nova=nova,
                                evacuator_factory=evacuator_factory, placement=self.placement,
                                report=self.report, failures=failures,
                                attestations=attestations, phases=self._phases, clock=clock,
                                calls=self.calls)

    # the reports, as the edge wires them (cmd/controller.py sets metrics later)
    notifier = property(lambda self: self.report.notifier,
                        lambda self, v: setattr(self.report, "notifier", v))
    events = property(lambda self: self.report.events,
                      lambda self, v: setattr(self.report, "events", v))
    journal = property(lambda self: self.report.journal,
                       lambda self, v: setattr(self.report, "journal", v))
    metrics = property(lambda self: self.report.metrics,
                       lambda self, v: setattr(self.report, "metrics", v))

    # -- Nova's view, refreshed in the background -------------------------
    def _refresh(self) -> None:
        started = self.clock.monotonic()
        try:
            services = {s.host: s for s in self.nova.services()}
        except exceptions.InstanceHAError as e:
            self.services_error = str(e)
            LOG.warning("nova services not refreshed: %s (%s)", e, e.action.value)
            return
        nova_up = types.MappingProxyType(
            {h: s.up for h, s in services.items() if not s.forced_down})
        old = self.services  # only this thread replaces it: compared outside the lock
        moved = {h for h in services.keys() | old.keys()
                 if _decided_by(services.get(h)) != _decided_by(old.get(h))}
        with self._lock:
            self.services = services
            self._moved |= moved
            self._nova_up = nova_up
            if moved:
                self.revision += 1
            # when the read *started*: a read begun before a job ended may miss its write
            self.services_at = started
            self.services_error = None

    def _maybe_refresh(self) -> None:
        now = self.clock.monotonic()
        busy = self._refreshing is not None and not self._refreshing.done()
        due = self.services_at is None or now - self.services_at >= self.settings.nova_refresh
        if due and not busy:
            self._refreshing = self.refresher.submit(self._refresh)

    def nova_up(self) -> Mapping[str, bool]:
        """Nova's liveness view of each host, for the detector's DEGRADED phase.
        A forced-down service reads "down" whatever runs: unknown, so left out.
        Read-only, and the same object until a refresh reads a new one."""
        with self._lock:
            return self._nova_up

    def nova_status(self) -> dict[str, dict]:
        """Nova's view of each host and this controller's recovery decision,
        for ``instanceha status``."""
        with self._lock:
            services = dict(self.services)
        out = {}
        for host, s in services.items():
            out[host] = {"state": "up" if s.up else "down",
                         "status": "disabled" if s.disabled else "enabled",
                         "forced_down": s.forced_down,
                         "marker": s.marker.state.value if s.marker else None,
                         "recovery": self.decisions[host][0].value
                         if host in self.decisions else None}
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

    def _quiet(self, host: str, svc, stage: Stage) -> bool:
        if stage not in (Stage.IDLE, Stage.LEAVE_ALONE) or svc.disabled_reason:
            return False  # a marker of ours (or a reason an operator wrote) is looked at
        job = self.jobs.get(host)
        if (job is not None and not job.done()) or host in self._ahead:
            return False
        done_at = self.job_done_at.get(host)
        # a step just ended: its host is decided again on the next read of Nova
        return done_at is None or (self.services_at is not None and self.services_at > done_at)

    def act(self, views: Mapping[str, HostView], fence_allowed: list[str],
            verify: Verify) -> None:
        if self.nova_events is not None:
            self.nova_events.ensure()
        self._maybe_refresh()
        if self.journal is not None:
            self.journal.term(verify.token)
        with self._lock:
            services = self.services  # replaced by a refresh, never mutated
            moved, self._moved = self._moved, set()
        names = self._to_decide(views, fence_allowed, moved)
        self._observe(views, names)
        if not services:
            self._views = None
            return  # nothing known of Nova yet: no decision without its durable state
        now = self.clock.monotonic()
        for gone in [h for h in self._ahead if h not in views or h not in services]:
            self._ahead.pop(gone)[2].cancel()  # never left holding a read-ahead slot
        self._active.intersection_update(views)
        try:
            self._decide(views, sorted(names), services, fence_allowed, verify, now)
        except BaseException:
            self._views = None  # a host not reached this tick is not left undecided
            raise

    def _decide(self, views: Mapping[str, HostView], names: list[str], services,
                fence_allowed: list[str], verify: Verify, now: float) -> None:
        for host in names:
            view = views[host]
            svc = services.get(host)
            if svc is None:
                self._active.discard(host)
                continue
            # forced down, Nova's state says "down" whatever runs: then the agent's
            # report (HEALTHY includes "nova-compute running") is the evidence
            nova_up = view.phase is Phase.HEALTHY if svc.forced_down else svc.up
            facts = HostFacts(phase=view.phase, disabled=svc.disabled, marker=svc.marker,
                              nova_up=nova_up, recent_failures=self._recent_failures(host))
            decision = next_stage(facts, self.settings.policy)
            if self.decisions.get(host, (None, None))[0] is not decision.stage:
                LOG.info("host=%s recovery=%s reason=%s", host, decision.stage.value,
                         decision.reason)
                running = host in self.jobs and not self.jobs[host].done()
                if not running:  # a job under way is already doing it (fence -> recover)
                    self._journal_decision(host, view, decision)
            if self.decisions.get(host) != (decision.stage, decision.reason):
                with self._lock:  # the refresher's thread adds to it too
                    self.revision += 1
            self.decisions[host] = (decision.stage, decision.reason)
            if self._quiet(host, svc, decision.stage):
                self._active.discard(host)
            else:
                self._active.add(host)
            if decision.stage is not Stage.FENCE and host in self._ahead:
                self._ahead.pop(host)[2].cancel()
            if decision.stage in (Stage.IDLE, Stage.LEAVE_ALONE):
                continue
            if decision.stage is Stage.FENCE and host not in fence_allowed:
                if not self.settings.dry_run:
                    self._read_ahead(host, view)
                if self._held.get(host) != view.since:
                    self._held[host] = view.since
                    self._record(host, "held", "not handed to fencing yet: the mass-failure "
                                 "guard holds every fence, the per-tick cap was reached, or "
                                 "the host failed moments ago (the guard first waits to see "
                                 "whether others fail with it)")
                continue  # the guard, its wait or the per-tick cap holds it
            job = self.jobs.get(host)
            if job is not None and not job.done():
                continue
            done_at = self.job_done_at.get(host)
            if done_at is not None and (self.services_at is None or self.services_at <= done_at):
                continue  # decide again only on a view of Nova read after the last step
            if now < self.next_try.get(host, 0.0):
                continue
            if self.settings.dry_run:
                LOG.warning("DRY-RUN host=%s would run recovery stage %s: %s", host,
                            decision.stage.value, decision.reason)
                self.next_try[host] = now + self.settings.retry_backoff_max
                if self._dry_said.get(host) != (decision.stage, view.since):
                    self._dry_said[host] = (decision.stage, view.since)
                    self._record(host, "dry_run", f"DRY-RUN: would run {decision.stage.value}"
                                 f": {decision.reason}")
                    if decision.stage is Stage.FENCE:
                        incident = self.report.incident(host, verify.token)
                        self.report.emit("host_failed", host=host, reason=view.reason,
                                         incident_id=incident, dry_run=True)
                continue
            self.jobs[host] = self.pool.submit(self._run, host, view, svc, decision.stage,
                                               verify)

    def _read_ahead(self, host: str, view: HostView) -> None:
        """Read the plan of a FAILED host the guard still holds (read-only): once
        per failure, and for at most ``workers`` hosts at a time."""
        known = self._ahead.get(host)
        if known is not None and known[0] == view.since:
            return
        if known is None and len(self._ahead) >= self.settings.workers:
            return
        self.calls.restart(host)  # the incident's requests counted from its first read
        with self.calls.scope(host):
            plan = api_calls.submit(self.reads, read_plan, self.nova, host,
                                    self.settings.default_recovery)
        self._ahead[host] = (view.since, self.clock.monotonic(), plan)

    def _plan_ahead(self, host: str, view: HostView) -> concurrent.futures.Future | None:
        """The plan read ahead for this failure, if young enough to use."""
        known = self._ahead.pop(host, None)
        if known is None:
            return None
        since, read_at, plan = known
        age = self.clock.monotonic() - read_at
        if since == view.since and age <= READ_AHEAD_MAX_AGE:
            LOG.info("host=%s fence uses the recovery plan read ahead %.1f s ago", host, age)
            return plan
        plan.cancel()
        LOG.info("host=%s recovery plan read ahead %.1f s ago is not used (%s): read again "
                 "beside the fence", host, age,
                 "older than %.0f s" % READ_AHEAD_MAX_AGE if since == view.since
                 else "read for an earlier failure")
        return None

    def _run(self, host, view, svc, stage, verify) -> None:
        try:
            with self.calls.scope(host):
                self._step(host, view, svc, stage, verify)
        finally:
            self.job_done_at[host] = self.clock.monotonic()
            with self._lock:
                self.services_at = None  # read Nova's new state at once

    def _step(self, host, view, svc, stage, verify) -> None:
        try:
            self._dispatch(host, view, svc, stage, verify)
            self.retries.pop(host, None)
        except exceptions.NotLeader as e:
            LOG.warning("host=%s recovery=%s stopped: %s", host, stage.value, e)
        except exceptions.InstanceHAError as e:
            self._retry_later(host, stage, e)
        except Exception:
            self.next_try[host] = self.clock.monotonic() + self.settings.retry_backoff_max
            LOG.exception("host=%s recovery=%s crashed", host, stage.value)

    def _dispatch(self, host, view, svc, stage, verify) -> None:
        ctx = self.ctx
        if stage is Stage.FENCE:
            pipeline.fence_then_recover(ctx, self.reads, host, view, svc, verify,
                                        plan=self._plan_ahead(host, view))
        elif stage is Stage.RECOVER:
            recover_stage.run(ctx, host, svc, verify)
        elif stage is Stage.REENABLE:
            wait = reenable_stage.run(ctx, host, svc, verify, self._waiting)
            if wait is not None:
                self.next_try[host] = self.clock.monotonic() + wait
        elif stage is Stage.HOLD:
            reason = self.decisions.get(host, (None, "held"))[1]
            hold_stage.run(ctx, host, svc, verify, reason)

    def _retry_later(self, host, stage, e: exceptions.InstanceHAError) -> None:
        if host not in self.retries:
            self.retries[host] = self.settings.retry.start()
        wait = self.retries[host].next()
        self.next_try[host] = self.clock.monotonic() + wait
        LOG.error("host=%s recovery=%s failed: %s; %s, next try in %.0f s", host,
                  stage.value, e, e.action.value, wait)

    # -- the incident journal -----------------------------------------------
    def _observe(self, views: Mapping[str, HostView], names) -> None:
        """Keep each host's last phase changes (of ``names``, the hosts whose view
        may have changed): the signals an incident starts with."""
        now = self.clock.wall()
        for host in names:
            view = views[host]
            seen = self.signals.setdefault(host, collections.deque(maxlen=8))
            if seen and seen[-1]["phase"] == view.phase.value and \
                    seen[-1]["since"] == view.since:
                continue
            seen.append({"at": now, "since": view.since, "phase": view.phase.value,
                         "rule": view.rule, "reason": view.reason})

    def _record(self, host: str, kind: str, text: str, **kwargs) -> str | None:
        return self.report.record(host, kind, text, **kwargs)

    def _journal_decision(self, host: str, view: HostView, decision) -> None:
        if self.journal is None:
            return
        text = f"decided {decision.stage.value}: {decision.reason}"
        if decision.stage is Stage.FENCE:
            signals = [{k: v for k, v in s.items() if k != "since"}
                       for s in self.signals.get(host, ())]
            self.journal.record(host, "decision", text, new_failure=True, signals=signals,
                                phase=view.phase.value)
        elif decision.stage is Stage.IDLE and view.phase in (Phase.HEALTHY, Phase.DEGRADED):
            # back before any fence: that incident is over
            self.journal.record(host, "decision", text, phase=view.phase.value,
                                close_if=frozenset({IncidentState.DETECTED}))
        else:
            self.journal.record(host, "decision", text, phase=view.phase.value)

    def _recent_failures(self, host: str) -> int:
        if self.failures is None:
            return 0
        return self.failures.count(host, self.settings.policy.flap_window)

    def _phases(self) -> dict[str, Phase]:
        """The detector's last phase of each host (spares must be HEALTHY)."""
        return {h: Phase(seen[-1]["phase"]) for h, seen in dict(self.signals).items() if seen}

    def close(self) -> None:
        if self.nova_events is not None:
            self.nova_events.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.reads.shutdown(wait=False, cancel_futures=True)
        self.refresher.shutdown(wait=False, cancel_futures=True)
        if self.journal is not None:
            self.journal.close()
