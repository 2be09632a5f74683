"""An in-memory outbox: ``put()`` never blocks; one sender thread delivers in order.

The one outbox of the project: the notifications (``notify.notifier``), the
incident journal's writes (``controller.journal``) and the agent's guest
failures go to their destination through it.

When delivery fails (broker down) the head message is retried with exponential
backoff; nothing behind it overtakes it. A message not delivered within its
deadline is dropped, logged and counted in ``stats.lost_deadline``; a message
that finds the outbox full is refused (or, with ``drop_oldest``, the oldest one
is dropped for it) and counted in ``stats.lost_overflow``. Not only for
notifications: the agent's guest failures go to the coordinator through one.
The logic lives in ``pump()``, which the tests drive with a fake clock; the
thread only calls ``pump()`` and waits for the delay it returns. A message may
carry ``on_done(delivered)``, called once when it was delivered (True) or
given up (False): the incident journal records a notification as sent only
once it really was.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
from collections.abc import Callable

from instanceha.backoff import Backoff
from instanceha.clock import SYSTEM, Clock

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DeliveryPolicy:
    """How hard the outbox tries, in seconds of the monotonic clock."""

    deadline: float = 600.0
    """A message not delivered this long after it was emitted is given up."""
    retry_interval: float = 0.2
    """First wait after a failed delivery; doubles after each failure..."""
    retry_max_interval: float = 5.0
    """...up to this."""
    max_pending: int = 10000
    """Messages waiting beyond this are refused (and counted lost)."""
    close_timeout: float = 5.0
    """On shutdown, how long pending messages may still be tried."""
    drop_oldest: bool = False
    """When full, drop the oldest message for the new one (else refuse the new one)."""

    def __post_init__(self) -> None:
        if self.deadline <= 0 or self.retry_interval <= 0 or self.max_pending < 1:
            raise ValueError("deadline, retry_interval and max_pending must be positive")
        if self.retry_max_interval < self.retry_interval:
            raise ValueError("retry_max_interval must not be shorter than retry_interval")

    def backoff(self, failures: int) -> float:
        """Wait after the ``failures``-th consecutive failure (1, 2, ...)."""
        return Backoff(self.retry_interval, self.retry_max_interval).delay(failures)


@dataclasses.dataclass(frozen=True)
class StatsSnapshot:
    emitted: int = 0
    delivered: int = 0
    failed_attempts: int = 0
    lost_deadline: int = 0
    lost_overflow: int = 0
    lost_shutdown: int = 0
    pending: int = 0

    @property
    def lost(self) -> int:
        return self.lost_deadline + self.lost_overflow + self.lost_shutdown


class Stats:
    """Counters the metrics endpoint can read (``snapshot()`` is consistent)."""

    def __init__(self, pending: Callable[[], int] = lambda: 0) -> None:
        """``pending``: how many are queued now (the outbox's own count)."""
        self._lock = threading.Lock()
        self._values = dict.fromkeys(
            ("emitted", "delivered", "failed_attempts", "lost_deadline", "lost_overflow",
             "lost_shutdown"), 0)
        self._pending = pending

    def incr(self, name: str, by: int = 1) -> None:
        with self._lock:
            self._values[name] += by

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            return StatsSnapshot(pending=self._pending(), **self._values)

    def __getattr__(self, name: str) -> int:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.snapshot(), name)


@dataclasses.dataclass
class Pending:
    message: dict
    emitted_at: float
    deadline_at: float
    attempts: int = 0
    sent_to: set = dataclasses.field(default_factory=set)
    """Drivers that already took the message (a retry skips them)."""
    on_done: Callable[[bool], None] | None = None

    def done(self, delivered: bool) -> None:
        if self.on_done is None:
            return
        try:
            self.on_done(delivered)
        except Exception:  # a caller's hook must never stop the sender
            LOG.exception("after %s: its on_done hook failed", describe(self.message))


def describe(message: dict) -> str:
    """What a log line may say about a message: type and id, never the payload."""
    return f"{message.get('event_type')} {message.get('message_id')}"


