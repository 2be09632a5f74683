"""How the evacuator waits, cheaply: one bulk read per failed host, and Nova's
word cutting a wait short.

* ``HostRecords``: the evacuation migration records of one failed host, read
  in one bulk request and shared by every server waiting on it;
* ``Waker`` and ``Pause``: an interruptible wait (a ``Waitable`` of
  ``instanceha.clock``) that Nova's notifications end early;
* ``CompletionWatch``: routes those notifications (fed by the controller's
  listener) to the evacuations waiting on the instance.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Iterable

from instanceha.clock import Clock
from instanceha.compute.model import Migration


class Waker:
    """An interruptible wait: ``wait(s, since)`` returns True at once when
    ``poke()``d after ``since`` (a ``mark()``; Nova said something about a
    server being waited on), else False after ``s`` seconds."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    def mark(self) -> int:
        with self._cond:
            return self._generation

    def wait(self, seconds: float | None, since: int | None = None) -> bool:
        with self._cond:
            seen = self._generation if since is None else since
            return self._cond.wait_for(lambda: self._generation != seen, seconds)

    def poked_since(self, since: int | None) -> bool:
        with self._cond:
            return since is not None and self._generation != since

    def poke(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()


class Pause:
    """One waiter's pauses on a ``Waker``: ``mark()`` before reading Nova, then
    ``clock.wait(s, pause)`` ends early if Nova's word came in since the mark (a
    word that arrives during the read is not lost). A ``Waitable`` of
    ``instanceha.clock``."""

    def __init__(self, waker: Waker) -> None:
        self.waker = waker
        self._since: int | None = None

    def mark(self) -> None:
        self._since = self.waker.mark()

    def wait(self, timeout: float | None = None) -> bool:
        return self.waker.wait(timeout, self._since)

    def is_set(self) -> bool:
        return self.waker.poked_since(self._since)


class CompletionWatch:
    """Routes Nova's word about an instance (a versioned notification: rebuild
    end or error, update) to the evacuations waiting on it. Thread-safe; one
    per controller, fed by the notification listener."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, Waker] = {}
        self.pokes = 0
        """Notifications that woke a waiting evacuation."""

    def subscribe(self, server_ids: Iterable[str], waker: Waker) -> None:
        with self._lock:
            for sid in server_ids:
                self._waiting[sid] = waker

    def unsubscribe(self, server_ids: Iterable[str]) -> None:
        with self._lock:
            for sid in server_ids:
                self._waiting.pop(sid, None)

    def poke(self, server_id: str) -> bool:
        with self._lock:
            waker = self._waiting.get(server_id)
            if waker is not None:
                self.pokes += 1
        if waker is None:
            return False
        waker.poke()
        return True


class HostRecords:
    """The evacuation migration records of one failed host, read in one bulk
    request and shared: a caller gets the last read when it is younger than
    ``max_age``, else reads (or waits for the read another caller started)."""

    def __init__(self, nova, host: str, since: datetime.datetime,
                 clock: Clock) -> None:
        self.nova = nova
        self.host = host
        self.since = since
        self.clock = clock
        self._cond = threading.Condition()
        self._reading = False
        self._at: float | None = None
        self._records: list[Migration] = []
        self.reads = 0

    def of(self, server_id: str, max_age: float) -> list[Migration]:
        """This server's records from the host, newest first."""
        return [m for m in self.read(max_age) if m.instance_uuid == server_id]

    def read(self, max_age: float) -> list[Migration]:
        """The records as read less than ``max_age`` seconds ago (0: read now)."""
        with self._cond:
            while True:
                if self._at is not None and self.clock.monotonic() - self._at < max_age:
                    return self._records
                if not self._reading:
                    self._reading = True
                    break
                self._cond.wait()
        try:
            started = self.clock.monotonic()
            records = self.nova.evacuations(source_host=self.host, changes_since=self.since)
        except BaseException:
            with self._cond:
                self._reading = False
                self._cond.notify_all()
            raise
        with self._cond:
            self._records, self._at, self._reading = records, started, False
            self.reads += 1
            self._cond.notify_all()
            return records
