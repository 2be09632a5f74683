"""One children watch on one parent: what was added and removed since the last look.

kazoo drops every watch on a connection loss (and sends no SetWatches), so a
list is *dirty* after any change of connection state as well as after a
children event; ``poll()`` re-reads it (one round trip, whatever the number of
children) and re-arms the watch. A name that disappeared is reported with the
time the children event arrived, or with None when it was found missing by a
re-read that no event announced (after a reconnection): the first says when,
the second proves nothing about when.
"""

from __future__ import annotations

import dataclasses
import threading

from kazoo import exceptions as kz_exc
from kazoo.protocol.states import EventType

from instanceha.clock import Clock


@dataclasses.dataclass(frozen=True)
class Diff:
    added: frozenset[str]
    removed: frozenset[str]
    removed_at: float | None
    """When the change was announced by a watch event; None: found by a re-read."""

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


EMPTY = Diff(frozenset(), frozenset(), None)


class ChildrenIndex:
    def __init__(self, client, path: str, clock: Clock) -> None:
        self.client = client
        self.path = path
        self.clock = clock
        self.names: frozenset[str] = frozenset()
        self.events = 0
        self._lock = threading.Lock()
        self._dirty = True
        self._event_at: float | None = None
        self._resync = True

    def _on_children(self, event) -> None:
        """kazoo's thread: record, never block."""
        if event.type == EventType.NONE:
            self.invalidate()
            return
        with self._lock:
            self.events += 1
            self._dirty = True
            if self._event_at is None:
                self._event_at = self.clock.monotonic()

    def invalidate(self) -> None:
        """The watch is gone (connection lost): re-read at the next poll."""
        with self._lock:
            self._dirty = True
            self._resync = True

    @property
    def dirty(self) -> bool:
        return self._dirty

    def poll(self) -> Diff:
        """Re-read the list if a change was announced or the watch is gone."""
        with self._lock:
            if not self._dirty:
                return EMPTY
            self._dirty = False
            event_at, self._event_at = self._event_at, None
            resync, self._resync = self._resync, False
        try:
            names = frozenset(self.client.get_children(self.path, watch=self._on_children))
        except kz_exc.NoNodeError:
            names = frozenset()
            self.client.exists(self.path, watch=self._on_children)
        except Exception:
            with self._lock:
                self._dirty = True
                self._resync = self._resync or resync
                self._event_at = self._event_at or event_at
            raise
        old, self.names = self.names, names
        return Diff(names - old, old - names, None if resync else event_at)
