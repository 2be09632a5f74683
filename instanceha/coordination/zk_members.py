"""The agent's side of the tree: its membership, stall reports, planned stop.

An agent writes only inside its own slot ``<root>/hosts/<host>`` (which a
controller provisioned, granting that host's identity alone) and adds entries
to the shared indexes (see ``zk_layout``):

* ``join``: the slot's data gets ``planned_stop: null`` and the first join's
  time; ``hosts/<host>/member`` (ephemeral) holds the capabilities; then
  ``live/<host>@<seq>`` (ephemeral) tells the controllers to look. Both belong
  to this session: the session id is the host's *incarnation*. A session
  resumed by a restarted agent (``client_id``) finds both and keeps them:
  same incarnation, nothing vanishes.
* ``report_stall``: the loop watchdog's report goes into the session's one
  ``stalls/<host>@<seq>`` node ({"stalled_for": s}, {} once cleared); never blocks.
* ``leave``: the planned-stop mark; the session's close then removes the rest.
* Tampering: the member node and the index entry are watched; one deleted
  while the session lives (an operator's mistake, or an administrator's
  credentials misused) is created again at once, logged and counted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from kazoo import exceptions as kz_exc
from kazoo.protocol.states import EventType

from instanceha import exceptions
from instanceha.clock import SYSTEM, Clock
from instanceha.coordination import base
from instanceha.coordination import zk_layout as L
from instanceha.coordination.zk_codec import dumps, loads
from instanceha.coordination.zk_session import ZooKeeperSession

LOG = logging.getLogger(__name__)


class Membership:
    """One agent's membership (the agent side of the coordinator)."""

    def __init__(self, session: ZooKeeperSession, layout: L.Layout,
                 clock: Clock = SYSTEM) -> None:
        self.session = session
        self.client = session.client
        self.layout = layout
        self.clock = clock
        self.member_id: str | None = None
        self.capabilities: dict = {}
        self.incarnation: int | None = None
        self.hint_path: str | None = None
        self._joined_session: int | None = None
        self._stall_path: str | None = None
        self._stall_creating = False
        self._stall_sent = b""
        self._stalled_for: float | None = None
        self._lock = threading.Lock()
        self.write_errors = 0
        self.tampered = 0

    # -- paths -------------------------------------------------------------------------
    @property
    def host(self) -> str:
        """The host this agent joined as (known from its first ``join``)."""
        if self.member_id is None:
            raise exceptions.CoordinationError(reason="the agent has not joined yet")
        return self.member_id

    def slot(self, host: str | None = None) -> str:
        return self.session.path(L.HOSTS, host or self.host)

    def member_path(self) -> str:
        return self.session.path(L.HOSTS, self.host, L.MEMBER)

    def _acl(self, kind: str):
        return self.session.acls.acl(kind, self.member_id)

    # -- join ---------------------------------------------------------------------------
    def ensure_slot(self, host: str) -> None:
        """The host's slot exists (else NotProvisioned) and the identities to
        grant on the nodes this agent creates are known (from the slot's ACL)."""
        acls = self.session.acls
        self.layout.check()
        if self.client.exists(self.slot(host)) is None:
            if acls.open:  # insecure test beds: no controller-side provisioning
                try:
                    self.client.create(self.slot(host), b"", acl=acls.acl("slot", host))
                except kz_exc.NodeExistsError:
                    pass
                return
            raise exceptions.NotProvisioned(
                host=host, where=self.session.where,
                reason=f"{self.slot(host)} does not exist: the leading controller provisions "
                "every host of its fencing inventory and Nova's nova-compute services, or "
                f"run 'instanceha host provision {host}' with the controllers' credentials")

    def join(self, member_id: str, capabilities: Mapping[str, object]) -> int:
        sid = self.session.session_id
        if sid is None:
            raise exceptions.CoordinatorUnavailable(where=self.session.where,
                                                    reason="not connected")
        self.member_id = member_id
        self.capabilities = dict(capabilities)
        granted = self.session.granted_session_timeout
        if granted is not None:
            self.capabilities[base.SESSION_TIMEOUT] = granted
        self.ensure_slot(member_id)
        slot = self._merge_slot({"planned_stop": None}, first_join=True)
        self._ensure_member(sid)
        if self.hint_path is None and isinstance(slot.get("entry"), str):
            self.hint_path = slot["entry"]  # this session's, if a restarted agent resumed it
        if self._ensure_hint(sid):
            self._merge_slot({"entry": self.hint_path})
        self._joined_session = sid
        self.incarnation = sid
        return sid

    def _ensure_member(self, sid: int) -> None:
        path = self.member_path()
        try:
            self.client.create(path, dumps(self.capabilities), acl=self._acl("own"),
                               ephemeral=True)
        except kz_exc.NodeExistsError:
            _, stat = self.client.get(path)
            if stat.ephemeralOwner != sid:
                raise exceptions.MemberConflict(member=self.member_id,
                                                owner=f"0x{stat.ephemeralOwner:x}") from None
            self.client.set(path, dumps(self.capabilities))
        self.client.exists(path, watch=self._on_own_node)

    def _ensure_hint(self, sid: int) -> bool:
        """This session's index entry exists (True when it had to be created)."""
        hint = self.hint_path
        if hint is not None and hint.startswith(self.session.path(L.LIVE, "")):
            stat = self.client.exists(hint, watch=self._on_own_node)
            if stat is not None and stat.ephemeralOwner == sid:
                return False
        self.hint_path = self.client.create(
            self.session.path(L.LIVE, L.index_prefix(self.host)), b"",
            acl=self._acl("own"), ephemeral=True, sequence=True)
        self.client.exists(self.hint_path, watch=self._on_own_node)
        return True

    def _merge_slot(self, changes: Mapping[str, object], first_join: bool = False) -> dict:
        """Compare-and-set merge into the slot's data; no write when nothing
        changes. Returns the data as it was before."""
        path = self.slot()
        while True:
            raw, stat = self.client.get(path)
            data = loads(raw)
            new = dict(data, **changes)
            if first_join and "first_join" not in data:
                new["first_join"] = round(self.clock.wall(), 3)
            if new == data:
                return data
            try:
                self.client.set(path, dumps(new), version=stat.version)
                return data
            except kz_exc.BadVersionError:
                continue  # a controller wrote meanwhile: merge again

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
            self.client.set(self.member_path(), dumps(self.capabilities))

    # -- tampering -------------------------------------------------------------------------
    def _on_own_node(self, event) -> None:
        """kazoo's thread: the member node or the index entry was deleted while
        this session lives (its close removes them without an event reaching
        us). Create it again, asynchronously, and re-arm."""
        if event.type != EventType.DELETED or not self.joined():
            if event.type not in (EventType.NONE, EventType.DELETED):
                self._rewatch(event.path)
            return
        self.tampered += 1
        LOG.error("TAMPERING: %s was deleted by another client while this agent's session "
                  "lives; creating it again (check who holds the controllers' credentials)",
                  event.path)
        try:
            if event.path == self.member_path():
                result = self.client.create_async(event.path, dumps(self.capabilities),
                                                  acl=self._acl("own"), ephemeral=True)
            else:
                result = self.client.create_async(
                    self.session.path(L.LIVE, L.index_prefix(self.host)), b"",
                    acl=self._acl("own"), ephemeral=True, sequence=True)
            result.rawlink(self._recreated)
        except Exception as e:  # kazoo's thread: report, never raise
            self.write_errors += 1
            LOG.error("could not re-create %s: %s", event.path, type(e).__name__)

    def _recreated(self, result) -> None:
        try:
            path = result.get_nowait()
        except Exception as e:
            self.write_errors += 1
            LOG.error("re-creating a deleted membership node failed: %s", type(e).__name__)
            return
        if path != self.member_path():
            self.hint_path = path
        self._rewatch(path)

    def _rewatch(self, path: str) -> None:
        try:
            self.client.exists_async(path, watch=self._on_own_node)
        except Exception:  # a closed client: the next join re-arms
            pass

    # -- stall reports ------------------------------------------------------------------------
    def report_stall(self, stalled_for: float | None) -> None:
        """Never blocks: an asynchronous write, its failure only counted (the
        watchdog ends the session anyway if the stall goes on)."""
        with self._lock:
            self._stalled_for = None if stalled_for is None else round(stalled_for, 3)
            if self.member_id is None or not self.joined():
                return
            if self._stall_creating:
                return  # written with the latest value once the node exists
            if self._stall_path is None:
                if self._stalled_for is None:
                    return  # nothing reported in this session: nothing to clear
                self._stall_creating = True
                data, path = self._stall_data(), None
                self._stall_sent = data
            else:
                data, path = self._stall_data(), self._stall_path
        try:
            if path is None:
                self.client.create_async(
                    self.session.path(L.STALLS, L.index_prefix(self.host)), data,
                    acl=self._acl("own"), ephemeral=True, sequence=True,
                ).rawlink(self._stall_created)
            else:
                self.client.set_async(path, data).rawlink(self._written)
        except Exception as e:  # a stopped client may raise here rather than in the result
            self.write_errors += 1
            with self._lock:
                self._stall_creating = False
            LOG.debug("stall report not written: %s", type(e).__name__)

    def _stall_data(self) -> bytes:
        return dumps({} if self._stalled_for is None else
                     {base.STALLED_FOR: self._stalled_for})

    def _stall_created(self, result) -> None:
        try:
            path = result.get_nowait()
        except Exception as e:
            self.write_errors += 1
            LOG.debug("stall report not written: %s", type(e).__name__)
            with self._lock:
                self._stall_creating = False
            return
        with self._lock:
            self._stall_path, self._stall_creating = path, False
            latest = self._stall_data()
        if latest != self._stall_sent:  # reported again while it was being created
            self.client.set_async(path, latest).rawlink(self._written)

    def _written(self, result) -> None:
        try:
            result.get_nowait()
        except Exception as e:
            self.write_errors += 1
            LOG.debug("membership write failed: %s", type(e).__name__)

    # -- leaving ----------------------------------------------------------------------------------
    def leave(self, reason: str, planned: bool = True) -> None:
        """Mark a planned stop in the slot; the caller then closes the session,
        which removes the member node and the index entry with it."""
        if self.member_id is None:
            return
        if planned:
            self._merge_slot({"planned_stop": {"reason": reason,
                                               "incarnation": self.incarnation}})
        self._joined_session = None

    def forget_session(self) -> None:
        """The session was ended on purpose (the watchdog): join again in the next."""
        self._joined_session = None
        with self._lock:
            self._stall_path, self._stall_creating = None, False
        self.hint_path = None
