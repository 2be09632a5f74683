"""ZooKeeper backend, on kazoo directly.

Why not tooz (measured on this project's machines, see doc/source/architecture.rst):
tooz's ``heartbeat()`` writes nothing, so a hung agent is never seen; it polls
instead of watching; it never re-joins a member whose session expired; and a
tooz leader frozen past its session timeout still believes it leads. So the
layout and the recipes below are ours, on kazoo:

``<root>/hosts/<host>``       persistent: the registry, with the planned-stop mark
``<root>/members/<host>``     ephemeral: membership; its czxid is the incarnation
``<root>/heartbeats/<host>``  ephemeral: the data heartbeat the agent's loop writes
``<root>/election/c-<seq>``   ephemeral sequential: candidates; the lowest leads,
                              its czxid is the fencing token
``<root>/control``            persistent: operator switches (pause, guard override)
``<root>/status``             persistent: the leader's latest view (zlib JSON)

Threads: kazoo calls watches and state listeners on its own threads. They
only record facts (a timestamp, a dirty flag) and never block; every blocking
call happens in the caller's thread inside ``snapshot()``, ``join()`` or
``Leadership.ensure()``, so the owner's loop stays level-triggered.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import urllib.parse
import zlib
from collections.abc import Mapping, Sequence

from kazoo import exceptions as kz_exc
from kazoo.client import KazooClient
from kazoo.protocol.connection import ConnectionHandler
from kazoo.protocol.states import EventType, KazooState, KeeperState
from kazoo.retry import KazooRetry

from instanceha import exceptions
from instanceha.coordination import base
from instanceha.coordination.zk_guest_events import ZooKeeperGuestEventStore
from instanceha.coordination.zk_incidents import ZooKeeperIncidentStore

LOG = logging.getLogger(__name__)

_TRANSIENT = (
    kz_exc.ConnectionLoss,
    kz_exc.SessionExpiredError,
    kz_exc.OperationTimeoutError,
    kz_exc.ConnectionClosedError,
)

_STATE = {
    KazooState.CONNECTED: base.ConnectionState.CONNECTED,
    KazooState.SUSPENDED: base.ConnectionState.SUSPENDED,
    KazooState.LOST: base.ConnectionState.LOST,
}


def parse_hosts(url: str) -> str:
    """``zookeeper://h1:2181,h2:2181/`` -> ``h1:2181,h2:2181`` (query ignored)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "zookeeper" or not parsed.netloc:
        raise exceptions.CoordinationError(
            reason="a zookeeper URL looks like zookeeper://host1:2181,host2:2181"
        )
    return parsed.netloc


def _dumps(data: Mapping[str, object]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _loads(raw: bytes | None) -> dict:
    if not raw:
        return {}
    try:
        value = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError):
        return {"_undecodable": True}
    return value if isinstance(value, dict) else {"_undecodable": True}


