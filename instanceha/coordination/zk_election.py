"""Leader election and the fencing token, on ZooKeeper.

``<root>/election/c-<seq>``: ephemeral sequential candidates; the lowest
leads, and its czxid is the fencing token (a newer term always has a larger
one). ``is_leader()`` turns False from kazoo's thread the moment the session
is suspended or lost (kazoo's Lock recipe, and so tooz, does not), and
``verify()`` re-checks with a round trip before every action.
"""

from __future__ import annotations

import threading

from kazoo import exceptions as kz_exc

from instanceha import exceptions
from instanceha.coordination import base
from instanceha.coordination.zk_layout import ELECTION
from instanceha.coordination.zk_session import TRANSIENT, ZooKeeperSession


class ZooKeeperLeadership(base.Leadership):
    """Lowest ephemeral-sequential candidate leads; its czxid is the token."""

    def __init__(self, session: ZooKeeperSession, candidate_id: str) -> None:
        self.session = session
        self.client = session.client
        self.candidate_id = candidate_id
        self._dir = session.path(ELECTION)
        self._node: str | None = None
        self._session: int | None = None
        self._token: int | None = None
        self._leader_flag = threading.Event()
        self._leader_id: str | None = None
        self._dirty = True
        self._resigned = False
        session.add_state_listener(self._on_state)

    def _on_state(self, state: base.ConnectionState) -> None:
        if state is not base.ConnectionState.CONNECTED:
            self._leader_flag.clear()
            self._leader_id = None  # unknown until re-read with a live session
        self._dirty = True

    def _on_children(self, event) -> None:
        self._dirty = True

    def is_leader(self) -> bool:
        return self._leader_flag.is_set() and self.session.connected

    @property
    def token(self) -> int | None:
        return self._token if self.is_leader() else None

    def leader(self) -> str | None:
        return self._leader_id

    def ensure(self) -> None:
        if self._resigned or not self.session.connected:
            self._leader_flag.clear()
            return
        sid = self.session.session_id
        try:
            if self._node is None or self._session != sid:
                self._leader_flag.clear()
                self._node = self.client.create(
                    self._dir + "/c-",
                    self.candidate_id.encode(),
                    acl=self.session.acls.acl("tree"),
                    ephemeral=True,
                    sequence=True,
                )
                self._session = sid
                self._dirty = True
            if self._dirty:
                self._dirty = False
                self._evaluate(watch=True)
        except TRANSIENT:
            self._leader_flag.clear()
            self._dirty = True

    def _evaluate(self, watch: bool) -> bool:
        children = sorted(
            self.client.get_children(self._dir, watch=self._on_children if watch else None)
        )
        mine = self._node.rsplit("/", 1)[1] if self._node else None
        if mine not in children:
            self._leader_flag.clear()
            self._node = None  # our candidate vanished: re-enter at next ensure()
            self._dirty = True
            return False
        first = self._dir + "/" + children[0]
        try:
            raw, stat = self.client.get(first)
            self._leader_id = raw.decode(errors="replace")
        except kz_exc.NoNodeError:
            self._dirty = True
            return False
        if children[0] == mine:
            self._token = stat.czxid
            self._leader_flag.set()
            return True
        self._leader_flag.clear()
        return False

    def verify(self) -> int:
        if not self.is_leader():
            raise exceptions.NotLeader(reason="leadership flag is down (session not connected)")
        try:
            self.client.sync(self._dir)  # a round trip: fails at once on an expired session
            if self.session.session_id != self._session:
                raise exceptions.NotLeader(reason="the session changed since the election")
            if not self._evaluate(watch=False):
                raise exceptions.NotLeader(reason=f"{self._leader_id} leads now")
        except kz_exc.KazooException as e:
            self._leader_flag.clear()
            self._dirty = True
            raise exceptions.NotLeader(reason=f"coordinator round trip failed: {type(e).__name__}")
        if self._token is None:  # _evaluate() sets it whenever it finds this candidate first
            raise exceptions.NotLeader(reason="no fencing token for this term")
        return self._token

    def resign(self) -> None:
        self._resigned = True
        self._leader_flag.clear()
        if self._node is not None and self.session.connected:
            try:
                self.client.delete(self._node)
            except kz_exc.NoNodeError:
                pass
        self._node = None
