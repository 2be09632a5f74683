"""The host registry, controller side: slots, their provisioning, fence history.

``<root>/hosts/<host>`` (the slot) is made by a controller with an ACL that
grants that host's agent identity, and nobody else, the right to write it and
to create nodes in it: the agent's membership, its planned-stop mark, its
guest failures. A slot whose agent never joined (no ``first_join``) is
provisioned but not monitored: nothing is concluded from its silence.
``<root>/history/<host>`` holds the host's recent fence times (flap damping),
written by the leader only. Every write is a compare-and-set merge, and a merge
that changes nothing writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from kazoo import exceptions as kz_exc

from instanceha.coordination import base, credentials
from instanceha.coordination import zk_layout as L
from instanceha.coordination.zk_codec import dumps, loads
from instanceha.coordination.zk_session import ZooKeeperSession


def planned_stop(data: Mapping) -> Mapping | None:
    value = data.get("planned_stop")
    return value if isinstance(value, dict) else None


def failures(data: Mapping) -> tuple[float, ...]:
    value = data.get("failures")
    if not isinstance(value, list):
        return ()
    return tuple(f for f in value if isinstance(f, (int, float)) and not isinstance(f, bool))


def record(host: str, slot: Mapping, history: Mapping | None = None) -> base.HostRecord:
    """A slot's data (and the host's history) as a HostRecord (bad fields dropped)."""
    return base.HostRecord(host=host, planned_stop=planned_stop(slot),
                           failures=failures(history or {}))


class HostRegistry:
    def __init__(self, session: ZooKeeperSession) -> None:
        self.session = session
        self.client = session.client

    def slot(self, host: str) -> str:
        return self.session.path(L.HOSTS, host)

    def history(self, host: str) -> str:
        return self.session.path(L.HISTORY, host)

    def provision(self, host: str) -> bool:
        """Create the host's slot (its agent may then join); True if created."""
        credentials.check_host(host)
        try:
            self.client.create(self.slot(host), b"",
                               acl=self.session.acls.acl("slot", host))
            return True
        except kz_exc.NodeExistsError:
            return False

    def provisioned(self) -> list[str]:
        return sorted(self.client.get_children(self.session.path(L.HOSTS)))

    def _merge(self, path: str, changes: Mapping[str, object], kind: str) -> dict:
        while True:
            try:
                raw, stat = self.client.get(path)
            except kz_exc.NoNodeError:
                try:
                    self.client.create(path, dumps(dict(changes)),
                                       acl=self.session.acls.acl(kind))
                    return dict(changes)
                except kz_exc.NodeExistsError:
                    continue
            data = loads(raw)
            if all(data.get(k) == v for k, v in changes.items()):
                return data
            data.update(changes)
            try:
                self.client.set(path, dumps(data), version=stat.version)
                return data
            except kz_exc.BadVersionError:
                continue

    def record_failure(self, host: str, at: float, keep: int = 10) -> None:
        try:
            raw, _ = self.client.get(self.history(host))
            past = list(failures(loads(raw)))
        except kz_exc.NoNodeError:
            past = []
        self._merge(self.history(host), {"failures": past[-(keep - 1):] + [at]}, "tree")

    def forget(self, host: str) -> None:
        """Remove the host's slot (with whatever is left in it) and its history."""
        for path in (self.slot(host), self.history(host)):
            try:
                self.client.delete(path, recursive=True)
            except kz_exc.NoNodeError:
                pass
