"""The guest actuator: the leader handles the guest failures agents reported.

Agents append each guest failure they see (QEMU died, the guest crashed or
hung and fired its watchdog, shut itself down, an I/O error paused it) to the
coordinator's durable queue. Every tick the leader reads the queue (a watch:
no round trip while nothing changes) and hands each failure to a job on a
small pool, one job per instance at a time, oldest first. The job gathers the
facts (the host's phase, the server in Nova, its policy ``instanceha:guest``,
Nova's action log, the restarts already requested), asks the pure
``engine.guest.decide()`` and acts: a hard reboot or start through Nova
(leadership verified right before), an ``instanceha.instance.failed``
notification, or nothing; each failure is an incident in the journal and a
count in the metrics. Only then is the failure deleted from the queue
(leadership verified again), so a leader that dies mid-way leaves it to the
next one, which sees in Nova's action log whether the restart was already
requested.

Nova errors are retried with back-off (the failure stays queued); a failure
that must wait (a ``task_state``, a SUSPECT host) is decided again later.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping

from instanceha import exceptions
from instanceha.backoff import Backoff, Retries
from instanceha.clock import SYSTEM, Clock
from instanceha.compute import exceptions as nova_exc
from instanceha.compute.nova import NovaClient
from instanceha.engine import guest as g
from instanceha.engine.instance_policy import GuestPolicy, decide_guest
from instanceha.engine.model import Phase

from .executor import Verify
from .journal import IncidentState
from .stores import GuestEventStore

LOG = logging.getLogger(__name__)

RESTARTED_MARGIN = 2.0
"""A reboot or start Nova recorded up to this many seconds before the failure's
time still counts as "since" (Nova keeps whole seconds; clocks differ a little)."""
RECENT = 20
"""Guest incidents kept for ``instanceha status``."""


@dataclasses.dataclass(frozen=True)
class GuestActuatorSettings:
    name: str
    default_policy: GuestPolicy = GuestPolicy.IGNORE
    guest: g.GuestSettings = g.GuestSettings()
    dry_run: bool = False
    workers: int = 4
    retry_backoff: float = 1.0
    retry_backoff_max: float = 30.0

    @property
    def retry(self) -> Backoff:
        """Between two tries of a guest failure whose handling failed."""
        return Backoff(self.retry_backoff, self.retry_backoff_max)

    @property
    def recheck(self) -> float:
        """Seconds between two looks at a failure that waits (a task state Nova
        still runs): constant on purpose, the back-off's second step (2 s by
        default). The wait ends by itself, within ``guest.task_state_wait``; a
        growing period would overshoot that bound."""
        return self.retry.delay(2)


class Schedule:
    """When each queued failure is tried next, its back-off after an error,
    and since when it waits (event id -> monotonic seconds)."""

    def __init__(self, settings: GuestActuatorSettings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self._next: dict[str, float] = {}
        self._retries: dict[str, Retries] = {}
        self._first_seen: dict[str, float] = {}

    def due(self, event_id: str, now: float) -> bool:
        """May it be handled now (then it counts as seen from now on)?"""
        if now < self._next.get(event_id, 0.0):
            return False
        self._first_seen.setdefault(event_id, now)
        return True

    def waited(self, event_id: str) -> float:
        now = self.clock.monotonic()
        return now - self._first_seen.get(event_id, now)

    def retry(self, event_id: str) -> float:
        """Its handling failed: the next try after its back-off's next step."""
        if event_id not in self._retries:
            self._retries[event_id] = self.settings.retry.start()
        wait = self._retries[event_id].next()
        self._next[event_id] = self.clock.monotonic() + wait
        return wait

    def recheck(self, event_id: str) -> None:
        """It waits (a task state Nova still runs): look again in a while."""
        self._next[event_id] = self.clock.monotonic() + self.settings.recheck

    def crashed(self, event_id: str) -> None:
        self._next[event_id] = self.clock.monotonic() + self.settings.retry_backoff_max

    def succeeded(self, event_id: str) -> None:
        self._retries.pop(event_id, None)

    def forget(self, event_id: str) -> None:
        for d in (self._next, self._first_seen, self._retries):
            d.pop(event_id, None)