def _translated(method):
    """kazoo's errors become the project's: the caller retries later."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except kz_exc.KazooException as e:
            raise exceptions.CoordinatorUnavailable(where=self._hosts_arg, reason=type(e).__name__)

    return wrapper


class _RecordingHandler(ConnectionHandler):
    """kazoo's connection handler, recording the session timeout the server
    granted (kazoo keeps it in a local variable only)."""

    granted_ms: int | None = None

    def _connect(self, host, hostip, port):
        read_timeout, connect_timeout = super()._connect(host, hostip, port)
        # kazoo derives read_timeout = negotiated timeout * 2/3 (both in ms)
        self.granted_ms = int(round(read_timeout * 3 / 2))
        return read_timeout, connect_timeout


class _FailFastClient(KazooClient):
    """A request made while the connection is down fails at once.

    kazoo queues such a request until the connection is back, so a
    synchronous call blocks its caller for as long as ZooKeeper is unreachable
    and the session not yet known expired (measured in the chaos suite: a
    leader cut off by a black hole stalled its whole tick loop on a status
    write, and never logged that it had lost leadership). Every caller here
    retries on its next loop anyway: ConnectionLoss, as for a request in
    flight when the connection drops."""

    def _call(self, request, async_object):
        if self._state == KeeperState.CONNECTING:
            async_object.set_exception(kz_exc.ConnectionLoss("not connected to ZooKeeper"))
            return False
        return super()._call(request, async_object)


class ZooKeeperCoordinator(base.Coordinator):
    def __init__(self, url: str, **kwargs) -> None:
        super().__init__(url, **kwargs)
        self._hosts_arg = parse_hosts(url)
        retry = KazooRetry(
            max_tries=-1, delay=0.1, backoff=2, max_jitter=0.2, max_delay=self.reconnect_max_delay
        )
        self.client = _FailFastClient(
            hosts=self._hosts_arg,
            timeout=self.session_timeout,
            connection_retry=retry,
            command_retry=None,
            logger=logging.getLogger("kazoo.client"),
        )
        self._handler = _RecordingHandler(
            self.client, self.client._conn_retry.copy(), logger=self.client.logger
        )
        self.client._connection = self._handler
        self._listeners: list[base.StateListener] = []
        self._lock = threading.Lock()
        self._connected_since: float | None = None
        self._needs_resync = True
        self.client.add_listener(self._on_state)
        # agent side
        self._member_id: str | None = None
        self._capabilities: Mapping[str, object] = {}
        self._joined_session: int | None = None
        self._incarnation: int | None = None
        self._hb_errors = 0
        # controller side
        self._watching_since: float | None = None
        self._hosts: dict[str, base.HostRecord] = {}
        self._members: dict[str, base.MemberRecord] = {}
        self._heartbeats: dict[str, float] = {}
        self._dirty_hosts: set[str] = set()
        self._dirty_members: set[str] = set()
        self._hosts_list_dirty = True
        self._members_list_dirty = True
        self._control: dict = {}
        self._control_dirty = True
        self._incidents = ZooKeeperIncidentStore(self.client, self._path("incidents"))
        self.guests = ZooKeeperGuestEventStore(self.client, self._path("guest-events"),
                                               self._path("guest-restarts"))

    # -- paths -------------------------------------------------------------
    def _path(self, *parts: str) -> str:
        return "/".join((self.root_path,) + parts)

    # -- connection --------------------------------------------------------
    def start(self) -> None:
        try:
            self.client.start(timeout=self.connect_timeout)
        except Exception as e:  # kazoo raises its own timeout type per handler
            self.client.stop()
            raise exceptions.CoordinatorUnavailable(where=self._hosts_arg, reason=type(e).__name__)
        granted = self.granted_session_timeout
        if granted is not None and abs(granted - self.session_timeout) > 0.001:
            self.stop()
            raise exceptions.SessionTimeoutRejected(
                granted=granted, requested=self.session_timeout
            )
        for sub in ("hosts", "members", "heartbeats", "election", "control"):
            self.client.ensure_path(self._path(sub))

    def stop(self) -> None:
        try:
            self.client.stop()
        finally:
            self.client.close()

    @property
    def state(self) -> base.ConnectionState:
        return _STATE[self.client.state]

    @property
    def granted_session_timeout(self) -> float | None:
        ms = self._handler.granted_ms
        return None if ms is None else ms / 1000.0

    @property
    def session_id(self) -> int | None:
        cid = self.client.client_id
        return cid[0] if cid else None

    def add_state_listener(self, listener: base.StateListener) -> None:
        self._listeners.append(listener)

    def _on_state(self, kstate: str) -> None:
        state = _STATE[kstate]
        if state is base.ConnectionState.CONNECTED:
            self._connected_since = self.clock()
        else:
            self._connected_since = None
        # kazoo drops every watch on any connection loss: re-arm at next snapshot
        self._needs_resync = True
        for listener in list(self._listeners):
            try:
                listener(state)
            except Exception:  # a listener must never break kazoo's thread
                LOG.exception("coordination state listener failed")

    # -- agent side --------------------------------------------------------
    @_translated
    def join(self, member_id: str, capabilities: Mapping[str, object]) -> int:
        self._member_id = member_id
        self._capabilities = dict(capabilities)
        sid = self.session_id
        if sid is None:
            raise exceptions.CoordinatorUnavailable(where=self._hosts_arg, reason="not connected")
        self._merge_host(member_id, {"planned_stop": None})
        member_path = self._path("members", member_id)
        try:
            self.client.create(member_path, _dumps(self._capabilities), ephemeral=True)
        except kz_exc.NodeExistsError:
            _, stat = self.client.get(member_path)
            if stat.ephemeralOwner != sid:
                raise exceptions.MemberConflict(
                    member=member_id, owner=f"0x{stat.ephemeralOwner:x}"
                )
            self.client.set(member_path, _dumps(self._capabilities))
        _, stat = self.client.get(member_path)
        hb_path = self._path("heartbeats", member_id)
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
        self._incarnation = stat.czxid
        return stat.czxid

    def joined(self) -> bool:
        return (
            self._joined_session is not None
            and self.client.state == KazooState.CONNECTED
            and self.session_id == self._joined_session
        )

    @property
    def incarnation(self) -> int | None:
        return self._incarnation

    @_translated
    def heartbeat(self, seq: int) -> None:
        if self._member_id is None or not self.joined():
            raise exceptions.CoordinationError(
                reason="heartbeat before join (or after session loss)"
            )
        result = self.client.set_async(self._path("heartbeats", self._member_id), str(seq).encode())
        result.rawlink(self._heartbeat_done)

    def _heartbeat_done(self, result) -> None:
        try:
            result.get_nowait()
        except kz_exc.NoNodeError:
            # the session that owned it is gone: the agent's loop re-joins
            self._joined_session = None
        except Exception as e:
            self._hb_errors += 1
            LOG.debug("heartbeat write failed: %s", type(e).__name__)

    @_translated
    def update_capabilities(self, capabilities: Mapping[str, object]) -> None:
        self._capabilities = dict(capabilities)
        if self._member_id is not None and self.joined():
            self.client.set(self._path("members", self._member_id), _dumps(self._capabilities))

    @_translated
    def leave(self, reason: str, planned: bool = True) -> None:
        if self._member_id is None:
            return
        member = self._member_id
        if planned:
            self._merge_host(member, {"planned_stop": {"reason": reason,
                                                       "incarnation": self._incarnation}})
        for sub in ("heartbeats", "members"):
            try:
                self.client.delete(self._path(sub, member))
            except kz_exc.NoNodeError:
                pass
        self._joined_session = None

    # -- controller side ---------------------------------------------------
    def snapshot(self) -> base.ClusterSnapshot:
        if self.client.state == KazooState.CONNECTED:
            try:
                self._refresh()
            except _TRANSIENT:
                self._needs_resync = True
        with self._lock:
            return base.ClusterSnapshot(
                taken_at=self.clock(),
                state=self.state,
                connected_since=self._connected_since,
                watching_since=self._watching_since,
                hosts=dict(self._hosts),
                members=dict(self._members),
                heartbeats=dict(self._heartbeats),
                control=dict(self._control),
            )

    def _refresh(self) -> None:
        if self._needs_resync:
            self._needs_resync = False
            self._hosts_list_dirty = self._members_list_dirty = True
            with self._lock:
                self._dirty_hosts.update(self._hosts)
                self._dirty_members.update(self._members)
            resync = True
        else:
            resync = False
        if self._hosts_list_dirty:
            self._hosts_list_dirty = False
            names = set(self.client.get_children(self._path("hosts"), watch=self._on_hosts_list))
            with self._lock:
                for gone in set(self._hosts) - names:
                    del self._hosts[gone]
                    self._heartbeats.pop(gone, None)
                self._dirty_hosts.update(names - set(self._hosts))
        if self._members_list_dirty:
            self._members_list_dirty = False
            names = set(
                self.client.get_children(self._path("members"), watch=self._on_members_list)
            )
            with self._lock:
                for gone in set(self._members) - names:
                    del self._members[gone]
                self._dirty_members.update(names - set(self._members))
        if resync or self._control_dirty:
            self._control_dirty = False
            raw, _ = self.client.get(self._path("control"), watch=self._on_control)
            self._control = _loads(raw)
        with self._lock:
            hosts, self._dirty_hosts = self._dirty_hosts, set()
            members, self._dirty_members = self._dirty_members, set()
        self._read_hosts(hosts, arm_heartbeat=resync)
        self._read_members(members)
        if resync:
            self._watching_since = self.clock()

    def _read_hosts(self, names: set[str], arm_heartbeat: bool) -> None:
        pending = {
            h: self.client.get_async(self._path("hosts", h), watch=self._on_host_data)
            for h in names
        }
        for h, res in pending.items():
            try:
                raw, _ = res.get()
            except kz_exc.NoNodeError:
                with self._lock:
                    self._hosts.pop(h, None)
                continue
            data = _loads(raw)
            with self._lock:
                is_new = h not in self._hosts
                if is_new:
                    # a host first seen now gets one full window from now, never
                    # from when this controller started watching
                    self._heartbeats.setdefault(h, self.clock())
                failures = data.get("failures")
                self._hosts[h] = base.HostRecord(
                    host=h, planned_stop=data.get("planned_stop"),
                    failures=tuple(f for f in failures if isinstance(f, (int, float)))
                    if isinstance(failures, list) else ())
            if is_new or arm_heartbeat:
                self._arm_heartbeat(h)

    def _read_members(self, names: set[str]) -> None:
        pending = {
            m: self.client.get_async(self._path("members", m), watch=self._on_member_data)
            for m in names
        }
        for m, res in pending.items():
            try:
                raw, stat = res.get()
            except kz_exc.NoNodeError:
                with self._lock:
                    self._members.pop(m, None)
                continue
            with self._lock:
                if m not in self._members:
                    self._heartbeats.setdefault(m, self.clock())
                self._members[m] = base.MemberRecord(
                    member_id=m, incarnation=stat.czxid, capabilities=_loads(raw)
                )

    # watches: record facts only, never block
    def _on_hosts_list(self, event) -> None:
        if event.type != EventType.NONE:
            self._hosts_list_dirty = True

    def _on_control(self, event) -> None:
        if event.type != EventType.NONE:
            self._control_dirty = True

    def _on_members_list(self, event) -> None:
        if event.type != EventType.NONE:
            self._members_list_dirty = True

    def _on_host_data(self, event) -> None:
        if event.type == EventType.CHANGED:
            with self._lock:
                self._dirty_hosts.add(event.path.rsplit("/", 1)[1])

    def _on_member_data(self, event) -> None:
        if event.type in (EventType.CHANGED, EventType.CREATED):
            with self._lock:
                self._dirty_members.add(event.path.rsplit("/", 1)[1])

    def _arm_heartbeat(self, host: str) -> None:
        path = self._path("heartbeats", host)
        try:
            self.client.exists_async(path, watch=self._on_heartbeat)
        except (kz_exc.ConnectionClosedError, kz_exc.ConnectionLoss):
            self._needs_resync = True

    def _on_heartbeat(self, event) -> None:
        if event.type == EventType.NONE:
            return  # connection lost: the next snapshot re-arms every watch
        host = event.path.rsplit("/", 1)[1]
        if event.type in (EventType.CHANGED, EventType.CREATED):
            now = self.clock()
            with self._lock:
                self._heartbeats[host] = now
        if self.client.state == KazooState.CONNECTED:
            self._arm_heartbeat(host)

    @_translated
    def update_control(self, changes: Mapping[str, object | None]) -> Mapping[str, object]:
        path = self._path("control")
        self.client.ensure_path(path)
        while True:
            raw, stat = self.client.get(path)
            current = _loads(raw)
            for key, value in changes.items():
                if value is None:
                    current.pop(key, None)
                else:
                    current[key] = value
            try:
                self.client.set(path, _dumps(current), version=stat.version)
                return current
            except kz_exc.BadVersionError:
                continue  # another operator wrote meanwhile: merge again

    @_translated
    def publish_status(self, status: Mapping[str, object]) -> None:
        data = zlib.compress(_dumps(status))
        try:
            self.client.set(self._path("status"), data)
        except kz_exc.NoNodeError:
            self.client.create(self._path("status"), data, makepath=True)

    @_translated
    def read_status(self) -> Mapping[str, object] | None:
        try:
            raw, _ = self.client.get(self._path("status"))
        except kz_exc.NoNodeError:
            return None
        try:
            return _loads(zlib.decompress(raw))
        except zlib.error:
            return {"_undecodable": True}

    def _merge_host(self, host: str, changes: Mapping[str, object]) -> dict:
        """Compare-and-set merge into the host's registry entry."""
        path = self._path("hosts", host)
        while True:
            try:
                raw, stat = self.client.get(path)
            except kz_exc.NoNodeError:
                try:
                    self.client.create(path, _dumps(dict(changes)), makepath=True)
                    return dict(changes)
                except kz_exc.NodeExistsError:
                    continue
            data = _loads(raw)
            data.update(changes)
            try:
                self.client.set(path, _dumps(data), version=stat.version)
                return data
            except kz_exc.BadVersionError:
                continue

    @_translated
    def record_failure(self, host: str, at: float, keep: int = 10) -> None:
        path = self._path("hosts", host)
        try:
            raw, _ = self.client.get(path)
            failures = _loads(raw).get("failures") or []
        except kz_exc.NoNodeError:
            failures = []
        failures = [f for f in failures if isinstance(f, (int, float))][-(keep - 1):] + [at]
        self._merge_host(host, {"failures": failures})

    @_translated
    def forget_host(self, host: str) -> None:
        try:
            self.client.delete(self._path("hosts", host))
        except kz_exc.NoNodeError:
            pass

    @_translated
    def incident_write(self, incident_id: str, summary: Mapping[str, object],
                       entries: Sequence[Mapping[str, object]] = ()) -> None:
        self._incidents.write(incident_id, summary, entries)

    @_translated
    def incidents(self) -> dict[str, Mapping[str, object]]:
        return self._incidents.summaries()

    @_translated
    def incident_entries(self, incident_id: str) -> list[Mapping[str, object]]:
        return self._incidents.entries(incident_id)

    @_translated
    def incident_delete(self, incident_id: str) -> None:
        self._incidents.delete(incident_id)

    @_translated
    def guest_event_put(self, event):
        return self.guests.put(event)

    @_translated
    def guest_events(self):
        return self.guests.pending()

    @_translated
    def guest_event_delete(self, event_id):
        self.guests.delete(event_id)

    @_translated
    def guest_restarts(self, instance_id):
        return self.guests.restarts(instance_id)

    @_translated
    def guest_restart_record(self, instance_id, at, keep=20):
        self.guests.record_restart(instance_id, at, keep)

    def leadership(self, candidate_id: str) -> base.Leadership:
        return ZooKeeperLeadership(self, candidate_id)


