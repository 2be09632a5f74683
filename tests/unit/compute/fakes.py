"""A scripted Nova for the Evacuator's unit tests (no HTTP, no clock)."""

from __future__ import annotations

import dataclasses

from instanceha.compute import exceptions as exc
from instanceha.compute.model import Migration, Server
from tests.unit import nova


def server(sid, host="dead", vm_state="active", task_state=None, status=None, **kw):
    status = status or {"active": "ACTIVE", "stopped": "SHUTOFF", "error": "ERROR"}.get(
        vm_state, vm_state.upper())
    return Server(id=sid, name=f"vm-{sid}", status=status, vm_state=vm_state,
                  task_state=task_state, host=host, project_id="p", locked=False,
                  metadata={}, flavor_extra_specs={}, image_id="img", availability_zone="nova",
                  **kw)


@dataclasses.dataclass
class Script:
    polls_to_finish: int = 2  # reads (of the server or the records) until an evacuation lands
    conflicts: int = 0  # 409s before evacuate is accepted
    no_valid_host: int = 0  # evacuations that fail with NoValidHost
    fail_migration: int = 0  # evacuations whose migration ends 'error' (no fault)
    never_finishes: bool = False
    lost_answers: int = 0  # evacuations accepted whose answer is lost (a read timeout)
    queued_reads: int = 0  # a lost-answer evacuate nova-api acts on only after this many reads
    dropped: int = 0  # evacuate requests lost before they reached Nova (no answer, no effect)
    dest: str = "spare"


class FakeNova(nova.FakeNova):
    """The one Nova (tests/unit/nova.py) running evacuations by ``Script``:
    every call, reads included, in ``calls``."""

    def __init__(self, servers, scripts=None):
        super().__init__(servers=servers, record_reads=True)
        self.scripts = scripts or {}
        self.inflight = 0
        self.max_inflight = 0
        self._pending: dict[str, list] = {}  # sid -> [migration index, polls left]
        self._queued: dict[str, Script] = {}  # sid -> an evacuate nova-api has not acted on

    def _script(self, sid):
        return self.scripts.setdefault(sid, Script())

    # -- the NovaClient surface the Evacuator uses --------------------------------

    def server(self, server_id):
        sid = server_id
        with self.lock:
            self.calls.append(("server", sid))
            self._advance(sid)
            return self.servers[sid]

    def evacuations(self, server_id=None, source_host=None, changes_since=None):
        sid = server_id
        with self.lock:
            self.calls.append(("evacuations", sid, source_host))
            for queued, sc in list(self._queued.items()):
                sc.queued_reads -= 1
                if sc.queued_reads <= 0:
                    del self._queued[queued]
                    self._accept(queued)
            for pending in list(self._pending):
                if sid in (None, pending):
                    self._advance(pending)
            # as Nova: changes-since filters on updated_at, which a record only
            # gets at its first update (a just-accepted one has none)
            return sorted((m for m in self.migrations if sid in (None, m.instance_uuid)
                           and source_host in (None, m.source_compute)
                           and (changes_since is None or m.updated_at is not None)),
                          key=lambda m: m.id, reverse=True)

    def reset_state(self, server_id, state="active"):
        sid = server_id
        with self.lock:
            self.calls.append(("reset_state", sid, state))
            s = self.servers[sid]
            self.servers[sid] = dataclasses.replace(
                s, vm_state=state, task_state=None, status=state.upper(), fault=None)

    def stop(self, server_id):
        sid = server_id
        with self.lock:
            self.calls.append(("stop", sid))
            s = self.servers[sid]
            self.servers[sid] = dataclasses.replace(s, vm_state="stopped", status="SHUTOFF")

    def evacuate(self, server_id, host=None):
        sid = server_id
        with self.lock:
            self.calls.append(("evacuate", sid, host))
            sc = self._script(sid)
            if sc.conflicts:
                sc.conflicts -= 1
                raise exc.NovaConflict(operation="evacuate", status=409, reason="still in use")
            if sc.dropped:
                sc.dropped -= 1
                raise exc.NovaUnavailable(operation=f"evacuate {sid}", reason="ConnectTimeout")
            if sc.queued_reads:  # the answer is lost and nova-api acts on it later
                self._queued[sid] = sc
                raise exc.NovaUnavailable(operation=f"evacuate {sid}", reason="ReadTimeout")
            self._accept(sid)
            if sc.lost_answers:
                sc.lost_answers -= 1
                raise exc.NovaUnavailable(operation=f"evacuate {sid}", reason="ReadTimeout")

    def _accept(self, sid):
        sc = self._script(sid)
        s = self.servers[sid]
        if s.task_state is not None:  # as Nova's check_instance_state
            raise exc.NovaConflict(operation="evacuate", status=409,
                                   reason=f"task_state {s.task_state}")
        mig = Migration(id=len(self.migrations) + 1, uuid=None, instance_uuid=sid,
                        migration_type="evacuation", status="accepted",
                        source_compute=s.host, dest_compute=None, created_at=None,
                        updated_at=None)
        self.migrations.append(mig)
        self.servers[sid] = dataclasses.replace(s, task_state="rebuilding", status="REBUILD")
        self._pending[sid] = [len(self.migrations) - 1, sc.polls_to_finish]
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)

    # -- simulation --------------------------------------------------------------

    def _set_migration(self, index, **changes):
        changes.setdefault("updated_at", "updated")
        self.migrations[index] = dataclasses.replace(self.migrations[index], **changes)

    def _advance(self, sid):
        if sid not in self._pending:
            return
        sc = self._script(sid)
        index, left = self._pending[sid]
        if sc.never_finishes:
            return
        if left > 0:
            self._pending[sid][1] -= 1
            return
        del self._pending[sid]
        self.inflight -= 1
        s = self.servers[sid]
        if sc.no_valid_host or sc.fail_migration:
            fault = None
            if sc.no_valid_host:
                sc.no_valid_host -= 1
                fault = "No valid host was found. There are not enough hosts available."
            else:
                sc.fail_migration -= 1
            self._set_migration(index, status="error")
            self.servers[sid] = dataclasses.replace(s, vm_state="error", status="ERROR",
                                                    task_state=None, fault=fault)
            return
        self._set_migration(index, status="done", dest_compute=sc.dest)
        # at microversion 2.94 a stopped server comes back stopped, others active
        status = "SHUTOFF" if s.vm_state == "stopped" else "ACTIVE"
        self.servers[sid] = dataclasses.replace(
            s, host=sc.dest, task_state=None, status=status,
            vm_state="stopped" if status == "SHUTOFF" else "active")
