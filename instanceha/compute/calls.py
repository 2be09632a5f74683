"""Every OpenStack API request the controller makes, accounted for.

Three views of the same requests:

* totals by service, method, path template and status, with their seconds
  (``/metrics``: ``instanceha_api_requests_total``, ``..._seconds_total``);
* per scope: the recovery of one host counts the requests made for it, in
  its own thread and in every thread it hands work to (``submit``), so the
  incident journal can say how many calls a recovery cost;
* the requests in flight, with their scope and age: what a recovery is
  waiting on (``instanceha status``).

``NovaClient`` reports to it (``begin`` before a request, ``end`` after); the
scope travels in a context variable, copied into pool threads by ``submit``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import itertools
import re
import threading
import urllib.parse
from collections.abc import Callable

from instanceha.clock import SYSTEM, Clock

_SCOPE: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "instanceha_api_scope", default=None)

# a path segment that names one object: a UUID, a number, a long hex id
_ID = re.compile(r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                 r"[0-9a-fA-F]{12}|\d+|[0-9a-fA-F]{32,})$")


def template(url: str) -> str:
    """``/servers/5f1c.../action?x=1`` -> ``/servers/{id}/action``: the query
    dropped, object ids replaced (bounded label values, no host names)."""
    path = urllib.parse.urlsplit(url).path or "/"
    return "/".join("{id}" if _ID.match(seg) else seg for seg in path.split("/"))


def submit(pool: concurrent.futures.Executor, fn: Callable, *args, **kwargs):
    """``pool.submit`` that keeps the caller's scope in the worker thread."""
    return pool.submit(contextvars.copy_context().run, fn, *args, **kwargs)


def current_scope() -> str | None:
    return _SCOPE.get()


@dataclasses.dataclass(frozen=True)
class InFlight:
    scope: str | None
    service: str
    method: str
    path: str
    started: float

    def describe(self, now: float) -> str:
        return f"{self.service} {self.method} {self.path} for {now - self.started:.1f} s"


class ApiCalls:
    """Thread-safe counters of the API requests (see the module's doc)."""

    def __init__(self, clock: Clock = SYSTEM) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.totals: collections.Counter[tuple[str, str, str, str]] = collections.Counter()
        self.seconds: collections.defaultdict[tuple[str, str, str], float] = \
            collections.defaultdict(float)
        self._scopes: collections.Counter[str] = collections.Counter()
        self._inflight: dict[int, InFlight] = {}

    @contextlib.contextmanager
    def scope(self, name: str):
        """Count the requests made inside (this thread and ``submit``ted work)
        against ``name``."""
        token = _SCOPE.set(name)
        try:
            yield
        finally:
            _SCOPE.reset(token)

    def restart(self, name: str) -> None:
        """A new incident for ``name``: its count starts again from zero."""
        with self._lock:
            self._scopes.pop(name, None)

    def count(self, name: str) -> int:
        """Requests made in scope ``name`` since its last ``restart``."""
        with self._lock:
            return self._scopes.get(name, 0)

    # -- NovaClient's side -------------------------------------------------------
    def begin(self, service: str, method: str, url: str) -> int:
        call = InFlight(_SCOPE.get(), service, method.upper(), template(url),
                        self.clock.monotonic())
        with self._lock:
            n = next(self._ids)
            self._inflight[n] = call
        return n

    def end(self, handle: int, status: int | None) -> None:
        """``status`` None: no answer (timeout, connection refused)."""
        now = self.clock.monotonic()
        with self._lock:
            call = self._inflight.pop(handle, None)
            if call is None:
                return
            key = (call.service, call.method, call.path)
            self.totals[key + ("none" if status is None else str(status),)] += 1
            self.seconds[key] += now - call.started
            if call.scope is not None:
                self._scopes[call.scope] += 1

    # -- readers -----------------------------------------------------------------
    def in_flight(self, scope: str | None = None) -> list[InFlight]:
        """Requests not answered yet, oldest first (of ``scope`` only if given)."""
        with self._lock:
            calls = list(self._inflight.values())
        return sorted((c for c in calls if scope is None or c.scope == scope),
                      key=lambda c: c.started)

    def waiting_on(self, scope: str, longer_than: float = 1.0) -> str | None:
        """The oldest request of ``scope`` unanswered for ``longer_than`` seconds,
        described (``compute GET /os-migrations for 4.2 s``), or None."""
        now = self.clock.monotonic()
        for call in self.in_flight(scope):
            if now - call.started >= longer_than:
                return call.describe(now)
        return None

    def snapshot(self) -> tuple[dict, dict]:
        """(totals by (service, method, path, status), seconds by (service,
        method, path)), copies."""
        with self._lock:
            return dict(self.totals), dict(self.seconds)