class ZooKeeperLeadership(base.Leadership):
    """Lowest ephemeral-sequential candidate leads; its czxid is the token.

    ``is_leader()`` turns False from kazoo's thread the moment the session is
    suspended or lost (kazoo's Lock recipe, and so tooz, does not)."""

    def __init__(self, coordinator: ZooKeeperCoordinator, candidate_id: str) -> None:
        self.coordinator = coordinator
        self.client = coordinator.client
        self.candidate_id = candidate_id
        self._dir = coordinator._path("election")
        self._node: str | None = None
        self._session: int | None = None
        self._token: int | None = None
        self._leader_flag = threading.Event()
        self._leader_id: str | None = None
        self._dirty = True
        self._resigned = False
        coordinator.add_state_listener(self._on_state)

    def _on_state(self, state: base.ConnectionState) -> None:
        if state is not base.ConnectionState.CONNECTED:
            self._leader_flag.clear()
            self._leader_id = None  # unknown until re-read with a live session
        self._dirty = True

    def _on_children(self, event) -> None:
        self._dirty = True

    def is_leader(self) -> bool:
        return self._leader_flag.is_set() and self.client.state == KazooState.CONNECTED

    @property
    def token(self) -> int | None:
        return self._token if self.is_leader() else None

    def leader(self) -> str | None:
        return self._leader_id

    def ensure(self) -> None:
        if self._resigned or self.client.state != KazooState.CONNECTED:
            self._leader_flag.clear()
            return
        sid = self.coordinator.session_id
        try:
            if self._node is None or self._session != sid:
                self._leader_flag.clear()
                self._node = self.client.create(
                    self._dir + "/c-",
                    self.candidate_id.encode(),
                    ephemeral=True,
                    sequence=True,
                )
                self._session = sid
                self._dirty = True
            if self._dirty:
                self._dirty = False
                self._evaluate(watch=True)
        except _TRANSIENT:
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
        if children:
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
            if self.coordinator.session_id != self._session:
                raise exceptions.NotLeader(reason="the session changed since the election")
            if not self._evaluate(watch=False):
                raise exceptions.NotLeader(reason=f"{self._leader_id} leads now")
        except kz_exc.KazooException as e:
            self._leader_flag.clear()
            self._dirty = True
            raise exceptions.NotLeader(reason=f"coordinator round trip failed: {type(e).__name__}")
        return self._token

    def resign(self) -> None:
        self._resigned = True
        self._leader_flag.clear()
        if self._node is not None and self.client.state == KazooState.CONNECTED:
            try:
                self.client.delete(self._node)
            except kz_exc.NoNodeError:
                pass
        self._node = None
