"""The one way the daemons read time and wait: a ``Clock``, injected.

* ``monotonic()``: seconds on a clock that never jumps; every interval,
  deadline and back-off is measured on it;
* ``wall()``: seconds since the epoch (a float, everywhere): what is written
  down for people and for other processes (journal, markers, notifications);
  ``utcnow()`` is the same instant as an aware UTC ``datetime``, for the few
  places that speak ISO 8601 (Nova's ``changes-since``, markers);
* ``wait(seconds, until)``: spend ``seconds``, or less if ``until`` (a
  ``threading.Event``, or anything with ``wait(timeout)`` and ``is_set()``)
  is set first; True when it was.

Production code takes a ``clock: Clock = SYSTEM``; unit tests pass the one
fake (``tests/unit/clock.py``), which moves only when told or waited on, so
they never sleep. The pure engine takes no clock at all: its callers pass
``now``.
"""

from __future__ import annotations

import datetime
import time
from typing import Protocol


class Waitable(Protocol):
    """What ``Clock.wait`` can be cut short by (``threading.Event`` is one)."""

    def wait(self, timeout: float | None = None) -> bool: ...

    def is_set(self) -> bool: ...


class Clock:
    """Real time."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def utcnow(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.wall(), datetime.timezone.utc)

    def wait(self, seconds: float, until: Waitable | None = None) -> bool:
        """Wait ``seconds`` (at least 0), or until ``until`` is set: True if it was."""
        seconds = max(0.0, seconds)
        if until is not None:
            return until.wait(seconds)
        time.sleep(seconds)
        return False


#: the real clock, the default of every ``clock`` parameter
SYSTEM = Clock()
