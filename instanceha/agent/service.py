"""The agent's main loop: join, publish local health, prove it lives.

Level-triggered like the controller: every iteration checks what is true now
(connected? joined in this session? health changed?) and does the next step.
Nothing is remembered that the coordinator could contradict: after a session
expiry the membership is simply found missing and re-created.

The loop writes only when something changes (a join, local health); its
session is its liveness, and the loop watchdog (``instanceha.agent.watchdog``)
reports a stalled loop and ends the session when the stall goes on.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Mapping

from instanceha import exceptions
from instanceha.agent import health
from instanceha.agent.session_file import Saved, SessionFile
from instanceha.agent.watchdog import LoopWatchdog
from instanceha.backoff import Backoff
from instanceha.clock import SYSTEM, Clock
from instanceha.coordination import ConnectionState, Coordinator, SessionCredentials
from instanceha.version import __version__

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class AgentSettings:
    host: str
    heartbeat_interval: float = 0.5
    """The main loop's interval: the granularity of its loop watchdog."""
    health_check_interval: float = 2.0
    reconnect_max_delay: float = 5.0
    stall_report_after: float = 1.5
    """[detection] heartbeat_stale_after: the watchdog reports a stall past it."""
    hung_after: float = 2.0
    """[detection] hung_after: the watchdog ends the session one interval past it."""


class LocalHealth:
    """The watched services and the guest monitor's state: checked every
    ``interval``, published as the member's capabilities when they change."""

    def __init__(self, probe: Callable[[], Mapping[str, bool]], interval: float, clock: Clock,
                 guest_monitor=None) -> None:
        self.probe = probe
        """Replaced by a reload ([agent] watched_processes)."""
        self.interval = interval
        self.clock = clock
        self.guest_monitor = guest_monitor
        self.services: Mapping[str, bool] = {}
        self._monitor_state = None
        self._monitor_started = False
        self._next = 0.0
        self.base = {
            "version": __version__,
            "started_at": clock.utcnow().isoformat(),
            "boot_id": health.boot_id(),
            "pid": os.getpid(),
        }

    def capabilities(self) -> dict:
        caps = dict(self.base, services=dict(self.services))
        if self.guest_monitor is not None:
            caps["guest_monitor"] = self.guest_monitor.status()
        return caps

    def check_now(self) -> None:
        self._next = 0.0

    def changed(self, now: float) -> bool:
        """Check if due; True when what is published changed."""
        if now < self._next:
            return False
        self._next = now + self.interval
        services = dict(self.probe())
        monitor = self.guest_monitor.status()["state"] if self.guest_monitor else None
        if services == self.services and monitor == self._monitor_state:
            return False
        LOG.info("local services: %s", _fmt(services))
        self.services, self._monitor_state = services, monitor
        return True

    def start_monitor(self) -> None:
        """Once per process: a new session (the watchdog's) keeps the monitor."""
        if self.guest_monitor is not None and not self._monitor_started:
            self._monitor_started = True
            self.guest_monitor.start()

    def stop_monitor(self) -> None:
        if self.guest_monitor is not None:
            self.guest_monitor.stop()


class Resumption:
    """The session a previous run of this agent saved, resumed once; the
    current one kept for the next run."""

    def __init__(self, session_file: SessionFile | None) -> None:
        self.file = session_file
        self._may = session_file is not None
        self.resumed: bool | None = None
        """Whether this process resumed an earlier one's session (None: none saved)."""
        self.saved_incarnation: int | None = None

    def take(self) -> Saved | None:
        """The saved session to resume, the first time only."""
        if not self._may or self.file is None:
            return None
        self._may = False  # a session ended on purpose is never resumed
        return self.file.load()

    def retry_later(self) -> None:
        """The coordinator was away: try the saved session again next time."""
        self._may = True

    def started(self, host: str, saved: Saved | None,
                creds: SessionCredentials | None) -> None:
        if saved is None:
            LOG.info("connected to the coordinator as %s", host)
        elif creds is not None and creds.session_id == saved.credentials.session_id:
            assert self.file is not None  # it saved what was resumed
            self.resumed = True
            self.saved_incarnation = saved.incarnation
            LOG.info("resumed session 0x%x of the previous run of this agent (pid %d, saved "
                     "%.1f s ago): its membership never left", creds.session_id, saved.pid,
                     max(0.0, self.file.clock.wall() - saved.written_at))
        else:
            self.resumed = False
            LOG.warning("session 0x%x of the previous run of this agent (pid %d) could not be "
                        "resumed: it expired (that run ended longer than the session timeout "
                        "ago); new session%s: the controllers saw this host's membership "
                        "vanish", saved.credentials.session_id, saved.pid,
                        f" 0x{creds.session_id:x}" if creds else "")

    def kept(self, incarnation: int | None, joins: int) -> bool:
        """The first join of a resumed session found its membership standing."""
        return bool(self.resumed) and joins == 1 and incarnation == self.saved_incarnation

    def keep(self, credentials: Callable[[], SessionCredentials | None],
             incarnation: int | None) -> None:
        if self.file is None:
            return
        creds = credentials()
        if creds is not None:
            self.file.save(creds, incarnation)

    def forget(self) -> None:
        if self.file is not None:
            self.file.remove()  # that session is closed: never resumed


