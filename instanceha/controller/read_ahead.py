"""Plans read ahead for FAILED hosts the mass-failure guard still holds.

While the guard holds a host (its short wait for companions, or the per-tick
cap), the host's recovery plan is read already, read-only, so that the fence
finds it ready. Once per failure, for at most ``limit`` hosts at a time (a
mass failure the guard holds does not become a burst of server lists on
Nova); a read older than ``max_age`` is not used (the fence reads again).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
from collections.abc import Callable, Iterable

from instanceha.clock import Clock

LOG = logging.getLogger(__name__)

MAX_AGE = 10.0
"""Seconds: a plan read ahead of the fence longer ago than this is read again."""


@dataclasses.dataclass(frozen=True)
class _Read:
    since: float
    """The failure it was read for (the view's ``since``)."""
    at: float
    plan: concurrent.futures.Future


class ReadAhead:
    def __init__(self, limit: int, clock: Clock,
                 max_age: float = MAX_AGE) -> None:
        self.limit = limit
        self.max_age = max_age
        self.clock = clock
        self._reads: dict[str, _Read] = {}

    def __contains__(self, host: str) -> bool:
        return host in self._reads

    def hosts(self) -> list[str]:
        return list(self._reads)

    def plans(self) -> list[concurrent.futures.Future]:
        return [r.plan for r in self._reads.values()]

    def start(self, host: str, since: float,
              read: Callable[[], concurrent.futures.Future]) -> None:
        """Read the plan of ``host`` for its failure ``since`` (``read()``
        submits it), unless read already or ``limit`` hosts are being read."""
        known = self._reads.get(host)
        if known is not None and known.since == since:
            return
        if known is None and len(self._reads) >= self.limit:
            return
        self._reads[host] = _Read(since, self.clock.monotonic(), read())

    def take(self, host: str, since: float) -> concurrent.futures.Future | None:
        """The plan read ahead for this failure, if young enough to use (the
        host's slot is freed either way)."""
        known = self._reads.pop(host, None)
        if known is None:
            return None
        age = self.clock.monotonic() - known.at
        if known.since == since and age <= self.max_age:
            LOG.info("host=%s fence uses the recovery plan read ahead %.1f s ago", host, age)
            return known.plan
        known.plan.cancel()
        LOG.info("host=%s recovery plan read ahead %.1f s ago is not used (%s): read again "
                 "beside the fence", host, age,
                 "older than %.0f s" % self.max_age if known.since == since
                 else "read for an earlier failure")
        return None

    def drop(self, host: str) -> None:
        known = self._reads.pop(host, None)
        if known is not None:
            known.plan.cancel()

    def keep_only(self, hosts: Iterable[str] | Callable[[str], bool]) -> None:
        """Drop the reads of hosts not kept: never left holding a slot."""
        keep = hosts if callable(hosts) else set(hosts).__contains__
        for gone in [h for h in self._reads if not keep(h)]:
            self.drop(gone)