class Outbox:
    """``deliver(message, sent_to)`` raises on failure; it is only ever called
    from one thread at a time (the sender, or ``close()`` after it stopped)."""

    def __init__(self, deliver: Callable[[dict, set], None], policy: DeliveryPolicy,
                 clock: Clock = SYSTEM, name: str = "notifications",
                 redact: Callable[[str], str] = str,
                 describe: Callable[[dict], str] = describe, what: str = "notification") -> None:
        """``describe(message)``: what a log line may say of a message; ``what``:
        what a message is, in the log lines that say one was lost."""
        self._deliver = deliver
        self.policy = policy
        self._clock = clock
        self._redact = redact
        self._describe = describe
        self._what = what
        self.name = name
        self._queue: collections.deque[Pending] = collections.deque()
        self._lock = threading.Lock()
        self._pumping = threading.Lock()  # one deliverer at a time
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = 0
        self._next_attempt_at = 0.0
        self.stats = Stats(self.pending)

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def pending_messages(self) -> list[dict]:
        """The messages not delivered yet, oldest first (a snapshot)."""
        with self._lock:
            return [p.message for p in self._queue]

    # -- producer side: never blocks ----------------------------------------
    def put(self, message: dict, on_done: Callable[[bool], None] | None = None) -> bool:
        """Queue ``message``; ``on_done(delivered)`` is called once it was
        delivered or given up (at once when refused)."""
        now = self._clock.monotonic()
        pending = Pending(message, now, now + self.policy.deadline, on_done=on_done)
        dropped = None
        with self._lock:
            full = len(self._queue) >= self.policy.max_pending
            if self._stopping.is_set() or full and not self.policy.drop_oldest:
                refused = True
            else:
                if full:
                    dropped = self._queue.popleft()
                self._queue.append(pending)
                refused = False
        self.stats.incr("emitted")
        if refused:
            self.stats.incr("lost_overflow")
            LOG.error("%s lost: %s refused (%s closed or %d pending)", self._what,
                      self._describe(message), self.name, self.policy.max_pending)
            pending.done(False)
            return False
        if dropped is not None:
            self.stats.incr("lost_overflow")
            LOG.error("%s lost: %s dropped, the oldest of %d pending (%s full)", self._what,
                      self._describe(dropped.message), self.policy.max_pending, self.name)
            dropped.done(False)
        self._wakeup.set()
        return True

    # -- sender side -----------------------------------------------------------
    def _drop_expired(self, now: float) -> None:
        # every message gets the same deadline on a monotonic clock, so the
        # expired ones are always at the front
        expired = []
        with self._lock:
            while self._queue and self._queue[0].deadline_at <= now:
                expired.append(self._queue.popleft())
        for p in expired:
            self.stats.incr("lost_deadline")
            LOG.error("%s lost: %s not delivered within %.1f s (%d attempts)", self._what,
                      self._describe(p.message), self.policy.deadline, p.attempts)
            p.done(False)

    def pump(self) -> float | None:
        """Deliver what can be delivered now, in order. Returns the seconds
        until the next attempt is due, or None when nothing is pending."""
        with self._pumping:
            return self._pump()

    def flush(self) -> bool:
        """Try to deliver everything pending now, in order, whatever the
        back-off says; True when nothing is left (it stops at a failure)."""
        with self._pumping:
            self._next_attempt_at = 0.0
            self._pump()
        return self.pending() == 0

    def _pump(self) -> float | None:
        while True:
            now = self._clock.monotonic()
            self._drop_expired(now)
            with self._lock:
                if not self._queue:
                    return None
                head = self._queue[0]
            if now < self._next_attempt_at:
                return min(self._next_attempt_at, head.deadline_at) - now
            head.attempts += 1
            try:
                self._deliver(head.message, head.sent_to)
            except Exception as e:  # any driver failure: retry later
                self._failed(head, e)
                continue
            with self._lock:
                if self._queue and self._queue[0] is head:
                    self._queue.popleft()
            self.stats.incr("delivered")
            head.done(True)
            if self._failures:
                LOG.warning("%s: delivering again after %d failed attempts; %d pending",
                            self.name, self._failures, self.pending())
            self._failures = 0
            self._next_attempt_at = 0.0

    def _failed(self, head: Pending, error: Exception) -> None:
        self._failures += 1
        self.stats.incr("failed_attempts")
        wait = self.policy.backoff(self._failures)
        self._next_attempt_at = self._clock.monotonic() + wait
        # one warning per outage, then debug: a broker down for an hour must
        # not flood the log
        log = LOG.warning if self._failures == 1 else LOG.debug
        log("%s: cannot deliver %s (attempt %d): %s: %s; retrying in %.1f s",
            self.name, self._describe(head.message), head.attempts, type(error).__name__,
            self._redact(str(error)), wait)

    # -- thread ----------------------------------------------------------------
    def start(self) -> Outbox:
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-sender",
                                        daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                delay = self.pump()
            except Exception:  # a bug in pump must not kill the sender silently
                LOG.exception("%s: sender failed; continuing", self.name)
                delay = self.policy.retry_max_interval
            if delay is None:
                self._wakeup.wait()  # nothing pending: until put() or close()
            else:
                self._clock.wait(delay, self._wakeup)
            self._wakeup.clear()

    def close(self, timeout: float | None = None) -> StatsSnapshot:
        """Refuse new messages, try the pending ones for at most ``timeout``
        seconds (default ``policy.close_timeout``), count the rest as lost."""
        timeout = self.policy.close_timeout if timeout is None else timeout
        self._stopping.set()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        end = self._clock.monotonic() + timeout
        while self.pending():  # at least one pass, even with timeout 0
            delay = self.pump()
            if delay is None or self._clock.monotonic() >= end:
                break
            self._clock.wait(min(delay, max(0.0, end - self._clock.monotonic())))
        with self._lock:
            left, self._queue = list(self._queue), collections.deque()
        for p in left:
            self.stats.incr("lost_shutdown")
            LOG.error("%s lost: %s still pending at shutdown", self._what,
                      self._describe(p.message))
            p.done(False)
        return self.stats.snapshot()
