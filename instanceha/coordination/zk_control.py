"""The switches of operators and controllers, and the leader's published status.

``<root>/control/operator``    the operators' switches (pause, guard override,
                               power-off attestations); only the operator and
                               controller identities may write it
``<root>/control/controller``  the controllers' (the leader's persisted safety
                               hold); only controllers may write it
``<root>/status``              the leader's latest view: a summary (zlib JSON)
``<root>/status/hosts-<g>-<i>`` the per-host part of publication ``g``, in chunks

Each identity writes its own node (compare-and-set), so who set a switch is
the authenticated identity ZooKeeper let write that node, not a name the
client claims: the merged view adds it to every dict value as ``identity``
(beside the ``by`` the CLI stamps with the operator's login, which is only a
claim). Controllers may also remove an operator's key (an attestation is
consumed by the fence it allowed).

The status grows with the cloud (about 490 bytes of JSON per host) and a
ZooKeeper node holds less than 1 MB (``jute.maxbuffer``, which bounds every
request too, a transaction included), so its per-host part is stored in
chunks of at most ``CHUNK_BYTES`` of JSON each (compressed, never more than
that plus a few bytes: below the limit whatever the data). A publication
creates its chunks (new, immutable nodes named by a fresh generation), then
in one transaction checks they all exist, points the summary at them and
deletes the chunks of earlier publications: a reader that read the summary
and then every chunk it names has one publication, whole; a chunk gone
meanwhile means a newer publication replaced it, and the reader starts
again.
"""

from __future__ import annotations

import json
import secrets
import zlib
from collections.abc import Mapping, Sequence

from kazoo import exceptions as kz_exc

from instanceha import exceptions
from instanceha.coordination import credentials
from instanceha.coordination import zk_layout as L
from instanceha.coordination.zk_codec import dumps, loads
from instanceha.coordination.zk_session import ZooKeeperSession

IDENTITY = "identity"
CHUNK_BYTES = 768 * 1024
"""JSON bytes of hosts per status chunk: compressed, a chunk stays below
ZooKeeper's 1 MB node limit even for data zlib cannot shrink."""
CHUNKS = "_chunks"
"""The summary's key naming the chunks of its publication."""
READ_TRIES = 5
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
        summary, chunks = split_status(status, CHUNK_BYTES)
        inline = not isinstance(status.get("hosts"), Mapping)
        for _ in range(READ_TRIES):
            gen = secrets.token_hex(4)
            names = [L.status_chunk(gen, i) for i in range(len(chunks))]
            acl = self.session.acls.acl("tree")
            pending = [self.client.create_async(f"{self.status_path}/{n}", zlib.compress(c),
                                                acl=acl)
                       for n, c in zip(names, chunks, strict=True)]
            try:
                for result in pending:
                    result.get()
            except kz_exc.NodeExistsError:
                continue  # another publication drew the same generation: draw again
            except kz_exc.NoNodeError:
                self._create_summary()
                continue
            data = zlib.compress(dumps(summary if inline else dict(summary, **{CHUNKS: names})))
            if self._switch(data, names):
                return
        raise exceptions.CoordinatorUnavailable(
            where=self.session.where,
            reason=f"the status could not be published in {READ_TRIES} tries (another "
                   "controller publishing at the same time?)")

    def _create_summary(self) -> None:
        try:
            self.client.create(self.status_path, b"", acl=self.session.acls.acl("tree"))
        except kz_exc.NodeExistsError:
            pass

    def _switch(self, data: bytes, names: Sequence[str]) -> bool:
        """One transaction: the new chunks exist, the summary names them, every
        other chunk goes. False when another writer changed the chunks meanwhile."""
        try:
            old = [c for c in self.client.get_children(self.status_path) if c not in names]
        except kz_exc.NoNodeError:  # the first publication under this root
            self._create_summary()
            return False
        tx = self.client.transaction()
        for n in names:
            tx.check(f"{self.status_path}/{n}", 0)
        tx.set_data(self.status_path, data)
        for n in old:
            tx.delete(f"{self.status_path}/{n}")
        results = tx.commit()
        failed = [r for r in results if isinstance(r, Exception)
                  and not isinstance(r, kz_exc.RolledBackError)]
        if not failed:
            return True
        if isinstance(failed[0], kz_exc.NoNodeError):
            return False  # one of ours or of the old chunks went meanwhile: again
        raise failed[0]

    def read_status(self) -> Mapping[str, object] | None:
        """The latest publication, whole (its summary and every chunk it names)."""
        for _ in range(READ_TRIES):
            try:
                raw, _ = self.client.get(self.status_path)
            except kz_exc.NoNodeError:
                return None
            summary = _inflate(raw)
            names = summary.pop(CHUNKS, None)
            if not isinstance(names, list):
                return summary  # a summary with its hosts inline (or undecodable)
            pending = [self.client.get_async(f"{self.status_path}/{n}") for n in names]
            try:
                chunks = [_inflate(r.get()[0]) for r in pending]
            except kz_exc.NoNodeError:
                continue  # a newer publication replaced it meanwhile: read that one
            return join_status(summary, chunks)
        raise exceptions.CoordinatorUnavailable(
            where=self.session.where,
            reason=f"the status changed {READ_TRIES} times while it was being read; "
                   "try again")


def _inflate(raw: bytes | None) -> dict:
    if not raw:
        return {}
    try:
        return loads(zlib.decompress(raw))
    except zlib.error:
        return {"_undecodable": True}


def split_status(status: Mapping[str, object],
                 chunk_bytes: int) -> tuple[dict, list[bytes]]:
    """The status without its hosts, and its hosts as JSON chunks of at most
    ``chunk_bytes`` each (in host order; a host whose own entry is larger gets
    a chunk of its own). Encoded as ``zk_codec.dumps`` would encode them. A
    status without a ``hosts`` mapping is all summary, no chunk."""
    hosts = status.get("hosts")
    if not isinstance(hosts, Mapping):
        return dict(status), []  # nothing per host: the summary is the whole
    summary = {k: v for k, v in status.items() if k != "hosts"}
    head, tail = b'{"hosts":{', b"}}"
    chunks: list[bytes] = []
    pieces: list[bytes] = []
    size = len(head) + len(tail)
    for host in sorted(hosts):
        piece = json.dumps(host).encode() + b":" + dumps(hosts[host])
        if pieces and size + 1 + len(piece) > chunk_bytes:
            chunks.append(head + b",".join(pieces) + tail)
            pieces, size = [], len(head) + len(tail)
        size += len(piece) + (1 if pieces else 0)
        pieces.append(piece)
    if pieces or not chunks:
        chunks.append(head + b",".join(pieces) + tail)
    return summary, chunks


def join_status(summary: Mapping[str, object], chunks: Sequence[Mapping]) -> dict:
    hosts: dict = {}
    for chunk in chunks:
        part = chunk.get("hosts")
        if isinstance(part, dict):
            hosts.update(part)
    return dict(summary, hosts=hosts)
