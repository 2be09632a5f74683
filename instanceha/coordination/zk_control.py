"""The operators' control node and the leader's published status.

``<root>/control``  persistent: operator switches (pause, guard override, the
                    leader's safety hold), merged by compare-and-set
``<root>/status``   persistent: the leader's latest view (zlib JSON)
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

from kazoo import exceptions as kz_exc

from instanceha.coordination.zk_session import ZooKeeperSession, dumps, loads

CONTROL = "control"
STATUS = "status"


class ControlNode:
    def __init__(self, session: ZooKeeperSession) -> None:
        self.client = session.client
        self.control_path = session.path(CONTROL)
        self.status_path = session.path(STATUS)

    def read(self, watch=None) -> dict:
        raw, _ = self.client.get(self.control_path, watch=watch)
        return loads(raw)

    def update(self, changes: Mapping[str, object | None]) -> dict:
        self.client.ensure_path(self.control_path)
        while True:
            raw, stat = self.client.get(self.control_path)
            current = loads(raw)
            for key, value in changes.items():
                if value is None:
                    current.pop(key, None)
                else:
                    current[key] = value
            try:
                self.client.set(self.control_path, dumps(current), version=stat.version)
                return current
            except kz_exc.BadVersionError:
                continue  # another operator wrote meanwhile: merge again

    def publish_status(self, status: Mapping[str, object]) -> None:
        data = zlib.compress(dumps(status))
        try:
            self.client.set(self.status_path, data)
        except kz_exc.NoNodeError:
            self.client.create(self.status_path, data, makepath=True)

    def read_status(self) -> Mapping[str, object] | None:
        try:
            raw, _ = self.client.get(self.status_path)
        except kz_exc.NoNodeError:
            return None
        try:
            return loads(zlib.decompress(raw))
        except zlib.error:
            return {"_undecodable": True}
