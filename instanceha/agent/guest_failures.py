"""Which domain events of one host are new guest failures, as records.

The guest monitor hands every libvirt event (and, after a reconnect, every
domain's state) here; what comes back is a record for the coordinator's guest
failure queue, or None. No I/O and no thread: the kinds come from the tables
of ``libvirt_events``, and two rules keep the queue free of repeats:

* the same failure of the same domain again within ``coalesce`` seconds (an
  I/O error storm) is counted, not reported; a domain started again (Nova's
  hard reboot: a new QEMU) fails anew at once;
* each domain's failed state is remembered, so the scan after a reconnect
  reports only what failed while the monitor was away. The first scan only
  records the states: what failed before the agent started is not new.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable, Mapping

from instanceha.agent import libvirt_events as lv
from instanceha.clock import Clock
from instanceha.engine.guest import GuestFailure

Record = Mapping[str, object]


class GuestFailures:
    def __init__(self, host: str, clock: Clock, coalesce: float = 10.0) -> None:
        self.host = host
        self.clock = clock
        self.coalesce = coalesce
        self._lock = threading.Lock()
        self._states: dict[str, GuestFailure | None] = {}
        self._scanned_once = False
        self._last_sent: dict[tuple[str, GuestFailure], float] = {}
        self.seen: collections.Counter = collections.Counter()
        """Failures seen, by kind (coalesced ones included)."""
        self.coalesced = 0

    def lifecycle(self, uuid: str, name: str, event: int, detail: int) -> Record | None:
        if event in (lv.STARTED, lv.RESUMED):
            self._states[uuid] = None
            if event == lv.STARTED:  # a new life of the domain: its failures are new ones
                with self._lock:
                    for key in [k for k in self._last_sent if k[0] == uuid]:
                        del self._last_sent[key]
            return None
        kind = lv.lifecycle_kind(event, detail)
        if kind is None:
            return None
        if kind in lv.PERSISTENT:
            self._states[uuid] = kind
        return self._record(uuid, name, kind, lv.lifecycle_detail(event, detail))

    def watchdog(self, uuid: str, name: str, action: int) -> Record | None:
        return self._record(uuid, name, GuestFailure.WATCHDOG, lv.watchdog_detail(action))

    def io_error(self, uuid: str, name: str, path: str, device: str, action: int,
                 reason: str) -> Record | None:
        return self._record(uuid, name, GuestFailure.IO_ERROR,
                            lv.io_error_detail(path, device, action, reason))

    def scan(self, domains: Iterable[tuple[str, str, int, int]]) -> list[Record]:
        """(uuid, name, state, reason) of every domain: the failures not seen yet
        (none at the first scan), each domain's state remembered."""
        report, found = self._scanned_once, []
        for uuid, name, state, reason in domains:
            kind = lv.state_kind(state, reason)
            before = self._states.get(uuid)
            self._states[uuid] = kind
            if report and kind is not None and kind != before:
                record = self._record(uuid, name, kind, lv.state_detail(state, reason, kind))
                if record is not None:
                    found.append(record)
        self._scanned_once = True
        return found

    def _record(self, uuid: str, name: str, kind: GuestFailure,
                detail: dict) -> Record | None:
        now = self.clock.monotonic()
        key = (uuid, kind)
        with self._lock:
            self.seen[kind] += 1
            last = self._last_sent.get(key)
            if last is not None and now - last < self.coalesce:
                self.coalesced += 1
                return None  # the same failure again (an I/O error storm): already on its way
            self._last_sent[key] = now
        return {"host": self.host, "instance_id": uuid, "kind": kind,
                "at": round(self.clock.wall(), 6), "detail": dict(detail, domain=name)}
