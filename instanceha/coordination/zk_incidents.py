"""The incident journal's storage in ZooKeeper.

Layout under ``<root>/incidents``::

    <root>/incidents/<incident id>            data: the summary (JSON)
    <root>/incidents/<incident id>/e-0000000007   data: one entry (JSON), in order

Entries are sequential children: appending never rewrites what is there, so
an entry written by a leader that then died stays, and the next leader's
entries follow it. A summary is a few hundred bytes and an entry well under
ZooKeeper's 1 MB node limit (long texts are cut at the writer).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from kazoo import exceptions as kz_exc

from instanceha import exceptions
from instanceha.coordination.zk_codec import dumps as _dumps
from instanceha.coordination.zk_codec import loads as _loads

ENTRY_PREFIX = "e-"


class ZooKeeperIncidentStore:
    """Written by the leader only (ACL kind ``tree``: operators read)."""

    def __init__(self, client, path: str, acl: Callable[[], list]) -> None:
        self.client = client
        self.path = path
        self.acl = acl

    def _node(self, incident_id: str) -> str:
        if not incident_id or "/" in incident_id or incident_id in (".", ".."):
            raise exceptions.IncidentNotFound(incident_id=incident_id)
        return f"{self.path}/{incident_id}"

    def write(self, incident_id: str, summary: Mapping[str, object],
              entries: Sequence[Mapping[str, object]] = ()) -> None:
        node = self._node(incident_id)
        data = _dumps(summary)
        try:
            self.client.set(node, data)
        except kz_exc.NoNodeError:
            try:
                self.client.create(node, data, acl=self.acl())
            except kz_exc.NodeExistsError:
                self.client.set(node, data)
        if entries:
            tx = self.client.transaction()
            for entry in entries:
                tx.create(f"{node}/{ENTRY_PREFIX}", _dumps(entry), acl=self.acl(),
                          sequence=True)
            results = tx.commit()
            failed = [r for r in results if isinstance(r, Exception)]
            if failed:
                raise failed[0]

    def summaries(self) -> dict[str, Mapping[str, object]]:
        try:
            names = self.client.get_children(self.path)
        except kz_exc.NoNodeError:
            return {}
        pending = {n: self.client.get_async(f"{self.path}/{n}") for n in names}
        out: dict[str, Mapping[str, object]] = {}
        for name, result in pending.items():
            try:
                raw, _ = result.get()
            except kz_exc.NoNodeError:
                continue  # pruned meanwhile
            out[name] = _loads(raw)
        return out

    def entries(self, incident_id: str) -> list[Mapping[str, object]]:
        node = self._node(incident_id)
        try:
            names = sorted(n for n in self.client.get_children(node)
                           if n.startswith(ENTRY_PREFIX))
        except kz_exc.NoNodeError:
            raise exceptions.IncidentNotFound(incident_id=incident_id)
        pending = [self.client.get_async(f"{node}/{n}") for n in names]
        out: list[Mapping[str, object]] = []
        for result in pending:
            try:
                raw, _ = result.get()
            except kz_exc.NoNodeError:
                continue
            out.append(_loads(raw))
        return out

    def delete(self, incident_id: str) -> None:
        try:
            self.client.delete(self._node(incident_id), recursive=True)
        except kz_exc.NoNodeError:
            pass
