"""The controller's run loop: leadership upkeep, then one tick, forever.

Every controller observes all the time (hot standby: its view is warm when it
takes over); only the leader's executor acts. A tick that starts much later
than planned (the process was frozen, or the machine stalled) acts on
nothing: the session may have expired meanwhile, and ``verify()`` is the
second line of defence.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import typing
from collections.abc import Callable

from instanceha import exceptions
from instanceha.backoff import Backoff
from instanceha.clock import SYSTEM, Clock
from instanceha.controller import status
from instanceha.controller.alerts import AlertJournal
from instanceha.controller.executor import Actuator, Executor
from instanceha.controller.provision import Provisioner
from instanceha.controller.reconciler import Reconciler, SecondSourcePort
from instanceha.coordination import ConnectionState, Coordinator, Leadership
from instanceha.engine.guard import GuardPolicy
from instanceha.engine.model import DetectionPolicy

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ControllerSettings:
    name: str
    policy: DetectionPolicy
    tick_interval: float = 0.2
    session_timeout: float = 2.0
    reconnect_max_delay: float = 5.0
    guard: GuardPolicy = dataclasses.field(default_factory=GuardPolicy)
    dry_run: bool = False

    @property
    def max_tick_gap(self) -> float:
        """A tick starting later than this after the previous one acts on nothing."""
        return max(3 * self.tick_interval, self.session_timeout / 2)


@dataclasses.dataclass
class Hooks:
    """What the reconciler and its executor are built with (``start``); the
    edge may replace a hook before then (metrics wrap ``on_hold``)."""

    on_transition: Callable | None = None
    nova_states: Callable | None = None
    on_hold: Callable | None = None
    aggregates: Callable | None = None
    second_source: SecondSourcePort | None = None


@dataclasses.dataclass(frozen=True)
class LeaderDuties:
    """What only the leader runs after its tick (each None when not built)."""

    guests: typing.Any = None
    alerts: typing.Any = None
    provisioner: Provisioner | None = None
    tampering: AlertJournal | None = None
    capacity: typing.Any = None


class _Stopping(threading.Event):
    """The service's ``stopping`` event: also wakes a loop that waits for its
    next tick (whoever sets it: a signal handler, a crashed thread)."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__()
        self._wake = wake

    def set(self) -> None:
        super().set()
        self._wake.set()


