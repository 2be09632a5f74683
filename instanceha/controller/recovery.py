"""The recovery actuator: fence, force down, evacuate or notify, re-enable.

Level-triggered. Every tick it reads what Nova says of each host (refreshed
in the background, so a slow Nova never stalls detection), asks the pure
``engine.recovery.next_stage()`` what to do, and runs that step as a job on a
bounded pool: one job per host at a time, so one slow BMC or one long
evacuation never holds up another host. Each step ends by writing the next
durable marker into Nova; a controller that dies mid-way leaves a marker the
next leader resumes from.

Leadership is re-verified (a round trip to ZooKeeper) right before each
world-changing call: every fence, force-down, evacuation, reset and enable.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import datetime
import logging
import threading
import time
from collections.abc import Callable, Mapping

from instanceha import exceptions
from instanceha.engine import marker as mk
from instanceha.engine.instance_policy import Recovery
from instanceha.engine.instance_policy import decide as decide_instance
from instanceha.engine.model import HostView, Phase
from instanceha.engine.recovery import HostFacts, RecoveryPolicy, Stage, next_stage
from instanceha.engine.reserved import TargetPolicy

from .journal import State as Incident
from .placement import Placement

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ActuatorSettings:
    name: str
    policy: RecoveryPolicy = RecoveryPolicy()
    default_recovery: Recovery = Recovery.EVACUATE
    workers: int = 8
    nova_refresh: float = 2.0
    retry_backoff: float = 2.0
    retry_backoff_max: float = 60.0
    dry_run: bool = False
    power_on_after_recovery: bool = False
    target: TargetPolicy = TargetPolicy()  # [recovery]: the scheduler, or reserved spares


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class _Guarded:
    """The Nova client, with leadership verified before every call that changes
    the world (the evacuator gets this one)."""

    MUTATING = ("force_down", "disable", "enable", "unset_forced_down", "evacuate",
                "reset_state", "stop")

    def __init__(self, nova, verify: Callable[[], int]) -> None:
        self._nova = nova
        self._verify = verify

    def __getattr__(self, name):
        attr = getattr(self._nova, name)
        if name not in self.MUTATING:
            return attr

        def guarded(*args, **kwargs):
            self._verify()
            return attr(*args, **kwargs)

        return guarded


class FailureHistory:
    """Fence times per host, kept in the coordinator's host registry (they
    outlive every controller), for flap damping. ``records()`` returns the
    latest observed registry (the reconciler's last snapshot): no extra read."""

    def __init__(self, coordinator, records: Callable[[], Mapping],
                 wall: Callable[[], float] = time.time) -> None:
        self.coordinator = coordinator
        self.records = records
        self.wall = wall

    def record(self, host: str) -> None:
        self.coordinator.record_failure(host, self.wall())

    def count(self, host: str, window: float) -> int:
        record = self.records().get(host)
        if record is None:
            return 0
        now = self.wall()
        return sum(1 for t in record.failures if now - t <= window)


class Attestations:
    """Operators' attestations that a host is powered off (``instanceha host
    confirm-down``), kept in the coordinator's control node: they outlive any
    controller; each is consumed by the fence it allowed."""

    PREFIX = "attest:"

    def __init__(self, coordinator, control: Callable[[], Mapping]) -> None:
        self.coordinator = coordinator
        self.control = control

    def get(self, host: str):
        return self.control().get(self.PREFIX + host)

    def consume(self, host: str) -> None:
        self.coordinator.update_control({self.PREFIX + host: None})


class RecoveryActuator:
    def __init__(self, settings: ActuatorSettings, fencer, nova, evacuator_factory,
                 notifier=None, events=None, failures=None, attestations=None, metrics=None,
                 journal=None, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime.datetime] = _utcnow) -> None:
        self.settings = settings
        self.fencer = fencer
        self.nova = nova
        self.evacuator_factory = evacuator_factory
        self.notifier = notifier
        self.events = events
        self.failures = failures
        self.attestations = attestations
        self.metrics = metrics
        self.journal = journal
        self.signals: dict[str, collections.deque] = {}
        self.clock = clock
        self.wall = wall
        self.pool = concurrent.futures.ThreadPoolExecutor(settings.workers, "recovery")
        self.jobs: dict[str, concurrent.futures.Future] = {}
        self.job_done_at: dict[str, float] = {}
        self._waiting: dict[str, int] = {}
        self.next_try: dict[str, float] = {}
        self.backoff: dict[str, float] = {}
        self.services: dict[str, object] = {}
        self.services_at: float | None = None
        self.services_error: str | None = None
        self._refreshing: concurrent.futures.Future | None = None
        self._lock = threading.Lock()
        self.decisions: dict[str, tuple[Stage, str]] = {}
        self._held: dict[str, float] = {}
        self._dry_said: dict[str, tuple] = {}
        self.placement = Placement(settings.target, nova, self._phases)

    # -- Nova's view, refreshed in the background -------------------------
    def _refresh(self) -> None:
        started = self.clock()
        try:
            services = {s.host: s for s in self.nova.services()}
        except exceptions.InstanceHAError as e:
            self.services_error = str(e)
            LOG.warning("nova services not refreshed: %s (%s)", e, e.action.value)
            return
        with self._lock:
            self.services = services
            # when the read *started*: a read begun before a job ended may miss its write
            self.services_at = started
            self.services_error = None

    def _maybe_refresh(self) -> None:
        now = self.clock()
        busy = self._refreshing is not None and not self._refreshing.done()
        due = self.services_at is None or now - self.services_at >= self.settings.nova_refresh
        if due and not busy:
            self._refreshing = self.pool.submit(self._refresh)

    def nova_up(self) -> dict[str, bool]:
        """Nova's liveness view of each host, for the detector's DEGRADED phase.
        A forced-down service reads "down" whatever runs: unknown, so left out."""
        with self._lock:
            return {h: s.up for h, s in self.services.items() if not s.forced_down}

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
                         "recovery": self.decisions.get(host, (None, None))[0].value
                         if host in self.decisions else None}
        return out

    # -- each tick --------------------------------------------------------
    def act(self, views: Mapping[str, HostView], fence_allowed: list[str],
            verify: Callable[[], int]) -> None:
        self._maybe_refresh()
        if self.journal is not None:
            self.journal.term(getattr(verify, "token", None))
        self._observe(views)
        with self._lock:
            services = dict(self.services)
        if not services:
            return  # nothing known of Nova yet: no decision without its durable state
        now = self.clock()
        for host, view in views.items():
            svc = services.get(host)
            if svc is None:
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
                self._journal_decision(host, view, decision)
            self.decisions[host] = (decision.stage, decision.reason)
            if decision.stage in (Stage.IDLE, Stage.LEAVE_ALONE):
                continue
            if decision.stage is Stage.FENCE and host not in fence_allowed:
                if self._held.get(host) != view.since:
                    self._held[host] = view.since
                    self._record(host, "held", "not handed to fencing: the mass-failure guard "
                                 "holds every fence, or the per-tick cap was reached")
                continue  # the guard or the per-tick cap holds it
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
                        token = getattr(verify, "token", None)
                        incident = (self.journal.current(host) if self.journal else None) \
                            or f"{host}-{token}"
                        self._emit("host_failed", host=host, reason=view.reason,
                                   incident_id=incident, dry_run=True)
                continue
            self.jobs[host] = self.pool.submit(self._run, host, view, svc, decision.stage,
                                               verify)

    def _run(self, host, view, svc, stage, verify) -> None:
        try:
            self._step(host, view, svc, stage, verify)
        finally:
            self.job_done_at[host] = self.clock()
            with self._lock:
                self.services_at = None  # read Nova's new state at once

    def _step(self, host, view, svc, stage, verify) -> None:
        try:
            {Stage.FENCE: self._fence, Stage.RECOVER: self._recover,
             Stage.REENABLE: self._reenable, Stage.HOLD: self._hold}[stage](
                host, view, svc, verify)
            self.backoff.pop(host, None)
        except exceptions.NotLeader as e:
            LOG.warning("host=%s recovery=%s stopped: %s", host, stage.value, e)
        except exceptions.InstanceHAError as e:
            wait = min(self.backoff.get(host, self.settings.retry_backoff / 2) * 2,
                       self.settings.retry_backoff_max)
            self.backoff[host] = wait
            self.next_try[host] = self.clock() + wait
            LOG.error("host=%s recovery=%s failed: %s; %s, next try in %.0f s", host,
                      stage.value, e, e.action.value, wait)
        except Exception:
            self.next_try[host] = self.clock() + self.settings.retry_backoff_max
            LOG.exception("host=%s recovery=%s crashed", host, stage.value)

    # -- the incident journal -----------------------------------------------
    def _observe(self, views: Mapping[str, HostView]) -> None:
        """Keep each host's last phase changes: the signals an incident starts with."""
        now = self.wall().timestamp()
        for host, view in views.items():
            seen = self.signals.setdefault(host, collections.deque(maxlen=8))
            if seen and seen[-1]["phase"] == view.phase.value and \
                    seen[-1]["since"] == view.since:
                continue
            seen.append({"at": now, "since": view.since, "phase": view.phase.value,
                         "rule": view.rule, "reason": view.reason})

    def _record(self, host: str, kind: str, text: str, **kwargs) -> str | None:
        if self.journal is None:
            return None
        return self.journal.record(host, kind, text, **kwargs)

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
                                close_if=frozenset({Incident.DETECTED}))
        else:
            self.journal.record(host, "decision", text, phase=view.phase.value)

    def _incident(self, host: str, token: int | None) -> str:
        incident = self.journal.current(host) if self.journal is not None else None
        return incident or f"{host}-{token}"

    # -- helpers ----------------------------------------------------------
    def _emit(self, name: str, **kwargs) -> None:
        if self.notifier is None or self.events is None:
            return
        try:
            self.notifier.emit(getattr(self.events, name)(**kwargs))
        except ValueError as e:  # a payload our schema refuses: a bug, never a stall
            LOG.error("notification %s not built: %s", name, e)

    def _attestation(self, host: str, failed_since: datetime.datetime) -> dict | None:
        """An operator's attestation that ``host`` is off, made during this failure."""
        if self.attestations is None:
            return None
        record = self.attestations.get(host)
        if not isinstance(record, dict) or not isinstance(record.get("at"), (int, float)):
            return None
        at = datetime.datetime.fromtimestamp(record["at"], datetime.timezone.utc)
        return record if at >= failed_since else None

    def _count(self, what: str, result: str, duration: float | None = None) -> None:
        if self.metrics is not None:
            getattr(self.metrics, what)(result, duration)

    def _recent_failures(self, host: str) -> int:
        if self.failures is None:
            return 0
        return self.failures.count(host, self.settings.policy.flap_window)

    def _marker(self, state, token, note="", spares=()) -> str:
        return mk.encode(state, at=self.wall(), token=token, note=note, spares=spares)

    def _phases(self) -> dict[str, Phase]:
        """The detector's last phase of each host (spares must be HEALTHY)."""
        return {h: Phase(seen[-1]["phase"]) for h, seen in dict(self.signals).items() if seen}

    # -- the stages ---------------------------------------------------------
    def _fence(self, host, view, svc, verify) -> None:
        token = verify()
        incident = f"{host}-{token}"
        if self.journal is not None:
            incident = self.journal.open(host, token, "fence_start",
                                         f"fencing: {view.reason}", state=Incident.FENCING)
        self._emit("host_failed", host=host, reason=view.reason, incident_id=incident)
        try:
            driver = self.fencer.driver_name(host)  # raises for a host not in the inventory
        except exceptions.InstanceHAError as e:
            self._record(host, "fence_error", str(e), state=Incident.FENCE_FAILED,
                         action=e.action.value)
            raise
        self._emit("fence_start", host=host, driver=driver, incident_id=incident)
        LOG.warning("host=%s fencing (token %d): %s", host, token, view.reason)
        token = verify()  # re-checked right before the power-off
        failed_since = self.wall() - datetime.timedelta(seconds=self.clock() - view.since)
        try:
            evidence = self.fencer.power_off(host)
        except exceptions.InstanceHAError as e:
            attested = self._attestation(host, failed_since)
            self._count("fence", "attested" if attested is not None else "error")
            if attested is None:
                self._emit("fence_error", host=host, driver=driver, incident_id=incident,
                           error=str(e), retrying=True)
                self._record(host, "fence_error", f"{driver}: {e}",
                             state=Incident.FENCE_FAILED, action=e.action.value,
                             driver=driver)
                raise
            # the BMC cannot confirm, an operator did: audited, and said everywhere
            who = f"{attested.get('by', '?')}: {attested.get('reason', '')}"
            LOG.error("host=%s fence NOT confirmed by the BMC (%s); power-off ATTESTED by "
                      "operator %s", host, e, who)
            self._emit("fence_end", host=host, driver="operator-attestation",
                       incident_id=incident)
            token = verify()
            _Guarded(self.nova, verify).force_down(host, self._marker(
                mk.MarkerState.FENCED, token, f"power-off attested by {who}"))
            self.attestations.consume(host)
            if self.failures is not None:
                self.failures.record(host)
            self._record(host, "forced_down", f"BMC could not confirm ({e}); power-off "
                         f"attested by operator {who}; forced down and marked fenced",
                         state=Incident.FENCED,
                         fence={"driver": "operator-attestation", "by": attested.get("by"),
                                "reason": attested.get("reason"), "bmc_error": str(e)})
            LOG.warning("host=%s forced down and marked fenced on attestation (token %d)",
                        host, token)
            return
        LOG.warning("host=%s fenced: %s read back %s after %d request(s) in %.2f s", host,
                    driver, evidence.read_back.value, evidence.attempts, evidence.duration)
        self._emit("fence_end", host=host, driver=driver, incident_id=incident,
                   duration=evidence.duration)
        self._count("fence", "ok", evidence.duration)
        self._record(host, "fence_ok", f"power {evidence.read_back.value} read back via "
                     f"{driver} after {evidence.attempts} request(s) in "
                     f"{evidence.duration:.2f} s",
                     fence={"driver": driver, "read_back": evidence.read_back.value,
                            "attempts": evidence.attempts,
                            "duration": round(evidence.duration, 3)})
        token = verify()
        note = f"power {evidence.read_back.value} read back via {driver} by {self.settings.name}"
        nova = _Guarded(self.nova, verify)
        nova.force_down(host, self._marker(mk.MarkerState.FENCED, token, note))
        if self.failures is not None:
            self.failures.record(host)
        self._record(host, "forced_down", "nova-compute forced down and marked fenced",
                     state=Incident.FENCED)
        LOG.warning("host=%s forced down and marked fenced (token %d)", host, token)

    def _recover(self, host, view, svc, verify) -> None:
        started = self.clock()
        m = svc.marker
        token = m.token if m and m.token is not None else verify()
        incident = self._incident(host, token)
        nova = _Guarded(self.nova, verify)
        if m is not None and m.state is mk.MarkerState.FENCED:
            nova.disable(host, self._marker(mk.MarkerState.RECOVERING, token))
        servers = self.nova.servers_on_host(host)
        facts = self.nova.instance_facts(servers, host) if servers else {}
        plan = {s.id: decide_instance(facts[s.id], self.settings.default_recovery)
                for s in servers}
        evacuate = [s for s in servers if plan[s.id].recovery is Recovery.EVACUATE]
        notify = [s for s in servers if plan[s.id].recovery is Recovery.NOTIFY]
        LOG.warning("host=%s recovering %d server(s): %d to evacuate, %d to notify, %d ignored",
                    host, len(servers), len(evacuate), len(notify),
                    len(servers) - len(evacuate) - len(notify))
        self._emit("recovery_start", host=host, incident_id=incident, evacuate=len(evacuate),
                   notify=len(notify))
        self._record(host, "recovery_start", f"{len(servers)} server(s): {len(evacuate)} to "
                     f"evacuate, {len(notify)} to notify, "
                     f"{len(servers) - len(evacuate) - len(notify)} ignored",
                     state=Incident.RECOVERING)
        for s in servers:
            if plan[s.id].recovery is not Recovery.EVACUATE:
                outcome = "notified" if plan[s.id].recovery is Recovery.NOTIFY else "ignored"
                self._record(host, "instance", f"{s.name}: {outcome} ({plan[s.id].reason})",
                             counts={outcome: 1}, instance_id=s.id, outcome=outcome,
                             status=s.status)
        for s in notify:
            self._emit("recovery_required", host=host, incident_id=incident, instance_id=s.id,
                       project_id=s.project_id or "unknown", policy="notify")
        for s in evacuate:
            self._emit("evacuate_start", host=host, incident_id=incident, instance_id=s.id,
                       project_id=s.project_id or "unknown", policy="evacuate")
        by_id = {s.id: s for s in evacuate}
        reported: set[str] = set()

        evacuator = self.evacuator_factory(nova)
        previous = getattr(evacuator, "on_result", None)

        def evacuated(r) -> None:  # as each one completes (the evacuator's worker threads):
            if previous is not None:  # a leader dying mid-batch has told the bus and the
                previous(r)  # journal of those done; failures may still find room on the
            if r.ok and r.server_id not in reported:  # next spare: reported at the end
                reported.add(r.server_id)
                self._evacuated(host, incident, r, by_id[r.server_id], plan[r.server_id])

        evacuator.on_result = evacuated
        results, spares = self.placement.evacuate(
            host, evacuate, evacuator, nova, m,
            lambda used: nova.disable(host, self._marker(mk.MarkerState.RECOVERING, token,
                                                         spares=used)),
            lambda kind, text, **kw: self._record(host, kind, text, **kw))
        failed = 0
        for r in results:
            server = by_id[r.server_id]
            if r.ok:
                if r.server_id not in reported:  # an evacuator without the hook
                    reported.add(r.server_id)
                    self._evacuated(host, incident, r, server, plan[r.server_id])
            else:
                self._count("evacuation", r.outcome.value, r.seconds)
                failed += 1
                LOG.error("host=%s server=%s NOT recovered (%s): %s", host, r.server_id,
                          r.outcome.value, r.error)
                self._emit("evacuate_error", host=host, incident_id=incident,
                           instance_id=r.server_id, project_id=server.project_id or "unknown",
                           policy="evacuate", error=str(r.error), retrying=False)
                self._record(host, "instance", f"{server.name}: NOT recovered "
                             f"({r.outcome.value}): {r.error}", counts={"failed": 1},
                             instance_id=r.server_id, outcome=r.outcome.value,
                             status=r.status, attempts=r.attempts,
                             seconds=round(r.seconds, 2))
        note = f"{len(results) - failed} evacuated, {failed} failed, {len(notify)} notified"
        nova.disable(host, self._marker(mk.MarkerState.RECOVERED, token, note, spares))
        self._emit("recovery_end", host=host, incident_id=incident,
                   evacuated=len(results) - failed, failed=failed, notified=len(notify),
                   duration=self.clock() - started)
        LOG.warning("host=%s recovered: %s", host, note)
        self._record(host, "recovery_end", f"recovered: {note}", state=Incident.RECOVERED,
                     seconds=round(self.clock() - started, 2))
        if self.settings.power_on_after_recovery:
            self._power_on(host, verify)

    def _evacuated(self, host, incident, r, server, decision) -> None:
        self._count("evacuation", r.outcome.value, r.seconds)
        LOG.warning("host=%s server=%s evacuated to %s (%s) in %.1f s", host, r.server_id,
                    r.dest_host, r.status, r.seconds)
        self._emit("evacuate_end", host=host, incident_id=incident, instance_id=r.server_id,
                   project_id=server.project_id or "unknown", policy="evacuate",
                   target_host=r.dest_host, duration=r.seconds)
        self._record(host, "instance", f"{server.name}: evacuated to {r.dest_host} "
                     f"({r.status}) in {r.seconds:.1f} s ({decision.reason})",
                     counts={"evacuated": 1}, instance_id=r.server_id,
                     outcome=r.outcome.value, target_host=r.dest_host, status=r.status,
                     attempts=r.attempts, seconds=round(r.seconds, 2))

    def _power_on(self, host, verify) -> None:
        """Optional: power the repaired-or-not host on again once nothing of it can
        run twice (its instances are recovered); it rejoins and is re-enabled
        only when its agent and nova-compute are back and clean."""
        verify()
        try:
            evidence = self.fencer.power_on(host)
        except exceptions.InstanceHAError as e:
            LOG.error("host=%s power on after recovery failed: %s (%s); the host stays off",
                      host, e, e.action.value)
            self._record(host, "power_on", f"power on after recovery failed: {e}",
                         action=e.action.value)
            return
        self._record(host, "power_on", f"powered on after recovery: read back "
                     f"{evidence.read_back.value}")
        LOG.warning("host=%s powered on after recovery: read back %s", host,
                    evidence.read_back.value)

    def _reenable(self, host, view, svc, verify) -> None:
        pending = [m for m in self.nova.evacuations(source_host=host) if m.status == "done"]
        if pending:
            if self._waiting.get(host) != len(pending):
                LOG.info("host=%s waiting for nova-compute to clean up %d evacuated "
                         "instance(s)", host, len(pending))
            self._waiting[host] = len(pending)
            self.next_try[host] = self.clock() + self.settings.nova_refresh
            return
        self._waiting.pop(host, None)
        if svc.forced_down:
            # First only forced-down: Nova then shows the service up once nova-compute
            # really reports (a forced-down one reads down whatever runs). Enabling
            # before that leaves placement's COMPUTE_STATUS_DISABLED trait on the host
            # (nova-api syncs it at enable time only for a service it sees up) and the
            # scheduler refuses the host until the compute's next resource update.
            _Guarded(self.nova, verify).unset_forced_down(host)
            self._record(host, "unforced", "forced-down unset (still disabled): enabled "
                         "once Nova itself reports its nova-compute up")
            LOG.info("host=%s forced-down unset; enabled once Nova reports nova-compute up",
                     host)
            return
        _Guarded(self.nova, verify).enable(host, unset_forced_down=True)
        m = svc.marker
        incident = self._incident(host, m.token if m and m.token is not None else None)
        self._record(host, "restored", "back in service: nova-compute up, evacuations "
                     "cleaned up; enabled", state=Incident.CLOSED)
        self._emit("host_restored", host=host, incident_id=incident,
                   reason="repaired: nova-compute up, evacuations cleaned up")
        LOG.warning("host=%s back in service: enabled (nova-compute reported up)", host)

    def _hold(self, host, view, svc, verify) -> None:
        reason = self.decisions.get(host, (None, "held"))[1]
        m = svc.marker
        token = m.token if m and m.token is not None else None
        _Guarded(self.nova, verify).disable(host, self._marker(mk.MarkerState.HELD, token,
                                                               reason))
        LOG.error("host=%s HELD for an operator: %s", host, reason)
        self._record(host, "held", f"held for an operator: {reason}", state=Incident.HELD,
                     opens=True)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self.journal is not None:
            self.journal.close()
