"""The one "request, then read back until it matches or the deadline passes" loop.

Written once, outside the drivers: a driver only supplies ``request_power``
and ``get_power_state``. The loop:

1. reads the power state; if it already is the requested one, that read-back
   is the proof ("already off" is success, nothing is sent);
2. sends the request; a failure that may pass (``action`` RETRY: BMC
   unreachable, busy, in transition) is retried with exponential backoff
   (``retry_backoff`` doubling up to ``retry_backoff_max``); a failure that
   will not pass (ESCALATE: wrong credentials, TLS, garbage) is raised at once;
3. once a request was accepted, polls the read-back every ``poll_interval``
   until it equals the request. An accepted request is not sent again: BMCs
   (and sushy-emulator) restart a pending transition when asked twice, and
   pyghmi already retransmits lost datagrams;
4. stops at the total ``deadline``: the last typed error of a BMC that never
   answered, or ``DeadlineExceeded`` with the last read-back otherwise.

Success only ever comes from a read-back equal to the request. The clock is
injected (``instanceha.clock``) so unit tests never sleep. Each BMC call is bounded by the
time left (and by the entry's ``timeout``); the last read-back, at the
deadline, gets up to 1 s, so a deadline is overrun by at most about 1 s.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging

from instanceha.backoff import Backoff
from instanceha.clock import SYSTEM, Clock
from instanceha.fencing import exceptions as exc
from instanceha.fencing.base import FenceDriver, PowerState

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FencePolicy:
    """How hard to try. Seconds everywhere. Built by ``instanceha.conf.fencing``."""

    deadline: float = 60.0
    poll_interval: float = 1.0
    retry_backoff: float = 1.0
    retry_backoff_max: float = 10.0
    max_concurrent: int = 16
    power_on_after_recovery: bool = False

    def __post_init__(self) -> None:
        for name in ("deadline", "poll_interval", "retry_backoff", "retry_backoff_max"):
            if getattr(self, name) <= 0:
                raise ValueError(f"FencePolicy.{name} must be > 0 seconds")
        if self.retry_backoff > self.retry_backoff_max:
            raise ValueError("FencePolicy.retry_backoff must not exceed retry_backoff_max")
        if self.max_concurrent < 1:
            raise ValueError("FencePolicy.max_concurrent must be >= 1")

    @property
    def retry(self) -> Backoff:
        """Between two requests the BMC refused for a reason that may pass."""
        return Backoff(self.retry_backoff, self.retry_backoff_max)


@dataclasses.dataclass(frozen=True)
class FenceEvidence:
    """What was asked, what was read back, and when: the proof of a power action."""

    host: str
    driver: str
    address: str
    requested: PowerState
    read_back: PowerState
    attempts: int  # requests sent; 0 when the host already was in the requested state
    reads: int  # read-backs done
    started_at: float  # wall clock, seconds since the epoch
    finished_at: float
    duration: float  # seconds, monotonic
    level: int = 1  # the fencing level that confirmed (levels.run), counted from 1
    levels: int = 1  # how many levels the host has
    devices: tuple = ()  # the devices of that level (BMCEntry.describe())
    failed_levels: tuple = ()  # the levels tried before and why they did not confirm

    @property
    def already(self) -> bool:
        return self.attempts == 0

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["requested"], d["read_back"] = self.requested.value, self.read_back.value
        d["devices"], d["failed_levels"] = list(self.devices), list(self.failed_levels)
        for k in ("started_at", "finished_at"):
            d[k + "_iso"] = datetime.datetime.fromtimestamp(
                d[k], datetime.timezone.utc).isoformat(timespec="milliseconds")
        d["already"] = self.already
        return d


class _Run:
    def __init__(self, driver, requested, policy, deadline, clock: Clock):
        self.driver, self.requested, self.policy = driver, requested, policy
        self.clock = clock
        self.start = clock.monotonic()
        self.started_at = clock.wall()
        self.deadline = deadline if deadline is not None else policy.deadline
        self.end = self.start + self.deadline
        self.attempts = self.reads = 0
        self.last_state: PowerState | None = None
        self.last_error: exc.FencingError | None = None

    def left(self) -> float:
        return self.end - self.clock.monotonic()

    def call_timeout(self) -> float:
        # the read-back at the deadline still gets a fair chance (up to 1 s)
        floor = min(1.0, self.driver.call_timeout)
        return max(floor, min(self.driver.call_timeout, self.left()))

    def wait(self, seconds: float) -> None:
        seconds = min(seconds, self.left())
        if seconds > 0:
            self.clock.wait(seconds)

    def read(self) -> PowerState | None:
        self.reads += 1
        timeout = self.call_timeout()
        try:
            state = self.driver.get_power_state(timeout=timeout)
        except exc.FencingError as e:
            self._failed("read", e, timeout)
            return None
        if not isinstance(state, PowerState):  # a driver bug must never read as OFF
            raise exc.GarbageReply(**self.driver.facts(reason=f"driver returned {state!r}"))
        self.last_state, self.last_error = state, None
        return state

    def request(self) -> bool:
        self.attempts += 1
        timeout = self.call_timeout()
        try:
            self.driver.request_power(self.requested, timeout=timeout)
        except exc.FencingError as e:
            self._failed("request", e, timeout)
            return False
        return True

    def _failed(self, what: str, e: exc.FencingError, timeout: float) -> None:
        if not e.retryable:
            raise e
        # an agent run cut short by the deadline that ran out of time says nothing
        # new: the error before it (a wrong password, say) is the one to report
        cut = isinstance(e, exc.AgentTimeout) and timeout < self.driver.call_timeout
        if not (cut and self.last_error is not None):
            self.last_error = e
        LOG.info("power %s of %s: %s failed (%s), retrying within %.1f s",
                 self.requested, self.driver.host, what, type(e).__name__, self.left())

    def evidence(self) -> FenceEvidence:
        assert self.last_state is not None  # evidence only after a read-back matched
        return FenceEvidence(
            host=self.driver.host, driver=self.driver.name, address=self.driver.address,
            requested=self.requested, read_back=self.last_state, attempts=self.attempts,
            reads=self.reads, started_at=self.started_at, finished_at=self.clock.wall(),
            duration=self.clock.monotonic() - self.start, devices=(self.driver.entry.describe(),))

    def timed_out(self) -> exc.FencingError:
        if self.last_error is not None and self.last_state is None:
            return self.last_error  # the BMC never answered: say why
        return exc.DeadlineExceeded(
            **self.driver.facts(), requested=self.requested.value, deadline=self.deadline,
            attempts=self.attempts,
            last_state=self.last_state.value.upper() if self.last_state else "none",
            last_error=f" (then: {type(self.last_error).__name__})" if self.last_error else "")


def confirm(driver: FenceDriver, requested: PowerState, policy: FencePolicy,
            deadline: float | None = None, clock: Clock = SYSTEM) -> FenceEvidence:
    """Bring ``driver``'s host to ``requested`` and prove it by a read-back.

    Returns FenceEvidence; raises a typed FencingError otherwise (never "off"
    without a read-back of OFF). ``deadline`` (seconds) overrides the policy's.
    """
    run = _Run(driver, requested, policy, deadline, clock)
    if run.read() is requested:
        return run.evidence()
    retries = policy.retry.start()
    while run.left() > 0:
        if not run.request():
            run.wait(retries.next())
            continue
        while run.left() > 0:
            run.wait(policy.poll_interval)
            if run.read() is requested:
                return run.evidence()
        break
    raise run.timed_out()
