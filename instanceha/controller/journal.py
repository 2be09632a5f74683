"""The incident journal: what happened to each failed host, across leaders.

One incident per failure of a host. It records the signals the detector saw,
each decision with its reason, the fence evidence (or the operator's
attestation), each instance's outcome and the host's return, each entry
with its wall-clock time, the controller that wrote it and its term. It
lives in the coordinator (``Coordinator.incident_write``), not in a process:
a leader that dies mid-recovery leaves its entries, and the next leader
appends to the *same* incident (it finds the host's open incident in the
store), so ``instanceha incidents show ID`` tells one story.

The journal also keeps which notifications each open incident has sent
(``notifications_sent`` in its summary: their idempotency keys, recorded once
the bus took them): a leader that takes an incident over, and a fence retry, do not
send those again (``claim``).

A guest failure (one instance's guest failed on a host that is fine) is an
incident of its own, keyed by host *and* instance (``instance=`` on
``record``). Ids and states: ``controller.incidents``.

Resolution (which incident an entry belongs to, state changes:
``incidents.IncidentIndex``) happens in memory under a lock, synchronously
and in call order; only the writes to
the coordinator are deferred, through the project's one outbox
(``notify.outbox.Outbox``: bounded, in order, retried with back-off while the
coordinator is away). So the recovery never waits on the journal and never
fails because of it. Retention is bounded: closed incidents beyond ``keep``
or older than ``max_age`` are deleted when a new incident opens.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Mapping

from instanceha import exceptions
from instanceha.clock import SYSTEM, Clock
from instanceha.controller.incidents import (
    DEFAULT_RETENTION,
    MAX_TEXT,
    SENT,
    Entry,
    IncidentIndex,
    IncidentState,
    Retention,
)
from instanceha.controller.stores import IncidentStore
from instanceha.notify.outbox import DeliveryPolicy, Outbox

LOG = logging.getLogger(__name__)

KEEP_TRYING = 30 * 86400.0
"""Seconds a write is retried while the coordinator is away (in effect, until
the controller stops)."""


def _describe(message: Mapping[str, object]) -> str:
    return f"{message.get('op')} of incident {message.get('incident', '(index)')}"


class IncidentJournal:
    def __init__(self, store: IncidentStore, name: str, retention: Retention = DEFAULT_RETENTION,
                 clock: Clock = SYSTEM, max_queue: int = 10000,
                 background: bool = True, retry_max: float = 10.0) -> None:
        self.store = store
        self.name = name
        self.retention = retention
        self.clock = clock
        self.max_queue = max_queue
        self._lock = threading.Lock()
        self._index: IncidentIndex | None = None
        """The incidents of the term the store was last read for."""
        self._term: int | None = None
        self._early: list[Entry] = []
        self._early_dropped = 0
        self._load_asked: int | None = None
        self._claimed: set[tuple[str, str]] = set()
        """(incident, idempotency key) of the notifications on their way from here."""
        self._unrecorded: dict[tuple[str, str], None] = {}
        """(incident, key) of notifications delivered before their incident was
        known here (the store unread): never sent again by this controller, and
        recorded in the incident once it is known."""
        # the coordinator away: the oldest write is dropped for a new one
        self.outbox = Outbox(self._write, DeliveryPolicy(
            deadline=KEEP_TRYING, retry_interval=min(0.5, retry_max),
            retry_max_interval=retry_max, max_pending=max_queue, close_timeout=2.0,
            drop_oldest=True), clock=clock, name="incident journal", describe=_describe,
            what="incident journal write")
        if background:
            self.outbox.start()

    @property
    def dropped(self) -> int:
        """Entries lost: the queue was full (the coordinator away too long)."""
        stats = self.outbox.stats.snapshot()
        return self._early_dropped + stats.lost_overflow + stats.lost_deadline

    @property
    def write_errors(self) -> int:
        return self.outbox.stats.failed_attempts

    # -- the term ------------------------------------------------------------
    def term(self, token: int | None) -> None:
        """The leader's current term, as known locally (called every tick).
        A new term re-reads the store: another leader may have written since."""
        if token is not None and token != self._term:
            self._term = token

    def _ready(self) -> bool:
        return self._index is not None and self._index.term == self._term

    def load(self) -> bool:
        """Read the store's incidents for this term (I/O outside the lock).
        Then entries buffered meanwhile are applied, in their order."""
        with self._lock:
            if self._ready():
                return True
            term = self._term
        try:
            summaries = self.store.incidents()
        except exceptions.InstanceHAError as e:
            LOG.warning("incident journal not loaded: %s (%s)", e, e.action.value)
            return False
        with self._lock:
            if self._ready():
                return True  # another thread loaded meanwhile: its index may hold more
            if self._term != term:
                return False  # another term began meanwhile: the next load reads again
            index = {i: dict(s) for i, s in summaries.items()
                     if isinstance(s, Mapping) and "host" in s}
            for m in self.outbox.pending_messages():  # queued: newer than the store
                if m["op"] == "write":
                    index[m["incident"]] = dict(m["summary"])
                elif m["op"] == "delete":
                    index.pop(m["incident"], None)
            self._index = IncidentIndex(index, term, self.name, self.retention, self._push)
            early, self._early = self._early, []
            for item in early:
                self._index.apply(item)
            self._record_unrecorded()
        return True

    # -- recording (any thread; never blocks on the store) --------------------
    def record(self, host: str, kind: str, text: str, *, state: IncidentState | None = None,
               opens: bool = False, new_failure: bool = False,
               close_if: frozenset[IncidentState] = frozenset(),
               counts: Mapping[str, int] | None = None, instance: str | None = None,
               incident: str | None = None, new_id: str | None = None,
               **facts) -> str | None:
        """Add an entry to the host's open incident; ``opens`` starts one if
        the host has none; ``new_failure`` (a fence is due) also closes an open
        one that a new fence does not continue (the host was back in service);
        ``incident`` adds the entry to that incident, even an ended one (a guest
        failure coalesced with the one just handled); ``new_id``: the id of the
        incident it opens, if it opens one (unless taken).
        Returns the incident id, or None when not resolved yet (the store is
        not read yet: the entry is applied, in order, once it is)."""
        item = Entry(host, kind, text[:MAX_TEXT], dict(facts), self.clock.wall(), state,
                     opens or new_failure, new_failure, close_if, dict(counts or {}), instance,
                     incident, new_id)
        with self._lock:
            if not self._ready():
                if len(self._early) >= self.max_queue:
                    self._early_dropped += 1
                    LOG.error("incident journal: entry dropped (store unread, %d buffered): "
                              "host=%s %s", len(self._early), host, kind)
                    return None
                if not self._early:  # the writer reads the store, then applies them
                    self.outbox.put({"op": "load"})
                self._early.append(item)
                return None
            incident = self._loaded.apply(item)
            self._record_unrecorded()
            return incident

    def open(self, host: str, token: int, kind: str, text: str, **kwargs) -> str:
        """Record an entry that opens (or continues) the host's incident and
        return its id; reads the store first if needed (job threads only)."""
        self.term(token)
        if not self._ready():
            self.load()
        # the store is unread (it failed): the id this failure gets is said now
        # (the notifications carry it), and the entry opens the incident under
        # it once the store reads. Never "<host>-<token>" itself: a closed
        # incident of this term may have it, and a consumer that de-duplicates
        # on its keys would drop this failure's events as that one's
        guess = None
        if not self._ready():
            guess = f"{host}-{token}.{int(self.clock.wall() * 1000)}"
            with self._lock:  # an entry buffered before (the decision) opens it under it
                self._early = [dataclasses.replace(e, new_id=guess)
                               if e.host == host and e.instance is None and e.opens
                               and e.new_id is None else e for e in self._early]
        incident = self.record(host, kind, text, new_failure=True, new_id=guess, **kwargs)
        return incident if incident is not None else str(guess)

    def open_in(self, state: IncidentState) -> dict[str, str] | None:
        """host -> its open host incident in ``state``; None while the store is
        not read for this term (never reads it: any thread)."""
        with self._lock:
            index = self._index
            if not self._ready() or index is None:
                if self._load_asked != self._term:  # the writer reads it, once a term
                    self._load_asked = self._term
                    self.outbox.put({"op": "load"})
                return None
            return index.open_in(state)

    def current(self, host: str) -> str | None:
        """The host's open incident (job threads: may read the store)."""
        if not self._ready():
            self.load()
        with self._lock:
            return self._index.open_for(host) if self._index is not None else None

    def count(self, incident: str, name: str) -> int:
        """A counter of the incident's summary (``counts=`` of ``record``)."""
        with self._lock:
            summary = self._index.get(incident) if self._index is not None else None
            value = summary.get(name, 0) if summary is not None else 0
            return value if isinstance(value, int) else 0

    def opened_at(self, incident: str) -> float | None:
        """When the incident opened (wall seconds); None if unknown (job threads:
        may read the store)."""
        if not self._ready():
            self.load()
        with self._lock:
            summary = self._index.get(incident) if self._index is not None else None
            at = summary.get("opened_at") if summary is not None else None
            return float(at) if isinstance(at, (int, float)) else None

    # -- the notifications an incident has sent -------------------------------
    def told(self, incident: str, key: str) -> bool:
        """Is the notification of this step (its idempotency ``key``) delivered,
        by this controller or an earlier leader, or on its way from here?
        (Job threads: may read the store.)"""
        if not self._ready():
            self.load()
        with self._lock:
            return self._told(incident, key)

    def claim(self, incident: str, key: str) -> bool:
        """May the notification of this step (its idempotency ``key``) be sent?
        False when the incident records it as delivered (by this controller or
        an earlier leader) or it is on its way from here; else True, and it is
        on its way (``notified`` ends that). Job threads only (may read the
        store); an unreadable store answers True (at least once, never lost),
        except for a step this controller has delivered already."""
        if not self._ready():
            self.load()
        with self._lock:
            if self._told(incident, key):
                return False
            self._claimed.add((incident, key))
            return True

    def notified(self, incident: str, key: str, delivered: bool) -> None:
        """A claimed notification was delivered (recorded in its incident while
        open) or given up (it may be sent again)."""
        with self._lock:
            self._claimed.discard((incident, key))
            if not delivered:
                return
            if self._index is not None and self._index.get(incident) is not None:
                self._index.sent(incident, key)
                return
            self._unrecorded[(incident, key)] = None  # recorded once the incident is known
            if len(self._unrecorded) > self.max_queue:  # bounded: the oldest forgotten
                del self._unrecorded[next(iter(self._unrecorded))]

    # -- in memory, lock held --------------------------------------------------
    def _told(self, incident: str, key: str) -> bool:
        if (incident, key) in self._claimed or (incident, key) in self._unrecorded:
            return True
        summary = self._index.get(incident) if self._index is not None else None
        return summary is not None and key in summary.get(SENT, ())

    @property
    def _loaded(self) -> IncidentIndex:
        """The index, once loaded (only after ``_ready``)."""
        assert self._index is not None
        return self._index

    def _record_unrecorded(self) -> None:
        """Record the notifications delivered before their incident was known."""
        if not self._unrecorded or self._index is None:
            return
        for incident, key in list(self._unrecorded):
            if self._index.get(incident) is not None:
                self._index.sent(incident, key)
                del self._unrecorded[(incident, key)]

    def _push(self, op: str, incident: str, summary: Mapping | None = None,
              entry: Mapping | None = None) -> None:
        self.outbox.put({"op": op, "incident": incident, "summary": summary, "entry": entry})

    # -- the writer (the outbox's thread) ---------------------------------------
    def _write(self, message: Mapping, sent_to: set) -> None:
        """Deliver one queued operation to the store; raises to be retried."""
        if not self._ready() and not self.load():
            raise exceptions.CoordinatorUnavailable(where="incident journal",
                                                    reason="the store is not readable")
        op, incident = message["op"], str(message.get("incident"))
        if op == "write":
            entry = message["entry"]
            self.store.incident_write(incident, message["summary"],
                                      [entry] if entry is not None else [])
        elif op == "delete":
            self.store.incident_delete(incident)

    def flush(self) -> bool:
        """Write what is queued, in order; False if the store refused (kept queued)."""
        return self.outbox.flush() and not self._early

    def pending(self) -> int:
        """Entries not written yet (queued, or waiting for the store to be read)."""
        writes = sum(1 for m in self.outbox.pending_messages() if m["op"] != "load")
        with self._lock:
            return writes + len(self._early)

    def close(self, timeout: float = 2.0) -> None:
        """Try to write what is queued (bounded), then stop the writer."""
        self.outbox.close(timeout)