class Agent:
    def __init__(
        self,
        coordinator: Coordinator,
        settings: AgentSettings,
        probe: Callable[[], Mapping[str, bool]],
        clock: Clock = SYSTEM,
        guest_monitor=None,
        session_file: SessionFile | None = None,
    ) -> None:
        """``guest_monitor``: the instance monitor (agent.guest_monitor), started
        with the coordinator; its connection state is published with the health.
        ``session_file``: where the session is kept for a restarted process to
        resume it (agent.session_file)."""
        self.coordinator = coordinator
        self.settings = settings
        self.clock = clock
        self.health = LocalHealth(probe, settings.health_check_interval, clock, guest_monitor)
        self.resumption = Resumption(session_file)
        self.incarnation: int | None = None
        self.stopping = threading.Event()
        self.reloader: Callable[[], None] | None = None
        """Re-reads what can be re-read (SIGHUP, set by the edge); run by the loop."""
        self._reload = threading.Event()
        self._wake = threading.Event()
        self.reloads = 0
        self._started = False
        self._conflict_logged: object = None  # the member's owner last warned about
        self._retries = Backoff(settings.heartbeat_interval,
                                settings.reconnect_max_delay).start()
        self.joins = 0
        self.last_iteration: float | None = None
        self.watchdog = LoopWatchdog(
            coordinator, interval=settings.heartbeat_interval,
            report_after=settings.stall_report_after,
            end_after=settings.hung_after + settings.heartbeat_interval, clock=clock)
        self._after_stall: str | None = None  # "restart" the session, or "clear" the report

    @property
    def services(self) -> Mapping[str, bool]:
        return dict(self.health.services)

    @property
    def resumed(self) -> bool | None:
        return self.resumption.resumed

    @property
    def session_file(self) -> SessionFile | None:
        return self.resumption.file

    def is_joined(self) -> bool:
        return (self._started and self.coordinator.state is ConnectionState.CONNECTED
                and self.coordinator.joined())

    def capabilities(self) -> dict:
        return self.health.capabilities()

    # -- signals (called from a signal handler: set flags, nothing else) --------
    def request_stop(self) -> None:
        self.stopping.set()
        self._wake.set()

    def request_reload(self) -> None:
        self._reload.set()
        self._wake.set()

    def _maybe_reload(self) -> None:
        if not self._reload.is_set():
            return
        self._reload.clear()
        self.reloads += 1
        if self.reloader is not None:
            try:
                self.reloader()
            except Exception:  # a reload never ends the agent
                LOG.exception("reload failed; the running settings are kept")
        self.health.check_now()  # check (and publish) the watched services at once

    # -- one iteration ----------------------------------------------------
    def step(self) -> float:
        """Do what is due now; return how long to wait before the next step."""
        interval = self.settings.heartbeat_interval
        self._maybe_reload()
        try:
            if self._after_stall == "restart":
                self._new_session()
            if not self._started:
                self.connect()
            if self.coordinator.state is not ConnectionState.CONNECTED:
                return interval  # kazoo reconnects with its own back-off
            if self.health.changed(self.clock.monotonic()) and self.coordinator.joined():
                self.coordinator.update_capabilities(self.capabilities())
            if not self.coordinator.joined():
                self._join()
            elif self._after_stall == "clear":
                self.coordinator.report_stall(None)
            self._after_stall = None
            self.resumption.keep(self.coordinator.session_credentials, self.incarnation)
            self._retries.reset()
            return interval
        except exceptions.MemberConflict as e:
            owner = e.kwargs.get("owner")
            if self._conflict_logged != owner:
                LOG.warning("%s; this is normal right after a restart", e)
                self._conflict_logged = owner
            return interval
        except exceptions.SessionTimeoutRejected:
            raise  # configuration error: refuse to run
        except exceptions.CoordinationError as e:
            wait = self._retries.next()
            LOG.warning("%s; %s, next try in %.1f s", e, e.action.value, wait)
            return wait

    def restart_session(self) -> None:
        """The watchdog ended the session: the next step opens a new one and joins."""
        self._after_stall = "restart"

    def _new_session(self) -> None:
        with self.watchdog.session_lock:
            self._after_stall = None
            if self._started:
                self._started = False
                self.coordinator.stop()

    def connect(self) -> None:
        """Start the coordinator: the first time in this process, resume the
        session an earlier process saved, if any (its membership stays). Raises
        CoordinationError (retried by the loop) or SessionTimeoutRejected."""
        saved = self.resumption.take()
        if saved is not None:
            self.coordinator.resume_session(saved.credentials)
        try:
            self.coordinator.start()
        except exceptions.CoordinationError:
            if saved is not None:
                self.resumption.retry_later()
            raise
        self._started = True
        self.resumption.started(self.settings.host, saved,
                                self.coordinator.session_credentials())
        self.health.start_monitor()

    def _join(self) -> None:
        incarnation = self.coordinator.join(self.settings.host, self.capabilities())
        self.joins += 1
        self._conflict_logged = None
        kept = self.resumption.kept(incarnation, self.joins)
        self.incarnation = incarnation
        LOG.info("joined as %s (incarnation %s, join #%d)%s", self.settings.host, incarnation,
                 self.joins, ": the membership of the resumed session, kept" if kept else "")

    # -- the loop --------------------------------------------------------
    def run(self, on_iteration: Callable[[], None] | None = None) -> None:
        """Loop until ``stopping``; ``on_iteration`` runs after every step (the
        edge uses it for systemd's watchdog: a hung loop stops the pings)."""
        watcher = threading.Thread(target=self.watchdog.run, args=(self.stopping,),
                                   name="loop-watchdog", daemon=True)
        watcher.start()
        self.last_iteration = self.clock.monotonic()  # the loop runs (see the controller's)
        try:
            while not self.stopping.is_set():
                wait = self.step()
                self.iteration_done(wait)
                if on_iteration is not None:
                    on_iteration()
                if not self.stopping.is_set() and not self._reload.is_set():
                    self.clock.wait(wait, self._wake)
                self._wake.clear()
        finally:
            self.watchdog.suspend()

    def iteration_done(self, wait: float) -> None:
        """After each step: tell the watchdog, and act on a stall it acted on."""
        self.last_iteration = now = self.clock.monotonic()
        acted = self.watchdog.loop_done(now, wait)
        if acted is None:
            return
        stalled, ended = acted
        if ended:
            LOG.warning("main loop resumed after a %.1f s stall; the watchdog had ended the "
                        "session: joining again with a new one", stalled)
            self.restart_session()
        else:
            LOG.warning("main loop resumed after a %.1f s stall", stalled)
            self._after_stall = "clear"

    def shutdown(self, planned: bool = True, reason: str = "agent stopped (SIGTERM)") -> None:
        """Announce a planned stop so the controller does not take it for a crash."""
        self.stopping.set()
        self.watchdog.suspend()
        try:
            if self._started and self.coordinator.state is ConnectionState.CONNECTED:
                self.coordinator.leave(reason, planned=planned)
                LOG.info("left the cluster: %s", reason)
        except Exception as e:
            LOG.warning("could not announce the stop (%s): the controller will see a crash",
                        type(e).__name__)
        finally:
            self.health.stop_monitor()
            if self._started:
                self.coordinator.stop()
            self.resumption.forget()


def _fmt(services: Mapping[str, bool]) -> str:
    return ", ".join(
        f"{name}={'running' if up else 'NOT running'}" for name, up in sorted(services.items())
    )

