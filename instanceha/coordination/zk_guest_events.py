"""The guest-failure queue and restart records in ZooKeeper.

Layout::

    <root>/hosts/<host>/e-0000000042     persistent sequential: one guest failure
                                         (JSON) the host's agent saw, in the host's
                                         own slot (no other identity may write there);
                                         the leader deletes it once handled
    <root>/doorbell/<host>@0000000007    persistent sequential, created in the same
                                         transaction: "look at <host>'s slot"
    <root>/guest-restarts/<instance id>  {"restarts": [epoch s, ...]}, leader only

The agent's write is one transaction: the failure is durable, and announced,
before the agent moves on, and survives the agent, the controllers and a
leader change. The leader follows the doorbell with one children watch (a
tick costs no round trip while nothing rings), reads the slots that rang, and
removes a host's doorbell entries only once every failure it read there is
handled: a leader that dies mid-way leaves both to the next one. A doorbell
entry names a host but proves nothing (any agent may ring): it only makes the
leader read that host's slot, where only that host could write. An event's
``host`` is the slot's, whatever its data claims.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from kazoo import exceptions as kz_exc
from kazoo.protocol.states import EventType

from instanceha.coordination import zk_layout as L
from instanceha.coordination.zk_codec import dumps, loads
from instanceha.coordination.zk_session import ZooKeeperSession

LOG = logging.getLogger(__name__)
PREFIX = L.EVENT_PREFIX


class ZooKeeperGuestEventStore:
    def __init__(self, session: ZooKeeperSession) -> None:
        self.session = session
        self.client = session.client
        self.bells_path = session.path(L.DOORBELL)
        self.restarts_path = session.path(L.RESTARTS)
        self._lock = threading.Lock()
        self._dirty = True
        self._cache: dict[str, dict[str, dict]] = {}  # host -> event name -> event
        self._bells: dict[str, set[str]] = {}  # host -> doorbell entries read
        self._stale: set[str] = set()  # hosts whose slot must be read again
        self.forged = 0
        session.client.add_listener(self._on_state)

    # watches and listeners: record facts only, never block
    def _on_state(self, state) -> None:
        self._dirty = True

    def _on_bells(self, event) -> None:
        if event.type != EventType.NONE:
            self._dirty = True

    # -- agent side ---------------------------------------------------------------------
    def put(self, host: str, event: Mapping[str, object]) -> str:
        acls = self.session.acls
        tx = self.client.transaction()
        tx.create(self.session.path(L.HOSTS, host, PREFIX), dumps(event),
                  acl=acls.acl("event", host), sequence=True)
        tx.create(self.session.path(L.DOORBELL, L.index_prefix(host)), b"",
                  acl=acls.acl("bell", host), sequence=True)
        results = tx.commit()
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            raise failed[0]
        return f"{host}/{results[0].rsplit('/', 1)[1]}"

    # -- leader side ---------------------------------------------------------------------
    def pending(self) -> list[tuple[str, Mapping[str, object]]]:
        if self._dirty:
            self._dirty = False
            try:
                self._read_bells()
            except Exception:
                self._dirty = True
                raise
        for host in sorted(self._stale):
            self._read_slot(host)
            self._stale.discard(host)
        with self._lock:
            return sorted((f"{h}/{n}", e) for h, events in self._cache.items()
                          for n, e in events.items())

    def _read_bells(self) -> None:
        names = self.client.get_children(self.bells_path, watch=self._on_bells)
        rang: dict[str, set[str]] = {}
        for name in names:
            parsed = L.parse_index(name)
            if parsed is not None:
                rang.setdefault(parsed[0], set()).add(name)
        for host, bells in rang.items():
            if not bells <= self._bells.get(host, set()):
                self._stale.add(host)
                self._bells[host] = self._bells.get(host, set()) | bells

    def _read_slot(self, host: str) -> None:
        slot = self.session.path(L.HOSTS, host)
        try:
            names = {n for n in self.client.get_children(slot) if n.startswith(PREFIX)}
        except kz_exc.NoNodeError:
            names = set()  # forgotten: its bells are rubbish
        with self._lock:
            cached = self._cache.setdefault(host, {})
            for gone in set(cached) - names:
                del cached[gone]
            new = names - set(cached)
        pending = {n: self.client.get_async(f"{slot}/{n}") for n in new}
        for name, result in pending.items():
            try:
                raw, _ = result.get()
            except kz_exc.NoNodeError:
                continue  # handled meanwhile (another leader)
            event = loads(raw)
            if event.get("host") != host:
                self.forged += 1
                LOG.error("TAMPERING: guest failure %s/%s names host %r; it was written in "
                          "%s's slot and is taken as %s's", host, name, event.get("host"),
                          host, host)
                event["claimed_host"] = event.get("host")
                event["host"] = host
            with self._lock:
                self._cache[host][name] = event
        self._ring_off(host)

    def _ring_off(self, host: str) -> None:
        """Every failure read in ``host``'s slot is handled: remove the doorbell
        entries read before (a newer one rang after the read: it stays)."""
        with self._lock:
            if self._cache.get(host):
                return
            self._cache.pop(host, None)
            bells = self._bells.pop(host, set())
        for bell in bells:
            try:
                self.client.delete(f"{self.bells_path}/{bell}")
            except kz_exc.NoNodeError:
                pass

    def delete(self, event_id: str) -> None:
        host, _, name = event_id.partition("/")
        if not host or not name.startswith(PREFIX) or "/" in name:
            return
        try:
            self.client.delete(self.session.path(L.HOSTS, host, name))
        except kz_exc.NoNodeError:
            pass
        with self._lock:
            self._cache.get(host, {}).pop(name, None)
        self._ring_off(host)

    # -- restart records (leader) ---------------------------------------------------------
    def _restart_node(self, instance_id: str) -> str:
        if not instance_id or "/" in instance_id or instance_id in (".", ".."):
            raise ValueError(f"not an instance id: {instance_id!r}")
        return f"{self.restarts_path}/{instance_id}"

    def restarts(self, instance_id: str) -> list[float]:
        try:
            raw, _ = self.client.get(self._restart_node(instance_id))
        except kz_exc.NoNodeError:
            return []
        times = loads(raw).get("restarts")
        return [t for t in times if isinstance(t, (int, float)) and not isinstance(t, bool)] \
            if isinstance(times, list) else []

    def record_restart(self, instance_id: str, at: float, keep: int = 20) -> None:
        node = self._restart_node(instance_id)
        while True:
            try:
                raw, stat = self.client.get(node)
            except kz_exc.NoNodeError:
                try:
                    self.client.create(node, dumps({"restarts": [at]}),
                                       acl=self.session.acls.acl("tree"))
                    return
                except kz_exc.NodeExistsError:
                    continue
            times = loads(raw).get("restarts")
            times = [t for t in times if isinstance(t, (int, float))] \
                if isinstance(times, list) else []
            try:
                self.client.set(node, dumps({"restarts": (times + [at])[-keep:]}),
                                version=stat.version)
                return
            except kz_exc.BadVersionError:
                continue  # another writer meanwhile: merge again
