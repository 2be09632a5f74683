"""The ZooKeeper session: one kazoo client, its connection state, its security.

Every other ``zk_*`` module works through a :class:`ZooKeeperSession`: the
client, the paths under the root, the connection state with the time it last
became connected, the session timeout the server granted, and the identities
(``auth_data``, re-sent by kazoo on every reconnection) and TLS settings the
client connects with.

Threads: kazoo calls state listeners on its own threads; they only record
facts and never block.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import urllib.parse

from kazoo import exceptions as kz_exc
from kazoo.client import KazooClient
from kazoo.protocol.connection import ConnectionHandler
from kazoo.protocol.serialization import Connect
from kazoo.protocol.states import KazooState, KeeperState
from kazoo.retry import KazooRetry

from instanceha import exceptions
from instanceha.clock import SYSTEM, Clock
from instanceha.coordination import base
from instanceha.coordination.zk_acl import AclModel
from instanceha.coordination.zk_codec import dumps, loads  # noqa: F401  (the one codec)

# the jitter the detection policy's reconnect grace counts with: one number for both
from instanceha.engine.detection import RECONNECT_JITTER

LOG = logging.getLogger(__name__)

TRANSIENT = (
    kz_exc.ConnectionLoss,
    kz_exc.SessionExpiredError,
    kz_exc.OperationTimeoutError,
    kz_exc.ConnectionClosedError,
)

STATE = {
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


@dataclasses.dataclass(frozen=True)
class TlsSettings:
    """TLS of the client connection (ZooKeeper's ``secureClientPort``)."""

    ca_file: str
    """The CA bundle the server certificate is verified against."""
    cert_file: str | None = None
    """A client certificate, for servers that ask for one (``ssl.clientAuth``)."""
    key_file: str | None = None
    check_hostname: bool = True


def translated(method):
    """kazoo's errors become the project's: the caller retries later. The
    decorated method's object has a ``where`` (the servers, for the message)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except kz_exc.NoAuthError:
            raise exceptions.CoordinationDenied(
                where=self.where, operation=method.__name__,
                identity=getattr(self, "identity", "?"),
                reason="not allowed by the ACL (wrong credentials, or an identity that may "
                       "not do this)") from None
        except kz_exc.KazooException as e:
            raise exceptions.CoordinatorUnavailable(where=self.where, reason=type(e).__name__)

    return wrapper


class _RecordingHandler(ConnectionHandler):
    """kazoo's connection handler, recording the session timeout the server
    granted (kazoo keeps it in a local variable only)."""

    granted_ms: int | None = None

    def _invoke(self, timeout, request, xid=None):
        result = super()._invoke(timeout, request, xid)
        # the Connect answer, read before kazoo declares the session CONNECTED
        # (and before it sends the auth packets): recorded there, not after
        # _connect returns, so that whoever waits for CONNECTED sees it
        if isinstance(request, Connect) and result[0].time_out > 0:
            self.granted_ms = result[0].time_out
        return result


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


class _NoSessionPassword(logging.Filter):
    """kazoo logs the session password (hex) at its BLATHER level (5) when it
    connects: such records never pass, whatever the log level."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "session_passwd" not in str(record.msg)


_NO_PASSWORD = _NoSessionPassword()


class ZooKeeperSession:
    """One kazoo client and what is known about its session."""

    def __init__(self, url: str, *, session_timeout: float, connect_timeout: float,
                 reconnect_max_delay: float, root_path: str,
                 clock: Clock = SYSTEM,
                 acls: AclModel | None = None, tls: TlsSettings | None = None) -> None:
        self.where = parse_hosts(url)
        self.session_timeout = session_timeout
        self.connect_timeout = connect_timeout
        self.root_path = root_path.rstrip("/")
        self.clock = clock
        self.acls = acls or AclModel(None)
        self.tls = tls
        retry = KazooRetry(max_tries=-1, delay=0.1, backoff=2, max_jitter=RECONNECT_JITTER,
                           max_delay=reconnect_max_delay)
        kazoo_log = logging.getLogger("kazoo.client")
        if _NO_PASSWORD not in kazoo_log.filters:
            kazoo_log.addFilter(_NO_PASSWORD)
        secure = {} if tls is None else {
            "use_ssl": True, "ca": tls.ca_file, "certfile": tls.cert_file,
            "keyfile": tls.key_file, "verify_certs": True,
            "check_hostname": tls.check_hostname}
        self.client = _FailFastClient(
            hosts=self.where,
            timeout=session_timeout,
            connection_retry=retry,
            command_retry=None,
            logger=kazoo_log,
            auth_data=self.acls.auth_data(),
            **secure,
        )
        self._handler = _RecordingHandler(
            self.client, self.client._conn_retry.copy(), logger=self.client.logger
        )
        self.client._connection = self._handler
        self._listeners: list[base.StateListener] = []
        self.connected_since: float | None = None
        self.client.add_listener(self._on_state)

    @property
    def identity(self) -> str:
        return self.acls.identity

    def path(self, *parts: str) -> str:
        return "/".join((self.root_path,) + parts)

    def start(self) -> None:
        try:
            self.client.start(timeout=self.connect_timeout)
        except Exception as e:  # kazoo raises its own timeout type per handler
            self.client.stop()
            raise exceptions.CoordinatorUnavailable(where=self.where, reason=type(e).__name__)
        granted = self.granted_session_timeout
        if granted is not None and abs(granted - self.session_timeout) > 0.001:
            self.stop()
            raise exceptions.SessionTimeoutRejected(
                granted=granted, requested=self.session_timeout
            )

    def stop(self) -> None:
        try:
            self.client.stop()
        finally:
            self.client.close()

    @property
    def state(self) -> base.ConnectionState:
        return STATE[self.client.state]

    @property
    def connected(self) -> bool:
        return self.client.state == KazooState.CONNECTED

    @property
    def granted_session_timeout(self) -> float | None:
        ms = self._handler.granted_ms
        return None if ms is None else ms / 1000.0

    @property
    def session_id(self) -> int | None:
        cid = self.client.client_id
        return cid[0] if cid else None

    def resume(self, credentials: base.SessionCredentials) -> None:
        """The next ``start()`` first asks for this session (kazoo's
        ``client_id``, set as its constructor would); an expired one makes kazoo
        open a new session at once (the server answers the connect with a zero
        timeout: SessionExpiredError, then a reconnect with session id 0)."""
        if self.client.client_id is not None:
            raise RuntimeError("resume() before start(): this client is connected")
        self.client._session_id = credentials.session_id
        self.client._session_passwd = credentials.password

    @property
    def credentials(self) -> base.SessionCredentials | None:
        cid = self.client.client_id
        if not cid or not cid[0]:
            return None
        return base.SessionCredentials(cid[0], bytes(cid[1]))

    def add_state_listener(self, listener: base.StateListener) -> None:
        self._listeners.append(listener)

    def _on_state(self, kstate: str) -> None:
        state = STATE[kstate]
        connected = state is base.ConnectionState.CONNECTED
        self.connected_since = self.clock.monotonic() if connected else None
        for listener in list(self._listeners):
            try:
                listener(state)
            except Exception:  # a listener must never break kazoo's thread
                LOG.exception("coordination state listener failed")
