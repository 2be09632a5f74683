"""The one fake clock of the unit tests: time moves only when told or waited on."""

from __future__ import annotations

import threading

from instanceha.clock import Clock, Waitable

EPOCH = 1_700_000_000.0


class FakeClock(Clock):
    """``now`` is the monotonic time, ``wall_now`` the wall time (epoch s);
    ``advance()`` and ``wait()`` move both (only ``now`` with ``frozen_wall``:
    for tests that compare the times written down with a constant). A wait
    never blocks: it is recorded in ``waits``, moves the clock and returns
    whether ``until`` is set.

    Callable (returns ``now``) for the coordination fakes and stores that still
    take a bare monotonic callable."""

    def __init__(self, now: float = 1000.0, wall: float = EPOCH,
                 frozen_wall: bool = False) -> None:
        self.now = now
        self.wall_now = wall
        self.frozen_wall = frozen_wall
        self.waits: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.wall_now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds
            if not self.frozen_wall:
                self.wall_now += seconds

    def wait(self, seconds: float, until: Waitable | None = None) -> bool:
        assert seconds > 0, "waited for nothing (a loop that spins)"
        with self._lock:
            self.waits.append(seconds)
        self.advance(seconds)
        return until.is_set() if until is not None else False
