"""The host registry: ``<root>/hosts/<host>``, persistent, outlives its agent.

It holds the planned-stop mark (written by an agent that stops on purpose,
cleared when it joins again) and the times of the host's recent fences (flap
damping). A controller that starts after a host died still knows the host.
Every write is a compare-and-set merge, and a merge that changes nothing
writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from kazoo import exceptions as kz_exc

from instanceha.coordination import base
from instanceha.coordination.zk_session import ZooKeeperSession, dumps, loads

HOSTS = "hosts"


def record(host: str, raw: bytes | None) -> base.HostRecord:
    """A registry node's data as a HostRecord (bad fields are dropped)."""
    data = loads(raw)
    failures = data.get("failures")
    return base.HostRecord(
        host=host,
        planned_stop=data.get("planned_stop") if isinstance(data.get("planned_stop"), dict)
        else None,
        failures=tuple(f for f in failures if isinstance(f, (int, float))
                       and not isinstance(f, bool)) if isinstance(failures, list) else ())


class HostRegistry:
    def __init__(self, session: ZooKeeperSession) -> None:
        self.session = session
        self.client = session.client

    def path(self, host: str) -> str:
        return self.session.path(HOSTS, host)

    def merge(self, host: str, changes: Mapping[str, object]) -> dict:
        """Compare-and-set merge into the host's entry; no write when nothing changes."""
        path = self.path(host)
        while True:
            try:
                raw, stat = self.client.get(path)
            except kz_exc.NoNodeError:
                try:
                    self.client.create(path, dumps(dict(changes)), makepath=True)
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
            raw, _ = self.client.get(self.path(host))
            failures = loads(raw).get("failures") or []
        except kz_exc.NoNodeError:
            failures = []
        failures = [f for f in failures if isinstance(f, (int, float))][-(keep - 1):] + [at]
        self.merge(host, {"failures": failures})

    def forget(self, host: str) -> None:
        try:
            self.client.delete(self.path(host))
        except kz_exc.NoNodeError:
            pass
