"""The switches of operators and controllers, and the leader's published status.

``<root>/control/operator``    the operators' switches (pause, guard override,
                               power-off attestations); only the operator and
                               controller identities may write it
``<root>/control/controller``  the controllers' (the leader's persisted safety
                               hold); only controllers may write it
``<root>/status``              the leader's latest view (zlib JSON)

Each identity writes its own node (compare-and-set), so who set a switch is
the authenticated identity ZooKeeper let write that node, not a name the
client claims: the merged view adds it to every dict value as ``identity``
(beside the ``by`` the CLI stamps with the operator's login, which is only a
claim). Controllers may also remove an operator's key (an attestation is
consumed by the fence it allowed).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

from kazoo import exceptions as kz_exc

from instanceha.coordination import credentials
from instanceha.coordination import zk_layout as L
from instanceha.coordination.zk_codec import dumps, loads
from instanceha.coordination.zk_session import ZooKeeperSession

IDENTITY = "identity"
OWNERS = {L.OPERATOR_NODE: credentials.OPERATOR_USER,
          L.CONTROLLER_NODE: credentials.CONTROLLER_USER}


class ControlNode:
    def __init__(self, session: ZooKeeperSession, role: str) -> None:
        self.session = session
        self.client = session.client
        self.role = role
        self.own = L.CONTROLLER_NODE if role == credentials.CONTROLLER else L.OPERATOR_NODE
        self.status_path = session.path(L.STATUS)

    def path(self, node: str) -> str:
        return self.session.path(L.CONTROL, node)

    def read_node(self, node: str, watch=None) -> dict:
        try:
            raw, _ = self.client.get(self.path(node), watch=watch)
        except kz_exc.NoNodeError:
            if watch is not None:
                self.client.exists(self.path(node), watch=watch)
            return {}
        return loads(raw)

    @staticmethod
    def merge(nodes: Mapping[str, Mapping]) -> dict:
        """The effective switches: the controllers' node, then the operators'
        on top; every dict value names the identity whose node holds it."""
        out: dict = {}
        for node in (L.CONTROLLER_NODE, L.OPERATOR_NODE):
            for key, value in (nodes.get(node) or {}).items():
                if key.startswith("_"):
                    continue
                out[key] = dict(value, **{IDENTITY: OWNERS[node]}) \
                    if isinstance(value, dict) else value
        return out

    def read(self, watch=None) -> dict:
        return self.merge({n: self.read_node(n, watch) for n in OWNERS})

    def update(self, changes: Mapping[str, object | None]) -> dict:
        """Set keys in this identity's node; a None removes the key wherever
        this identity may write it. Returns the effective switches."""
        own = {k: v for k, v in changes.items() if v is not None}
        removed = [k for k, v in changes.items() if v is None]
        nodes = [self.own] + ([n for n in OWNERS if n != self.own]
                              if self.role == credentials.CONTROLLER else [])
        for node in nodes:
            self._cas(node, own if node == self.own else {}, removed)
        return self.read()

    def _cas(self, node: str, sets: Mapping[str, object], removed) -> None:
        path = self.path(node)
        while True:
            try:
                raw, stat = self.client.get(path)
            except kz_exc.NoNodeError:
                if not sets:
                    return
                raise
            current = loads(raw)
            new = {k: v for k, v in current.items() if k not in removed}
            new.update(sets)
            if new == current:
                return
            try:
                self.client.set(path, dumps(new), version=stat.version)
                return
            except kz_exc.BadVersionError:
                continue  # another writer meanwhile: merge again

    def publish_status(self, status: Mapping[str, object]) -> None:
        data = zlib.compress(dumps(status))
        try:
            self.client.set(self.status_path, data)
        except kz_exc.NoNodeError:
            self.client.create(self.status_path, data, acl=self.session.acls.acl("tree"))

    def read_status(self) -> Mapping[str, object] | None:
        try:
            raw, _ = self.client.get(self.status_path)
        except kz_exc.NoNodeError:
            return None
        try:
            return loads(zlib.decompress(raw))
        except zlib.error:
            return {"_undecodable": True}
