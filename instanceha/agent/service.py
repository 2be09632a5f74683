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
from instanceha.agent.session_file import SessionFile
from instanceha.agent.watchdog import LoopWatchdog
from instanceha.backoff import Backoff
from instanceha.clock import SYSTEM, Clock
from instanceha.coordination import ConnectionState, Coordinator
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
        self.session_file = session_file
        self._may_resume = session_file is not None
        self.resumed: bool | None = None
        """Whether this process resumed an earlier one's session (None: none saved)."""
        self._saved_incarnation: int | None = None
        self.incarnation: int | None = None
        self.guest_monitor = guest_monitor
        self._monitor_state = None
        self._monitor_started = False
        self.settings = settings
        self.probe = probe
        self.clock = clock
        self.stopping = threading.Event()
        self.reloader: Callable[[], None] | None = None
        """Re-reads what can be re-read (SIGHUP, set by the edge); run by the loop."""
        self._reload = threading.Event()
        self._wake = threading.Event()
        self.reloads = 0
        self._started = False
        self._services: Mapping[str, bool] = {}
        self._next_health = 0.0
        self._conflict_logged: object = None  # the member's owner last warned about
        self._retries = Backoff(settings.heartbeat_interval,
                                settings.reconnect_max_delay).start()
        self.joins = 0
        self.last_iteration: float | None = None
        self.capabilities_base = {
            "version": __version__,
            "started_at": clock.utcnow().isoformat(),
            "boot_id": health.boot_id(),
            "pid": os.getpid(),
        }
        self.watchdog = LoopWatchdog(
            coordinator, interval=settings.heartbeat_interval,
            report_after=settings.stall_report_after,
            end_after=settings.hung_after + settings.heartbeat_interval, clock=clock)
        self._restart_session = False
        self._clear_stall = False

    @property
    def services(self) -> Mapping[str, bool]:
        return dict(self._services)

    def is_joined(self) -> bool:
        return (self._started and self.coordinator.state is ConnectionState.CONNECTED
                and self.coordinator.joined())

    def capabilities(self) -> dict:
        caps = dict(self.capabilities_base, services=dict(self._services))
        if self.guest_monitor is not None:
            caps["guest_monitor"] = self.guest_monitor.status()
        return caps

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
        self._next_health = 0.0  # check (and publish) the watched services at once

    # -- one iteration ----------------------------------------------------
    def step(self) -> float:
        """Do what is due now; return how long to wait before the next step."""
        interval = self.settings.heartbeat_interval
        self._maybe_reload()
        try:
            if self._restart_session:
                self._new_session()
            if not self._started:
                self.connect()
            if self.coordinator.state is not ConnectionState.CONNECTED:
                return interval  # kazoo reconnects with its own back-off
            now = self.clock.monotonic()
            if now >= self._next_health:
                self._next_health = now + self.settings.health_check_interval
                services = dict(self.probe())
                monitor = self.guest_monitor.status()["state"] if self.guest_monitor else None
                if services != self._services or monitor != self._monitor_state:
                    LOG.info("local services: %s", _fmt(services))
                    self._services, self._monitor_state = services, monitor
                    if self.coordinator.joined():
                        self.coordinator.update_capabilities(self.capabilities())
            if not self.coordinator.joined():
                self._join()
            elif self._clear_stall:
                self.coordinator.report_stall(None)
            self._clear_stall = False
            self._keep_session()
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

    def _new_session(self) -> None:
        """The watchdog ended the session: open a new one (and join below)."""
        assert self.watchdog is not None
        with self.watchdog.session_lock:
            self._restart_session = False
            if self._started:
                self._started = False
                self.coordinator.stop()

    def connect(self) -> None:
        """Start the coordinator: the first time in this process, resume the
        session an earlier process saved, if any (its membership stays). Raises
        CoordinationError (retried by the loop) or SessionTimeoutRejected."""
        saved = None
        if self._may_resume:
            self._may_resume = False  # a session ended on purpose is never resumed
            assert self.session_file is not None  # _may_resume only with a session file
            saved = self.session_file.load()
            if saved is not None:
                self.coordinator.resume_session(saved.credentials)
        try:
            self.coordinator.start()
        except exceptions.CoordinationError:
            if saved is not None:
                self._may_resume = True  # the coordinator was away: try again next time
            raise
        self._started = True
        creds = self.coordinator.session_credentials()
        if saved is None:
            LOG.info("connected to the coordinator as %s", self.settings.host)
        elif creds is not None and creds.session_id == saved.credentials.session_id:
            assert self.session_file is not None  # it saved what was resumed
            self.resumed = True
            self._saved_incarnation = saved.incarnation
            LOG.info("resumed session 0x%x of the previous run of this agent (pid %d, saved "
                     "%.1f s ago): its membership never left", creds.session_id, saved.pid,
                     max(0.0, self.session_file.clock.wall() - saved.written_at))
        else:
            self.resumed = False
            LOG.warning("session 0x%x of the previous run of this agent (pid %d) could not be "
                        "resumed: it expired (that run ended longer than the session timeout "
                        "ago); new session%s: the controllers saw this host's membership "
                        "vanish", saved.credentials.session_id, saved.pid,
                        f" 0x{creds.session_id:x}" if creds else "")
        if self.guest_monitor is not None and not self._monitor_started:
            self._monitor_started = True  # once: a new session (watchdog) keeps it
            self.guest_monitor.start()

    def _keep_session(self) -> None:
        if self.session_file is None:
            return
        creds = self.coordinator.session_credentials()
        if creds is not None:
            self.session_file.save(creds, self.incarnation)

    def _join(self) -> None:
        incarnation = self.coordinator.join(self.settings.host, self.capabilities())
        self.joins += 1
        self._conflict_logged = None
        kept = self.resumed and self.joins == 1 and incarnation == self._saved_incarnation
        self.incarnation = incarnation
        LOG.info("joined as %s (incarnation %s, join #%d)%s", self.settings.host, incarnation,
                 self.joins, ": the membership of the resumed session, kept" if kept else "")

    # -- the loop --------------------------------------------------------
    def run(self, on_iteration: Callable[[], None] | None = None) -> None:
        """Loop until ``stopping``; ``on_iteration`` runs after every step (the
        edge uses it for systemd's watchdog: a hung loop stops the pings)."""
        watcher = None
        if self.watchdog is not None:
            watcher = threading.Thread(target=self.watchdog.run, args=(self.stopping,),
                                       name="loop-watchdog", daemon=True)
            watcher.start()
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
            if self.watchdog is not None:
                self.watchdog.suspend()

    def iteration_done(self, wait: float) -> None:
        """After each step: tell the watchdog, and act on a stall it acted on."""
        self.last_iteration = now = self.clock.monotonic()
        if self.watchdog is None:
            return
        acted = self.watchdog.loop_done(now, wait)
        if acted is None:
            return
        stalled, ended = acted
        if ended:
            LOG.warning("main loop resumed after a %.1f s stall; the watchdog had ended the "
                        "session: joining again with a new one", stalled)
            self._restart_session = True
        else:
            LOG.warning("main loop resumed after a %.1f s stall", stalled)
            self._clear_stall = True

    def shutdown(self, planned: bool = True, reason: str = "agent stopped (SIGTERM)") -> None:
        """Announce a planned stop so the controller does not take it for a crash."""
        self.stopping.set()
        if self.watchdog is not None:
            self.watchdog.suspend()
        try:
            if self._started and self.coordinator.state is ConnectionState.CONNECTED:
                self.coordinator.leave(reason, planned=planned)
                LOG.info("left the cluster: %s", reason)
        except Exception as e:
            LOG.warning("could not announce the stop (%s): the controller will see a crash",
                        type(e).__name__)
        finally:
            if self.guest_monitor is not None:
                self.guest_monitor.stop()
            if self._started:
                self.coordinator.stop()
            if self.session_file is not None:
                self.session_file.remove()  # that session is closed: never resumed


def _fmt(services: Mapping[str, bool]) -> str:
    return ", ".join(
        f"{name}={'running' if up else 'NOT running'}" for name, up in sorted(services.items())
    )

