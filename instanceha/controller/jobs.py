"""Where the recovery actuator's steps run, and what it keeps of each host.

One job per host at a time. Fences first: a fence never waits for a
recovery. Fences run on workers of their own, as many as the mass-failure
guard lets hosts through at once (``fence_workers``), so every host it
hands over is fenced at once even while every recovery worker waits on a
slow Nova; a fence hands its host's recovery over to the recovery workers
(``workers``) as soon as the force-down is acknowledged. The reads made
while a fence runs (the plan, the spare) have workers of their own too.

A step that fails with an error the caller may retry is tried again after
a back-off that doubles per failure (``retry_backoff`` up to
``retry_backoff_max``); ``retry_now`` cuts that wait short when what made
it fail was fixed (the fencing inventory file changed).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable

from instanceha import exceptions
from instanceha.backoff import Retries
from instanceha.clock import Clock
from instanceha.compute.calls import ApiCalls
from instanceha.engine.recovery import Stage

from .stages.context import ActuatorSettings

LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class HostSlot:
    """What the actuator keeps of one host between ticks."""

    signals: collections.deque = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=8))
    """The host's last phase changes: the signals an incident starts with."""
    decision: tuple[Stage, str] | None = None
    job: concurrent.futures.Future | None = None
    """The step under way; a fence replaces it with its recovery before it ends."""
    job_done_at: float | None = None
    next_try: float = 0.0
    retries: Retries | None = None
    """The back-off of the next try, while the host's steps fail."""
    failed_stage: Stage | None = None
    """The stage whose failure the back-off waits out (None: the last step went well)."""
    held_since: float | None = None
    """The failure the guard's hold of it was journaled for."""
    dry_said: tuple | None = None
    cleanup_seen: int | None = None
    """Re-enable: the evacuated instances last seen not cleaned up."""

    def running(self) -> bool:
        job = self.job
        while job is not None and job.done():
            after = self.job  # a fence hands over to its recovery before it ends
            if after is job:
                return False
            job = after
        return job is not None


class Jobs:
    def __init__(self, settings: ActuatorSettings, clock: Clock, calls: ApiCalls,
                 on_done: Callable[[], None]) -> None:
        """``on_done``: called after every step (a step wrote to Nova: read it again)."""
        self.settings = settings
        self.clock = clock
        self.calls = calls
        self.on_done = on_done
        self.fences = concurrent.futures.ThreadPoolExecutor(settings.fence_workers, "fence")
        self.recoveries = concurrent.futures.ThreadPoolExecutor(settings.workers, "recovery")
        self.reads = concurrent.futures.ThreadPoolExecutor(settings.workers, "recovery-read")

    def start(self, host: str, slot: HostSlot, stage: Stage, step: Callable[[], None]) -> None:
        """Run ``step`` as the host's job: on a fence worker for a FENCE."""
        pool = self.fences if stage is Stage.FENCE else self.recoveries
        slot.job = pool.submit(self._run, host, slot, stage, step)

    def hand_over(self, host: str, slot: HostSlot, step: Callable[[], None]) -> None:
        """From a fence job: its host's recovery goes on on a recovery worker
        (the host's job from now on), freeing the fence worker."""
        slot.job = self.recoveries.submit(self._run, host, slot, Stage.RECOVER, step)

    def _run(self, host: str, slot: HostSlot, stage: Stage, step: Callable[[], None]) -> None:
        try:
            with self.calls.scope(host):
                self._step(host, slot, stage, step)
        finally:
            slot.job_done_at = self.clock.monotonic()
            self.on_done()

    def _step(self, host: str, slot: HostSlot, stage: Stage, step: Callable[[], None]) -> None:
        try:
            step()
            slot.retries = slot.failed_stage = None
        except exceptions.NotLeader as e:
            LOG.warning("host=%s recovery=%s stopped: %s", host, stage.value, e)
        except exceptions.InstanceHAError as e:
            self._retry_later(host, slot, stage, e)
        except Exception:
            slot.next_try = self.clock.monotonic() + self.settings.retry_backoff_max
            slot.failed_stage = stage
            LOG.exception("host=%s recovery=%s crashed", host, stage.value)

    def _retry_later(self, host: str, slot: HostSlot, stage: Stage,
                     e: exceptions.InstanceHAError) -> None:
        if slot.retries is None:
            slot.retries = self.settings.retry.start()
        wait = slot.retries.next()
        slot.failed_stage = stage
        slot.next_try = self.clock.monotonic() + wait
        LOG.error("host=%s recovery=%s failed: %s; %s, next try in %.0f s", host,
                  stage.value, e, e.action.value, wait)

    @staticmethod
    def wait(slots: Iterable[HostSlot], others: Iterable[concurrent.futures.Future] = (),
             timeout: float | None = None) -> None:
        """Until the jobs of ``slots`` (and the recoveries their fences hand
        over) and ``others`` have ended; TimeoutError after ``timeout`` s (real
        seconds: a wait for threads, whatever the clock injected)."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        for slot in slots:
            while slot.running() and slot.job is not None:
                concurrent.futures.wait([slot.job], timeout=left())
                if left() == 0.0 and slot.running():
                    raise TimeoutError("recovery jobs still running")
        concurrent.futures.wait(list(others), timeout=left())

    def close(self) -> None:
        for pool in (self.fences, self.recoveries, self.reads):
            pool.shutdown(wait=False, cancel_futures=True)