class ControllerService:
    def __init__(
        self,
        coordinator: Coordinator,
        settings: ControllerSettings,
        handler: Actuator,
        clock: Clock = SYSTEM,
        on_transition: Callable | None = None,
        nova_states: Callable | None = None,
        on_hold: Callable | None = None,
        aggregates: Callable | None = None,
        guests=None,
        second_source=None,
        alerts=None,
        provisioner: Provisioner | None = None,
        tampering: AlertJournal | None = None,
        capacity=None,
    ) -> None:
        """``aggregates``: the host aggregates provider of the mass-failure guard
        (a cache that answers at once; None: no grouping, no Nova). ``guests``:
        the guest actuator (controller.guests), run by the leader every tick.
        ``second_source``: the reconciler's second source of liveness
        (controller.host_probe). ``alerts``: journals the hosts whose agent
        alone is dead (controller.agent_alerts), run by the leader every tick.
        ``provisioner``: makes the slots of the hosts to protect (leader);
        ``tampering``: journals what the coordinator could not trust (leader)."""
        self.duties = LeaderDuties(guests, alerts, provisioner, tampering, capacity)
        """``capacity``: the failover capacity monitor (controller.capacity)."""
        self.hooks = Hooks(on_transition, nova_states, on_hold, aggregates, second_source)
        self.coordinator = coordinator
        self.settings = settings
        self.clock = clock
        self._wake = threading.Event()
        """Set when the next tick is due at once: stopping, or the coordinator
        connected again (see ``pause``)."""
        self.stopping: threading.Event = _Stopping(self._wake)
        self.leadership: Leadership | None = None
        self.handler = handler
        self.last_iteration: float | None = None
        self.reconciler: Reconciler | None = None
        self._was_leader = False
        self._last_tick: float | None = None
        self.publisher = status.StatusPublisher(coordinator)
        self.closers: list[Callable[[], object]] = []
        """What the edge closes after the loop (pools, caches, the notifier)."""

    def start(self) -> None:
        """Connect to the coordinator (retried while it is away; a session timeout
        it rejects or a tree it refuses raises) and build the reconciler. ``run``
        calls it first; a caller that drives ``step`` itself calls it once."""
        retries = Backoff(0.1, self.settings.reconnect_max_delay).start()
        while not self.stopping.is_set():
            try:
                self.coordinator.start()
                break
            except exceptions.SessionTimeoutRejected:
                raise
            except exceptions.CoordinationError as e:
                if not e.retryable:  # a tree of another layout, credentials it refuses
                    raise
                wait = retries.next()
                LOG.warning("%s; %s, next try in %.1f s", e, e.action.value, wait)
                self.clock.wait(wait, self.stopping)
        self.coordinator.add_state_listener(self._on_state)
        self.leadership = self.coordinator.leadership(self.settings.name)
        h = self.hooks
        executor = Executor(self.leadership, self.handler, self.settings.guard,
                            clock=self.clock, on_hold=h.on_hold, aggregates=h.aggregates,
                            persist=self.coordinator.update_control)
        self.reconciler = Reconciler(self.coordinator, self.settings.policy, executor,
                                     nova_states=h.nova_states, on_transition=h.on_transition,
                                     second_source=h.second_source)
        LOG.info("controller %s observing; candidate for leadership%s", self.settings.name,
                 " (DRY-RUN: acting on nothing)" if self.settings.dry_run else "")

    def _started(self) -> tuple[Leadership, Reconciler]:
        """The leadership and the reconciler ``start`` made (a step runs after it)."""
        assert self.leadership is not None and self.reconciler is not None, "not started"
        return self.leadership, self.reconciler

    def step(self) -> None:
        leadership, rec = self._started()
        now = self.clock.monotonic()
        gap = None if self._last_tick is None else now - self._last_tick
        self._last_tick = now
        leadership.ensure()
        leader = leadership.is_leader()
        if leader != self._was_leader:
            if leader:
                LOG.warning("leadership gained by %s (token %s)", self.settings.name,
                            leadership.token)
            else:
                LOG.warning("leadership lost by %s; current leader: %s", self.settings.name,
                            leadership.leader() or "unknown (not connected)")
            self._was_leader = leader
        act = True
        if gap is not None and gap > self.settings.max_tick_gap:
            LOG.warning(
                "tick started %.1f s after the previous one (> %.1f s): acting on nothing "
                "this tick", gap, self.settings.max_tick_gap)
            act = False
        rec.tick(act=act)
        d = self.duties
        if d.guests is not None and act and leadership.is_leader() \
                and rec.last_snapshot is not None:
            d.guests.tick(rec.views, rec.last_snapshot.control, rec.executor.verifier)
        if d.alerts is not None:
            if act and leadership.is_leader():
                d.alerts.tick(rec.views, leadership.token)
            else:
                d.alerts.idle()
        if d.capacity is not None:
            d.capacity.tick(leading=act and leadership.is_leader())
        if leader and act:
            snap = rec.last_snapshot
            if d.tampering is not None and snap is not None:
                d.tampering.tick(snap)
            if d.provisioner is not None and snap is not None:
                d.provisioner.tick(snap)
            self._publish(now)

    def _publish(self, now: float) -> None:
        leadership, rec = self._started()
        if rec.last_snapshot is None:
            return
        guests = self.duties.guests.report() if self.duties.guests is not None else None
        capacity = self.duties.capacity
        # what the status is built from: the views map is replaced when a view
        # changes, the members (their capabilities: services, guest monitor) are
        # replaced when one changes, the actuator's revision grows with Nova's
        # records and its decisions; nothing new and no refresh due: no walk
        # over every host
        snap = rec.last_snapshot
        inputs = (rec.views, snap.members, snap.control, rec.executor.guard_state,
                  self.handler.revision, leadership.token, guests,
                  capacity.revision if capacity is not None else None)
        if not self.publisher.due(inputs, now):
            return
        doc = status.build(self.settings.name, leadership.token, rec.views,
                           snap, rec.executor.guard_state, now,
                           self.clock.wall(), self.handler.nova_status(),
                           guard_report=rec.executor.guard_report(), guests=guests,
                           capacity=capacity.report() if capacity is not None else None)
        try:
            self.publisher.maybe_publish(doc, now, inputs)
        except exceptions.CoordinationError as e:
            LOG.debug("status not published: %s", e)

    def run(self, on_iteration: Callable[[], None] | None = None) -> None:
        self.start()
        # the loop runs from here: a first step that hangs turns /healthz 503
        # after stall_after like any later one, and one that is merely under way
        # (a first read of a large tree) is not reported as a stall
        self.last_iteration = self.clock.monotonic()
        while not self.stopping.is_set():
            started = self.clock.monotonic()
            try:
                self.step()
            except exceptions.CoordinationError as e:
                LOG.warning("tick failed: %s; %s", e, e.action.value)
            self.last_iteration = self.clock.monotonic()
            if on_iteration is not None:
                on_iteration()
            elapsed = self.clock.monotonic() - started
            self.pause(self.settings.tick_interval - elapsed)

    def pause(self, seconds: float) -> None:
        """Wait for the next tick: ``seconds``, or less when the coordinator
        connected again meanwhile (the view re-lists at the next tick, so it
        is current one refresh after the reconnection instead of up to one
        interval later) or the service is stopping."""
        if seconds > 0 and not self._wake.is_set():
            self.clock.wait(seconds, self._wake)
        self._wake.clear()

    def _on_state(self, state: ConnectionState) -> None:
        if state is ConnectionState.CONNECTED:  # kazoo's thread: must not block
            self._wake.set()

    def shutdown(self) -> None:
        self.stopping.set()
        try:
            if self.leadership is not None:
                self.leadership.resign()
        finally:
            self.coordinator.stop()
