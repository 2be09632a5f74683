"""The agent's membership: ``<root>/members/<host>``, ephemeral.

The member node lives as long as the agent's session: its czxid is the
*incarnation* (new at every join), its data the agent's capabilities
(version, boot id, local services, its liveness mode and the session timeout
ZooKeeper granted it). With ``liveness = session`` (the default) that is all
the agent writes, and only when something changes; its liveness is the
session itself, kept alive by kazoo's pings, which the connected server
answers without a quorum write. The agent's loop watchdog adds
``stalled_for`` while its main loop is stalled and ends the session when the
stall passes ``hung_after`` (``instanceha.agent.watchdog``).

With ``liveness = heartbeat`` (the mechanism before, kept for rolling
upgrades and comparisons) the agent also writes ``<root>/heartbeats/<host>``
(ephemeral) from its main loop every interval.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from kazoo import exceptions as kz_exc

from instanceha import exceptions
from instanceha.coordination import base
from instanceha.coordination.zk_hosts import HostRegistry
from instanceha.coordination.zk_session import ZooKeeperSession, dumps

LOG = logging.getLogger(__name__)

MEMBERS = "members"
HEARTBEATS = "heartbeats"


class Membership:
    """One agent's membership (the agent side of the coordinator)."""

    def __init__(self, session: ZooKeeperSession, registry: HostRegistry) -> None:
        self.session = session
        self.client = session.client
        self.registry = registry
        self.member_id: str | None = None
        self.capabilities: dict = {}
        self.incarnation: int | None = None
        self._joined_session: int | None = None
        self._stalled_for: float | None = None
        self.write_errors = 0

    def _member_path(self) -> str:
        return self.session.path(MEMBERS, self.member_id)

    def _data(self) -> bytes:
        data = dict(self.capabilities)
        if self._stalled_for is not None:
            data[base.STALLED_FOR] = self._stalled_for
        return dumps(data)

    def heartbeat_mode(self) -> bool:
        return self.capabilities.get(base.LIVENESS) == base.HEARTBEAT

    def join(self, member_id: str, capabilities: Mapping[str, object]) -> int:
        self.member_id = member_id
        self.capabilities = dict(capabilities)
        granted = self.session.granted_session_timeout
        if granted is not None:
            self.capabilities[base.SESSION_TIMEOUT] = granted
        self._stalled_for = None
        sid = self.session.session_id
        if sid is None:
            raise exceptions.CoordinatorUnavailable(where=self.session.where,
                                                    reason="not connected")
        self.registry.merge(member_id, {"planned_stop": None})
        path = self._member_path()
        try:
            _, stat = self.client.create(path, self._data(), ephemeral=True, include_data=True)
        except kz_exc.NodeExistsError:
            _, stat = self.client.get(path)
            if stat.ephemeralOwner != sid:
                raise exceptions.MemberConflict(
                    member=member_id, owner=f"0x{stat.ephemeralOwner:x}"
                )
            stat = self.client.set(path, self._data())
        if self.heartbeat_mode():
            hb_path = self.session.path(HEARTBEATS, member_id)
            try:
                self.client.create(hb_path, b"0", ephemeral=True)
            except kz_exc.NodeExistsError:
                _, hb_stat = self.client.get(hb_path)
                if hb_stat.ephemeralOwner != sid:
                    # the old session's heartbeat outlived its membership: wait it out too
                    raise exceptions.MemberConflict(
                        member=member_id, owner=f"0x{hb_stat.ephemeralOwner:x}"
                    )
        self._joined_session = sid
        self.incarnation = stat.czxid
        return stat.czxid

    def joined(self) -> bool:
        return (
            self._joined_session is not None
            and self.session.connected
            and self.session.session_id == self._joined_session
        )

    def update_capabilities(self, capabilities: Mapping[str, object]) -> None:
        timeout = self.capabilities.get(base.SESSION_TIMEOUT)
        self.capabilities = dict(capabilities)
        if timeout is not None:
            self.capabilities[base.SESSION_TIMEOUT] = timeout
        if self.member_id is not None and self.joined():
            self.client.set(self._member_path(), self._data())

    def report_stall(self, stalled_for: float | None) -> None:
        """Never blocks: an asynchronous write, its failure only counted (the
        watchdog ends the session anyway if the stall goes on)."""
        self._stalled_for = None if stalled_for is None else round(stalled_for, 3)
        if self.member_id is None or not self.joined():
            return
        try:
            self.client.set_async(self._member_path(), self._data()).rawlink(self._written)
        except Exception as e:  # a stopped client may raise here rather than in the result
            self.write_errors += 1
            LOG.debug("stall report not written: %s", type(e).__name__)

    def heartbeat(self, seq: int) -> None:
        if self.member_id is None or not self.joined():
            raise exceptions.CoordinationError(
                reason="heartbeat before join (or after session loss)"
            )
        result = self.client.set_async(self.session.path(HEARTBEATS, self.member_id),
                                       str(seq).encode())
        result.rawlink(self._heartbeat_done)

    def _written(self, result) -> None:
        try:
            result.get_nowait()
        except Exception as e:
            self.write_errors += 1
            LOG.debug("membership write failed: %s", type(e).__name__)

    def _heartbeat_done(self, result) -> None:
        try:
            result.get_nowait()
        except kz_exc.NoNodeError:
            # the session that owned it is gone: the agent's loop re-joins
            self._joined_session = None
        except Exception as e:
            self.write_errors += 1
            LOG.debug("heartbeat write failed: %s", type(e).__name__)

    def leave(self, reason: str, planned: bool = True) -> None:
        if self.member_id is None:
            return
        member = self.member_id
        if planned:
            self.registry.merge(member, {"planned_stop": {"reason": reason,
                                                          "incarnation": self.incarnation}})
        for sub in (HEARTBEATS, MEMBERS):
            try:
                self.client.delete(self.session.path(sub, member))
            except kz_exc.NoNodeError:
                pass
        self._joined_session = None

    def forget_session(self) -> None:
        """The session was ended on purpose (the watchdog): join again in the next."""
        self._joined_session = None
