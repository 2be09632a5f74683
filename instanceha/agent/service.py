"""The agent's main loop: join, write the data heartbeat, publish local health.

Level-triggered like the controller: every iteration checks what is true now
(connected? joined in this session? health changed?) and does the next step.
Nothing is remembered that the coordinator could contradict: after a session
expiry the membership is simply found missing and re-created.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping

from instanceha import exceptions
from instanceha.agent import health
from instanceha.coordination import ConnectionState, Coordinator
from instanceha.version import __version__

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class AgentSettings:
    host: str
    heartbeat_interval: float = 0.5
    health_check_interval: float = 2.0
    reconnect_max_delay: float = 5.0


class Agent:
    def __init__(
        self,
        coordinator: Coordinator,
        settings: AgentSettings,
        probe: Callable[[], Mapping[str, bool]],
        clock: Callable[[], float] = time.monotonic,
        guest_monitor=None,
    ) -> None:
        """``guest_monitor``: the instance monitor (agent.guest_monitor), started
        with the coordinator; its connection state is published with the health."""
        self.coordinator = coordinator
        self.guest_monitor = guest_monitor
        self._monitor_state = None
        self.settings = settings
        self.probe = probe
        self.clock = clock
        self.stopping = threading.Event()
        self._started = False
        self._seq = 0
        self._services: Mapping[str, bool] = {}
        self._next_health = 0.0
        self._conflict_logged: str | None = None
        self._backoff = 0.0
        self.joins = 0
        self.heartbeats = 0
        self.last_iteration: float | None = None
        self.capabilities_base = {
            "version": __version__,
            "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "boot_id": health.boot_id(),
            "pid": os.getpid(),
        }

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

    # -- one iteration ----------------------------------------------------
    def step(self) -> float:
        """Do what is due now; return how long to wait before the next step."""
        interval = self.settings.heartbeat_interval
        try:
            if not self._started:
                self.coordinator.start()
                self._started = True
                LOG.info("connected to the coordinator as %s", self.settings.host)
                if self.guest_monitor is not None:
                    self.guest_monitor.start()
            if self.coordinator.state is not ConnectionState.CONNECTED:
                return interval  # kazoo reconnects with its own back-off
            now = self.clock()
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
            self._seq += 1
            self.coordinator.heartbeat(self._seq)
            self.heartbeats += 1
            self._backoff = 0.0
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
            self._backoff = min(max(self._backoff * 2, interval), self.settings.reconnect_max_delay)
            LOG.warning("%s; %s, next try in %.1f s", e, e.action.value, self._backoff)
            return self._backoff

    def _join(self) -> None:
        incarnation = self.coordinator.join(self.settings.host, self.capabilities())
        self.joins += 1
        self._conflict_logged = None
        LOG.info(
            "joined as %s (incarnation %s, join #%d)", self.settings.host, incarnation, self.joins
        )

    # -- the loop --------------------------------------------------------
    def run(self, on_iteration: Callable[[], None] | None = None) -> None:
        """Loop until ``stopping``; ``on_iteration`` runs after every step (the
        edge uses it for systemd's watchdog: a hung loop stops the pings)."""
        while not self.stopping.is_set():
            wait = self.step()
            self.last_iteration = self.clock()
            if on_iteration is not None:
                on_iteration()
            self.stopping.wait(wait)

    def shutdown(self, planned: bool = True, reason: str = "agent stopped (SIGTERM)") -> None:
        """Announce a planned stop so the controller does not take it for a crash."""
        self.stopping.set()
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


def _fmt(services: Mapping[str, bool]) -> str:
    return ", ".join(
        f"{name}={'running' if up else 'NOT running'}" for name, up in sorted(services.items())
    )