class GuestActuator:
    def __init__(self, coordinator: GuestEventStore, nova: NovaClient,
                 settings: GuestActuatorSettings, notifier=None,
                 events=None, journal=None, metrics=None, clock: Clock = SYSTEM,
                 pool=None) -> None:
        self.coordinator = coordinator
        self.nova = nova
        self.settings = settings
        self.notifier = notifier
        self.events = events
        self.journal = journal
        self.metrics = metrics
        self.clock = clock
        self.pool = pool or concurrent.futures.ThreadPoolExecutor(settings.workers, "guests")
        self._lock = threading.Lock()
        self.jobs: dict[str, concurrent.futures.Future] = {}  # instance -> its job
        self.schedule = Schedule(settings, clock)
        self._said: dict[str, str] = {}
        self.last: dict[str, tuple[float, str | None, float | None]] = {}
        """instance -> (time of its last handled failure, its incident, when its
        restart was requested or None)."""
        self.recent: collections.deque = collections.deque(maxlen=RECENT)
        self.pending_count = 0
        self.read_error: str | None = None

    # -- each tick (leader only) ---------------------------------------------------
    def tick(self, views: Mapping, control: Mapping[str, object], verify: Verify) -> None:
        if control.get("paused"):
            self._say_once("pause", "guest failures: paused by an operator, not acted on")
            return
        self._said.pop("pause", None)
        if self.journal is not None:
            self.journal.term(verify.token)
        try:
            pending = self.coordinator.guest_events()
            self.read_error = None
        except exceptions.CoordinationError as e:
            self.read_error = str(e)
            self._say_once("read", "guest failures not read: %s; %s", e, e.action.value)
            return
        self._said.pop("read", None)
        self.pending_count = len(pending)
        now = self.clock.monotonic()
        busy = {i for i, job in self.jobs.items() if not job.done()}
        for event_id, record in pending:
            instance = record.get("instance_id") if isinstance(record, Mapping) else None
            key = instance if isinstance(instance, str) else event_id
            if key in busy or not self.schedule.due(event_id, now):
                busy.add(key)  # later failures of this instance wait for this one
                continue
            busy.add(key)
            self.jobs[key] = self.pool.submit(self._run, event_id, record, dict(views), verify)

    def _say_once(self, key: str, message: str, *args) -> None:
        text = message % args
        if self._said.get(key) != text:
            self._said[key] = text
            LOG.warning(message, *args)

    def _run(self, event_id, record, views, verify) -> None:
        try:
            self.handle(event_id, record, views, verify)
            self.schedule.succeeded(event_id)
        except exceptions.NotLeader as e:
            LOG.warning("guest failure %s: stopped, %s", event_id, e)
        except exceptions.InstanceHAError as e:
            wait = self.schedule.retry(event_id)
            LOG.error("guest failure %s (instance %s) not handled: %s; %s, next try in %.0f s",
                      event_id, record.get("instance_id"), e, e.action.value, wait)
        except Exception:
            self.schedule.crashed(event_id)
            LOG.exception("guest failure %s: handling crashed", event_id)

    # -- one failure ------------------------------------------------------------------
    def handle(self, event_id: str, record: Mapping, views: Mapping,
               verify: Callable[[], int]) -> g.GuestOutcome:
        try:
            event = g.GuestEvent.from_record(record)
        except ValueError as e:
            LOG.error("guest failure %s dropped: %s", event_id, e)
            verify()
            self.coordinator.guest_event_delete(event_id)
            return g.GuestOutcome.IGNORED
        last = self.last.get(event.instance_id)
        if last is not None and 0 <= event.at - last[0] <= self.settings.guest.coalesce \
                and (last[2] is None or event.at < last[2]):  # after our restart: a new life
            self._record(event, "coalesced", f"also seen: {event.describe()} (within "
                         f"{self.settings.guest.coalesce:.0f} s of the failure handled)",
                         incident=last[1])
            return self._done(event_id, event, g.GuestOutcome.COALESCED, verify)
        view = views.get(event.host)
        phase = view.phase if view is not None else None
        waited = self.schedule.waited(event_id)
        settings = self.settings.guest
        if phase in (Phase.FAILED, Phase.SUSPECT):
            step = g.decide(event, self.settings.default_policy, None, phase, (), settings,
                            self.clock.wall(), waited)
            server = decision = None
        else:
            server = self._server(event.instance_id)
            decision = None
            if server is not None:
                policy_facts = self.nova.instance_facts([server], event.host)[server.id]
                decision = decide_guest(policy_facts, self.settings.default_policy)
            policy = decision.policy if decision else self.settings.default_policy
            facts = self._server_facts(server, event, policy) if server is not None else None
            restarts = self.coordinator.guest_restarts(event.instance_id) \
                if policy is GuestPolicy.RESTART and server is not None else ()
            step = g.decide(event, policy, facts, phase, restarts, settings, self.clock.wall(),
                            waited)
        if step.action is g.GuestAction.WAIT:
            if self._said.get(event_id) != step.reason:
                self._said[event_id] = step.reason
                LOG.info("guest failure of %s on %s: %s", event.instance_id, event.host,
                         step.reason)
                self._record(event, "waiting", step.reason, opens=True)
            self.schedule.recheck(event_id)
            return step.outcome
        self._said.pop(event_id, None)
        return self._act(event_id, event, server, decision, step, verify)

    def _server(self, instance_id: str):
        try:
            return self.nova.server(instance_id)
        except nova_exc.NovaNotFound:
            return None

    def _server_facts(self, server, event: g.GuestEvent, policy: GuestPolicy) -> g.ServerFacts:
        owner_stopped, since = False, None
        if policy is GuestPolicy.RESTART:
            actions = self.nova.instance_actions(server.id)
            if actions and actions[0].action == "stop" and actions[0].user_id:
                owner_stopped = True
            for a in actions:
                if a.action in ("reboot", "start") and a.start_time is not None \
                        and a.start_time.timestamp() >= event.at - RESTARTED_MARGIN:
                    since = f"{a.action} by {a.user_id or 'Nova'} at {a.start_time.isoformat()}"
                    break
        return g.ServerFacts(host=server.host, vm_state=server.vm_state,
                             task_state=server.task_state, owner_stopped=owner_stopped,
                             restarted_since=since)

    def _act(self, event_id, event, server, decision, step, verify) -> g.GuestOutcome:
        outcome, note = step.outcome, step.reason
        if self.journal is not None:
            self.journal.load()  # the incident id is known from the first entry on
        policy_text = decision.reason if decision else "policy not read"
        incident = self._record(event, "failure", f"guest failure: {event.describe()}; "
                                f"{policy_text}", opens=True, detail=dict(event.detail),
                                seen_at=event.at)
        action, restarted_at = "none", None
        if step.action in (g.GuestAction.REBOOT, g.GuestAction.START):
            action = step.action.value
            if self.settings.dry_run:
                outcome = g.GuestOutcome.DRY_RUN
                note = f"DRY-RUN: would {note}"
                LOG.warning("DRY-RUN guest failure of %s on %s: would %s", event.instance_id,
                            event.host, step.reason)
            else:
                verify()  # right before the world-changing call
                if step.action is g.GuestAction.REBOOT:
                    self.nova.reboot(event.instance_id, hard=True)
                else:
                    self.nova.start(event.instance_id)
                restarted_at = self.clock.wall()
                self.coordinator.guest_restart_record(event.instance_id, restarted_at)
                LOG.warning("guest failure of %s on %s (%s): %s requested", event.instance_id,
                            event.host, event.kind, step.reason)
        else:
            (LOG.warning if step.notify else LOG.info)(
                "guest failure of %s on %s (%s): %s", event.instance_id, event.host,
                event.kind, step.reason)
        if step.notify and server is not None and decision is not None:
            self._emit(event, server, decision.policy, action, note, incident)
        state = IncidentState.GAVE_UP if outcome is g.GuestOutcome.GAVE_UP else IncidentState.CLOSED
        self._record(event, outcome.value, note, state=state,
                     counts={outcome.value: 1}, outcome=outcome.value, action=action,
                     policy=decision.policy.value if decision else None)
        return self._done(event_id, event, outcome, verify, incident, note, restarted_at)

    def _done(self, event_id, event, outcome, verify, incident=None, note="",
              restarted_at=None) -> g.GuestOutcome:
        verify()  # a deposed leader must leave the failure to the next one
        self.coordinator.guest_event_delete(event_id)
        self.schedule.forget(event_id)
        if outcome is not g.GuestOutcome.COALESCED:
            self.last[event.instance_id] = (event.at, incident, restarted_at)
            self.recent.appendleft({"at": round(event.at, 3), "host": event.host,
                                    "instance_id": event.instance_id, "kind": event.kind,
                                    "outcome": outcome.value, "incident_id": incident,
                                    "note": note[:200]})
        if self.metrics is not None:
            self.metrics.guest(event.kind, outcome.value, max(0.0, self.clock.wall() - event.at))
        return outcome

    def _emit(self, event, server, policy, action, note, incident) -> None:
        if self.notifier is None or self.events is None:
            return
        try:
            self.notifier.emit(self.events.instance_failed(
                host=event.host, incident_id=incident or f"{event.host}-{event.instance_id[:8]}",
                instance_id=event.instance_id, project_id=server.project_id or "unknown",
                policy=policy.value if policy is not GuestPolicy.IGNORE else "notify",
                reason=event.kind, detail={k: v for k, v in event.detail.items()
                                           if v is None or isinstance(v, (str, int, float))},
                action=action, note=note, dry_run=self.settings.dry_run,
                # without an incident of its own, the failure's time tells it apart
                occurrence=None if incident else f"{event.at:.3f}"))
        except ValueError as e:  # a payload our schema refuses: a bug, never a stall
            LOG.error("notification instanceha.instance.failed not built: %s", e)

    def _record(self, event, kind, text, incident=None, **kwargs) -> str | None:
        if self.journal is None:
            return incident
        return self.journal.record(event.host, kind, text, instance=event.instance_id,
                                   incident=incident, **kwargs) or incident

    # -- for instanceha status ----------------------------------------------------------
    def report(self) -> dict:
        return {"pending": self.pending_count, "read_error": self.read_error,
                "recent": list(self.recent)}

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
