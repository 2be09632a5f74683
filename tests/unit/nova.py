"""The one Nova of the unit tests: ``NovaClient``'s methods over an in-memory cloud.

Every public method of ``instanceha.compute.nova.NovaClient`` is here with the
same signature, and nothing else is (``test_nova_fake.py`` checks both ways),
so a fake cannot drift from what it imitates. State, all public:

* ``svc``: host -> ``ComputeService``; ``servers``: id -> ``Server``;
  ``migrations``: the evacuation records; ``aggregates``: host -> names;
  ``actions``: server id -> ``InstanceAction`` list; ``images``: id -> properties;
* ``calls``: the calls that change Nova, in order, as ``(method, *positional
  arguments)`` (the keyword ones' values too with ``record_keywords``); ``log``
  is the same list (a test passes one shared with its fake fencer and
  verifier, to read the order of every call); ``reads``: the names of the
  calls that only read (with ``record_reads`` they go to ``calls`` too);
* ``errors``: raised, one per call, by the next calls that change Nova (a
  refused call is not recorded); ``answers[method]``: what the next calls of
  ``method`` return (an exception is raised), one each, the last one kept.

``on_read`` runs at each ``services()`` (a test can look at what holds a lock
then); ``enable_only_reserved`` makes ``enable`` refuse any host but a disabled
reserved spare (the placement tests).
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable, Iterable

from instanceha.compute import exceptions as exc
from instanceha.compute.model import ComputeService, InstanceAction, Migration, Server
from instanceha.engine import marker as mk
from instanceha.engine.instance_policy import InstanceFacts

_MISSING = object()


def _recorded(kind: str):
    """Record each call as ``(method, *positional arguments)`` (``kind``: "write"
    goes to ``calls``; "read" to ``reads``, and to ``calls`` with
    ``record_reads``), then answer from ``answers`` if scripted, else run."""

    def wrap(method):
        @functools.wraps(method)
        def recorded(self, *args, **kwargs):
            name = method.__name__
            with self.lock:
                error = self.errors.pop(0) if kind == "write" and self.errors else None
            if error is not None:
                raise error  # refused: not recorded
            with self.lock:
                if kind == "read":
                    self.reads.append(name)
                if kind == "write" or self.record_reads:
                    given = kwargs.values() if self.record_keywords else ()
                    self.calls.append((name, *args, *given))
                queue = self.answers.get(name)
                answer = (queue.pop(0) if len(queue) > 1 else queue[0]) if queue else _MISSING
            if isinstance(answer, Exception):
                raise answer
            if answer is not _MISSING:
                return answer
            return method(self, *args, **kwargs)

        return recorded

    return wrap


reads, writes = _recorded("read"), _recorded("write")


class FakeNova:
    def __init__(self, services: Iterable[ComputeService] = (), servers: Iterable[Server] = (),
                 migrations: Iterable[Migration] = (), aggregates=None, log: list | None = None,
                 on_read: Callable[[], None] | None = None, enable_only_reserved=False,
                 record_reads=False, record_keywords=False) -> None:
        self.svc = {s.host: s for s in services}
        self.servers = {s.id: s for s in servers}
        self.migrations = list(migrations)
        self.aggregates = dict(aggregates or {})
        self.addresses: dict[str, str] = {}
        """host -> its management address (the hypervisor's host_ip)."""
        self.actions: dict[str, list[InstanceAction]] = {}
        self.images: dict[str, dict[str, object]] = {}
        self.calls = self.log = log if log is not None else []
        self.reads: list[str] = []
        self.errors: list[Exception] = []
        self.answers: dict[str, list] = {}
        self.on_read = on_read
        self.enable_only_reserved = enable_only_reserved
        self.record_reads = record_reads
        self.record_keywords = record_keywords
        self.lock = threading.RLock()

    def set_service(self, host: str, **changes) -> ComputeService:
        with self.lock:
            self.svc[host] = dataclasses.replace(self.svc[host], **changes)
            return self.svc[host]

    def _change(self, server_id: str, **changes) -> None:
        with self.lock:
            if server_id in self.servers:
                self.servers[server_id] = dataclasses.replace(self.servers[server_id], **changes)

    # -- services ---------------------------------------------------------------------
    @reads
    def services(self, host: str | None = None) -> list[ComputeService]:
        with self.lock:
            found = [s for s in self.svc.values() if host in (None, s.host)]
        if self.on_read is not None:
            self.on_read()
        return found

    @reads
    def service(self, host: str) -> ComputeService:
        with self.lock:
            return self.svc[host]

    @writes
    def force_down(self, host: str, reason: str | None = None) -> ComputeService:
        changes = {"status": "disabled", "disabled_reason": reason} if reason is not None else {}
        return self.set_service(host, forced_down=True, **changes)

    @writes
    def disable(self, host: str, reason: str) -> ComputeService:
        return self.set_service(host, status="disabled", disabled_reason=reason)

    @writes
    def enable(self, host: str, unset_forced_down: bool = True) -> ComputeService:
        if self.enable_only_reserved:  # the placement tests: only spares are enabled
            with self.lock:
                m = self.svc[host].marker
                assert self.svc[host].disabled, f"{host} enabled twice"
                assert m is not None and m.state is mk.MarkerState.RESERVED, host
        changes = {"forced_down": False} if unset_forced_down else {}
        return self.set_service(host, status="enabled", disabled_reason=None, **changes)

    @writes
    def unset_forced_down(self, host: str) -> ComputeService:
        return self.set_service(host, forced_down=False)

    # -- servers ----------------------------------------------------------------------
    @reads
    def servers_on_host(self, host: str) -> list[Server]:
        with self.lock:
            return [s for s in self.servers.values() if s.host == host]

    @reads
    def server(self, server_id: str) -> Server:
        with self.lock:
            if server_id not in self.servers:
                raise exc.NovaNotFound(operation="show", status=404, reason="not found")
            return self.servers[server_id]

    @writes
    def evacuate(self, server_id: str, host: str | None = None) -> None:
        pass

    @writes
    def reset_state(self, server_id: str, state: str = "active") -> None:
        self._change(server_id, vm_state=state, task_state=None, status=state.upper(),
                     fault=None)

    @writes
    def stop(self, server_id: str) -> None:
        self._change(server_id, vm_state="stopped", status="SHUTOFF")

    @writes
    def reboot(self, server_id: str, hard: bool = True) -> None:
        pass

    @writes
    def start(self, server_id: str) -> None:
        pass

    @reads
    def instance_actions(self, server_id: str) -> list[InstanceAction]:
        with self.lock:
            return list(self.actions.get(server_id, []))

    @reads
    def evacuations(self, server_id: str | None = None, source_host: str | None = None,
                    changes_since=None) -> list[Migration]:
        with self.lock:
            return list(self.migrations)

    # -- aggregates, images, policy facts ------------------------------------------------
    @reads
    def aggregates_of(self, host: str) -> dict[str, dict[str, str]]:
        with self.lock:
            return {name: {} for name in self.aggregates.get(host, ())}

    @reads
    def host_addresses(self) -> dict[str, str]:
        with self.lock:
            return dict(self.addresses)

    @reads
    def host_aggregates(self, fresh: bool = True) -> dict[str, frozenset[str]]:
        with self.lock:
            return {h: frozenset(a) for h, a in self.aggregates.items()}

    @reads
    def image_properties(self, image_id: str) -> dict[str, object]:
        with self.lock:
            return dict(self.images.get(image_id, {}))

    @reads
    def instance_facts(self, servers: Iterable[Server], host: str,
                       enough: Callable[[InstanceFacts], bool] | None = None
                       ) -> dict[str, InstanceFacts]:
        return {s.id: InstanceFacts(server_metadata=s.metadata) for s in servers}
