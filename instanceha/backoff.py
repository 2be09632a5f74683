"""The one back-off: how long to wait after each failure of a series.

``Backoff(initial, maximum, factor=2)`` is a policy (frozen data): the wait
after the n-th failure in a row is ``initial * factor ** (n - 1)``, never more
than ``maximum``. ``Backoff.start()`` gives the ``Retries`` of one series:
``next()`` after each failure returns the wait, ``reset()`` after a success
starts again from ``initial``. No clock here: the caller waits (``Clock.wait``)
or schedules the next try (``now + wait``).

The same object paces a poll that grows while nothing happens (the
evacuator's reads of a running evacuation: ``factor=1.5``, reset when Nova's
word arrives).
"""

from __future__ import annotations

import dataclasses

_MAX_EXPONENT = 64  # past this, every wait is the maximum anyway


@dataclasses.dataclass(frozen=True)
class Backoff:
    initial: float
    """Seconds after the first failure."""
    maximum: float
    """Seconds, at most, after any failure (the first one included)."""
    factor: float = 2.0
    """How much longer each next wait is."""

    def __post_init__(self) -> None:
        if not (self.initial > 0 and self.maximum > 0 and self.factor >= 1):
            raise ValueError(f"a back-off needs initial > 0, maximum > 0 and factor >= 1, "
                             f"not {self!r}")

    def delay(self, failures: int) -> float:
        """The wait after the ``failures``-th failure in a row (1, 2, ...)."""
        if failures < 1:
            raise ValueError(f"failures count from 1, not {failures}")
        exponent = min(failures - 1, _MAX_EXPONENT)
        return min(self.maximum, self.initial * self.factor ** exponent)

    def start(self) -> Retries:
        return Retries(self)


class Retries:
    """One series of failures under a ``Backoff``: not thread-safe (one per loop,
    or one per key under the caller's lock)."""

    __slots__ = ("backoff", "failures")

    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff
        self.failures = 0

    def next(self) -> float:
        """One more failure: the wait before the next try."""
        self.failures += 1
        return self.backoff.delay(self.failures)

    def peek(self) -> float:
        """The wait ``next()`` would return, without counting a failure."""
        return self.backoff.delay(self.failures + 1)

    def reset(self) -> None:
        """A success: the next failure waits ``initial`` again."""
        self.failures = 0
