"""A small read-through cache with a time to live, for what every recovery
reads alike (Nova's aggregates, image properties): a host's failure does not
change them, and several hosts failing together need them once.

One read per key at a time: concurrent callers of a key being read wait for
that read instead of sending their own. A failed read is not cached (the
next caller tries again) and is raised to every caller that waited for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

from instanceha.clock import Clock


class TTLCache:
    def __init__(self, ttl: float, clock: Clock) -> None:
        if ttl < 0:
            raise ValueError("ttl must be >= 0 seconds")
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._values: dict[Hashable, tuple[float, Any]] = {}
        self._reading: dict[Hashable, threading.Event] = {}

    def get(self, key: Hashable, read: Callable[[], Any], fresh: bool = False) -> Any:
        """The cached value of ``key`` if younger than ``ttl`` (and not ``fresh``),
        else ``read()``'s, cached from now on."""
        while True:
            with self._lock:
                hit = self._values.get(key)
                if hit is not None and not fresh and self.clock.monotonic() - hit[0] < self.ttl:
                    return hit[1]
                pending = self._reading.get(key)
                if pending is None:
                    mine = self._reading[key] = threading.Event()
                    break
            pending.wait()
            fresh = False  # a read that ended while we waited is fresh enough; if it
            # failed, the loop reads again (or finds another read under way)
        try:
            value = read()
        except BaseException:
            with self._lock:
                del self._reading[key]
            mine.set()
            raise
        with self._lock:
            self._values[key] = (self.clock.monotonic(), value)
            del self._reading[key]
        mine.set()
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
