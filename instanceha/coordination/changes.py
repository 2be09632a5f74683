"""Which hosts changed, by revision: what lets a controller's tick cost
O(changed hosts) (``ClusterSnapshot.changes``)."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable


class ChangeLog:
    """Hosts changed, by revision: a bounded journal the backend appends to
    and consumers query with the revision of their previous snapshot.

    Appends happen in the backend's refresh only; ``since()`` is safe to call
    from any thread (entries up to a snapshot's revision never change)."""

    def __init__(self, keep: int = 200_000) -> None:
        self.keep = keep
        self.revision = 0
        self._lock = threading.Lock()
        self._floor = 0
        self._entries: list[tuple[int, str]] = []

    def record(self, hosts: Iterable[str]) -> int:
        hosts = list(hosts)
        if not hosts:
            return self.revision
        with self._lock:
            rev = self.revision + 1
            entries = self._entries
            entries.extend((rev, h) for h in hosts)
            if len(entries) > self.keep:
                cut = len(entries) - self.keep // 2
                self._floor = entries[cut - 1][0]
                self._entries = entries[cut:]
            self.revision = rev
        return rev

    def reset(self) -> int:
        """Everything may have changed (a full re-read)."""
        with self._lock:
            self.revision += 1
            self._floor = self.revision
            self._entries = []
        return self.revision

    def since(self, revision: int, upto: int) -> frozenset[str] | None:
        with self._lock:
            floor, entries = self._floor, self._entries
        if revision < floor:
            return None
        lo = bisect.bisect_right(entries, revision, key=lambda e: e[0])
        hi = bisect.bisect_right(entries, upto, key=lambda e: e[0])
        return frozenset(h for _, h in entries[lo:hi])
