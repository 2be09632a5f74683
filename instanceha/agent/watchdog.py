"""The agent's loop watchdog: a stalled main loop ends the agent's session.

The agent proves it lives by its ZooKeeper
session alone, and kazoo's own thread keeps that session alive even while
the agent's main loop is stuck (a hung probe, a wedged library call). The
watchdog, on a thread of its own, measures how late the main loop is:

* stalled for longer than ``report_after`` (``[detection]
  heartbeat_stale_after``): it writes the stall into the membership
  (``stalled_for``), once; the controller counts on from there on its own
  clock (SUSPECT, then FAILED by the hung rule at ``hung_after``);
* stalled for longer than ``end_after`` (``hung_after`` plus one loop
  interval): it ends the session, so the membership goes too, even for a
  controller that missed the report;
* when the loop runs again it clears the report, or, if the session was
  ended, the agent opens a new one and joins again (a new incarnation).

A frozen process (SIGSTOP) or host stops kazoo's pings as well: ZooKeeper
expires its session after the session timeout without the watchdog.

The stall is measured like the age of a data heartbeat: from the end of the
loop's last step, allowing the wait the loop had planned (a back-off while
the coordinator is unreachable is not a stall).
"""

from __future__ import annotations

import logging
import threading

from instanceha.clock import Clock
from instanceha.coordination import Coordinator

LOG = logging.getLogger(__name__)


class LoopWatchdog:
    def __init__(self, coordinator: Coordinator, interval: float, report_after: float,
                 end_after: float, clock: Clock) -> None:
        if not 0 < report_after < end_after:
            raise ValueError("the watchdog reports a stall before it ends the session")
        self.coordinator = coordinator
        self.interval = interval
        self.report_after = report_after
        self.end_after = end_after
        self.clock = clock
        self.poll = min(0.1, interval / 5)
        self._lock = threading.Lock()
        self.session_lock = threading.Lock()
        """Held while the watchdog ends the session: the loop takes it before it
        opens a new one."""
        self._due: float | None = None
        self._reported = False
        self._ended = False
        self.stalls = 0
        self.sessions_ended = 0

    def stall(self, now: float) -> float:
        """How long the loop has been stalled (0 while it keeps its schedule)."""
        with self._lock:
            due = self._due
        return 0.0 if due is None else max(0.0, now - due + self.interval)

    def loop_done(self, now: float, wait: float) -> tuple[float, bool] | None:
        """The loop finished a step and will start the next in ``wait`` s.
        Returns (stalled for, session ended) when it comes back from a stall
        the watchdog acted on, else None."""
        with self._lock:
            stalled = 0.0 if self._due is None else max(0.0, now - self._due + self.interval)
            acted = (stalled, self._ended) if self._reported or self._ended else None
            self._due = now + max(wait, self.interval)
            self._reported = self._ended = False
        return acted

    def suspend(self) -> None:
        """Not watching (before the first step, while stopping)."""
        with self._lock:
            self._due = None

    def check(self, now: float) -> str | None:
        """One look; returns what it did ("reported", "ended") or None."""
        with self._lock:
            if self._due is None or self._ended:
                return None
            stalled = max(0.0, now - self._due + self.interval)
            if stalled > self.end_after:
                self._ended = True
                action = "ended"
            elif stalled > self.report_after and not self._reported:
                self._reported = True
                action = "reported"
            else:
                return None
        if action == "reported":
            self.stalls += 1
            LOG.error("main loop stalled for %.1f s (> %.1f s): reported to the controllers, "
                      "which fail this host if it goes on", stalled, self.report_after)
            self.coordinator.report_stall(stalled)
        else:
            self.sessions_ended += 1
            LOG.error("main loop stalled for %.1f s (> %.1f s): ending the coordinator "
                      "session, this host is failed", stalled, self.end_after)
            with self.session_lock:
                self.coordinator.end_session()
        return action

    def run(self, stopping: threading.Event) -> None:
        while not self.clock.wait(self.poll, stopping):
            try:
                self.check(self.clock.monotonic())
            except Exception:  # the watchdog must outlive any error
                LOG.exception("loop watchdog failed")
