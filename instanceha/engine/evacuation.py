"""What Nova's records say about one evacuation: pure, no I/O, no clock.

The evacuator (``compute.evacuation``) reads Nova; these rules decide what
the reads mean, so the protocol is tested as a table:

* ``accepted``: did Nova take an evacuate whose answer was lost or refused?
  An unsettled record is an evacuation running now; a settled one counts only
  if it is newer than the record ``floor`` (or, with the older records
  unknown, created since the evacuation started);
* ``broken``: the attempt failed (its record failed, or the server went ERROR
  with no task running);
* ``landed``: the server is on another host, idle, ACTIVE or SHUTOFF.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Protocol

ARRIVED = ("ACTIVE", "SHUTOFF")
"""The server statuses an evacuation ends in (the pre-failure power state is
restored afterwards)."""


class Record(Protocol):
    """An evacuation migration record (``compute.model.Migration``)."""

    @property
    def id(self) -> int: ...

    @property
    def source_compute(self) -> str | None: ...

    @property
    def created_at(self) -> datetime.datetime | None: ...

    @property
    def succeeded(self) -> bool: ...

    @property
    def failed(self) -> bool: ...


class Placed(Protocol):
    """A server as last read (``compute.model.Server``)."""

    @property
    def host(self) -> str | None: ...

    @property
    def status(self) -> str: ...

    @property
    def task_state(self) -> str | None: ...


def accepted(records: Iterable[Record], host: str, floor: int | None,
             since: datetime.datetime) -> bool:
    """Did Nova accept an evacuate of the server from ``host`` after record
    ``floor`` (None: the older records are unknown, then: one created since
    ``since``)? ``records``: the server's evacuation records, any order."""
    for m in records:
        if m.source_compute not in (None, host):
            continue
        if not (m.succeeded or m.failed):
            return True
        if floor is not None and m.id > floor:
            return True
        if floor is None and m.created_at is not None and m.created_at >= since:
            return True
    return False


def broken(server: Placed, record: Record | None) -> bool:
    """The attempt failed: its record says so, or the server is ERROR and idle."""
    return (record is not None and record.failed) or (server.status == "ERROR"
                                                      and server.task_state is None)


def landed(server: Placed, host: str) -> bool:
    """The server left ``host`` and came to rest (idle, ACTIVE or SHUTOFF)."""
    return server.host not in (None, host) and server.task_state is None \
        and server.status in ARRIVED
