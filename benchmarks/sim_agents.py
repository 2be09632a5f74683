"""Simulated agents: many real ZooKeeper sessions from one light process.

Each simulated agent is a real ZooKeeper session that joins exactly where
``instanceha-agent`` does (layout 2, ``instanceha.coordination.zk_members``):

* secure (the default, as the daemons run): TLS to ZooKeeper's
  ``secureClientPort``, the server certificate checked against the harness's
  CA; digest authentication with the agent's two identities,
  ``instanceha-agent@<host>`` and the shared ``instanceha-agents`` (derived from
  the controllers' key read from the harness's security directory, as
  ``instanceha coordination credentials agent HOST`` derives them); every node
  created with the ACL ``zk_acl.AclModel`` gives it, the controllers' and
  operators' ids learnt from what the controllers publish (``grants()``);
* ``--insecure`` (the daemons' ``[coordination] insecure = true``): the plain
  port, no authentication, open ACLs.

Joining: the ephemeral ``<root>/hosts/<host>/member`` (capabilities, with the
granted session timeout), then the ephemeral sequential ``<root>/live/<host>@``
entry, one after the other (a live entry without its member node is what a
forger leaves: the controller would report it). The host's slot must exist:
``--provision`` first creates every slot, as the leading controller does, with
the controllers' identity and the slot ACL, pipelined (``--insecure``: open
slots, as an insecure agent makes its own). ``--write-slot`` also writes the
slot's data the way an agent's first join does (``planned_stop``,
``first_join``; a blind write, not the agent's compare-and-set merge).

Liveness is the session's: nothing more is written; a ping every T/3 (what
kazoo sends on an idle connection) keeps the session, which ZooKeeper answers
without a transaction. The pings are spread over the period (a twentieth of
the sessions at a time), as independent clients would send them.

Unlike the real agent (a kazoo client: three threads per session), all of
them speak the ZooKeeper protocol directly with kazoo's serializers on one
asyncio loop, one ``asyncio.Protocol`` per connection (no task per session),
so that thousands fit next to ZooKeeper and the controller on a 2-core
machine. A session that the server drops is joined again, like the agent
does, and counted (``rejoins``: on a healthy run, 0).

    python benchmarks/sim_agents.py URL ROOT PREFIX COUNT [--security-dir DIR | --insecure]
        [--provision] [--write-slot] [--session-timeout 2.0] [--window 64]

``URL``: ``zookeeper://127.0.0.1:PORT`` (the TLS port when secure). Prints
``ready N`` once all have joined; SIGTERM closes every session and prints
``stopping; rejoins=R``. No secret is taken from or written to argv or output.
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.sslproto
import collections
import os
import random
import signal
import ssl
import struct
import sys
import time
import urllib.parse

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "tools"))

from kazoo.protocol.serialization import (  # noqa: E402
    Auth,
    Close,
    Connect,
    Create,
    Ping,
    SetData,
    int_int_struct,
)
from kazoo.security import OPEN_ACL_UNSAFE  # noqa: E402

from instanceha.coordination import base  # noqa: E402
from instanceha.coordination import credentials as cr  # noqa: E402
from instanceha.coordination import zk_layout as L  # noqa: E402
from instanceha.coordination.zk_acl import AclModel  # noqa: E402
from instanceha.coordination.zk_codec import dumps  # noqa: E402
from instanceha.engine.detection import RECONNECT_JITTER  # noqa: E402
from instanceha.secret import Secret  # noqa: E402

EPHEMERAL = 1
SEQUENCE = 2
NODE_EXISTS = -110
NO_NODE = -101
CONNECTION_LOSS = -4
PING_XID = -2
AUTH_XID = -4
PING_SLICES = 20
REJOIN_DELAY, REJOIN_MAX_DELAY = 0.1, 5.0
"""A failed re-join waits as the agent's client does before its next try
(``zk_session``: kazoo's retry from 0.1 s, doubling, up to ``[coordination]
reconnect_max_delay``, 5 s by default, plus its jitter)."""
_len = struct.Struct("!i")
_reply = struct.Struct("!iqi")
PING = _len.pack(8) + int_int_struct.pack(PING_XID, Ping.type)
# asyncio gives every TLS connection a 256 KiB read buffer, zero-filled (so
# resident): 2.5 GB for 10,000 sessions. A ZooKeeper answer to these requests
# is a few bytes, a TLS record at most 16 KiB: 16 KiB is enough.
asyncio.sslproto.SSLProtocol.max_size = 16 * 1024


class JoinError(Exception):
    pass


class Session(asyncio.Protocol):
    """One ZooKeeper connection and session; replies matched by xid (auth
    replies, which all carry xid -4, in the order they were sent)."""

    def __init__(self) -> None:
        self.xid = 0
        self.pending: dict[int, asyncio.Future] = {}
        self.auths: collections.deque[asyncio.Future] = collections.deque()
        self.buf = bytearray()
        self.handshake: asyncio.Future = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.closed = False

    # -- asyncio.Protocol ------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while len(buf) >= 4:
            size = _len.unpack_from(buf, 0)[0]
            if len(buf) < 4 + size:
                return
            frame = bytes(buf[4:4 + size])
            del buf[:4 + size]
            if not self.handshake.done():
                self.handshake.set_result(frame)
                continue
            xid, _zxid, err = _reply.unpack_from(frame, 0)
            if xid > 0:
                fut = self.pending.pop(xid, None)
            elif xid == AUTH_XID and self.auths:
                fut = self.auths.popleft()
            else:
                continue  # a ping's answer
            if fut is not None and not fut.done():
                fut.set_result(err)

    def connection_lost(self, exc) -> None:
        self.closed = True
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError("closed during the handshake"))
        for fut in list(self.pending.values()) + list(self.auths):
            if not fut.done():
                fut.set_result(CONNECTION_LOSS)
        self.pending.clear()
        self.auths.clear()

    # -- requests --------------------------------------------------------------
    def _write(self, xid: int, request) -> None:
        if self.closed:
            raise ConnectionError("session closed")
        body = int_int_struct.pack(xid, request.type) + bytes(request.serialize())
        self.transport.write(_len.pack(len(body)) + body)

    def send(self, request) -> asyncio.Future:
        self.xid += 1
        self._write(self.xid, request)
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.xid] = fut
        return fut

    def auth(self, scheme: str, credential: str) -> asyncio.Future:
        self._write(AUTH_XID, Auth(0, scheme, credential))
        fut = asyncio.get_running_loop().create_future()
        self.auths.append(fut)
        return fut

    def ping(self) -> None:
        if self.closed:
            raise ConnectionError("session closed")
        self.transport.write(PING)

    def create(self, path: str, data: bytes, acl, flags: int = 0) -> asyncio.Future:
        return self.send(Create(path, data, acl, flags))

    async def close(self) -> None:
        try:
            if not self.closed:
                await asyncio.wait_for(self.send(Close()), 2)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        if self.transport is not None:
            self.transport.close()


class Security:
    """Who the simulated agents are and the ACLs they write (None key: insecure)."""

    def __init__(self, key: Secret | None, ca_file: str | None) -> None:
        self.key = key
        self.ssl = None
        if ca_file:
            self.ssl = ssl.create_default_context(cafile=ca_file)
        if key is not None:
            self.controller = AclModel(cr.for_controller((key,)))
            self.grants = self.controller.grants()  # what controllers publish in the layout node
        self._agents: dict[str, tuple[list[tuple[str, str]], list]] = {}

    @property
    def open(self) -> bool:
        return self.key is None

    def agent(self, host: str) -> tuple[list[tuple[str, str]], list]:
        """(auth_data, ACL of its own nodes) of ``host``'s agent, as the agent's
        own coordinator builds them from its credentials file."""
        if self.key is None:
            return [], list(OPEN_ACL_UNSAFE)
        found = self._agents.get(host)
        if found is None:
            model = AclModel(cr.for_agent(self.key, host))
            model.learn_admins(self.grants)
            found = self._agents[host] = (model.auth_data(), model.acl("own", host))
        return found

    def controller_auth(self) -> list[tuple[str, str]]:
        return [] if self.key is None else self.controller.auth_data()

    def slot_acl(self, host: str) -> list:
        return list(OPEN_ACL_UNSAFE) if self.key is None else self.controller.acl("slot", host)


async def connect(host: str, port: int, timeout_ms: int, sec: Security,
                  auth: list[tuple[str, str]], attempts: int = 20) -> tuple[Session, int]:
    """A new session, authenticated; returns it and the granted timeout (ms)."""
    loop = asyncio.get_running_loop()
    for attempt in range(attempts):
        try:
            _, s = await loop.create_connection(
                Session, host, port, ssl=sec.ssl,
                server_hostname=host if sec.ssl is not None else None)
            body = bytes(Connect(0, 0, timeout_ms, 0, b"\x00" * 16, False).serialize())
            s.transport.write(_len.pack(len(body)) + body)
            answer = await s.handshake
            granted = Connect.deserialize(answer, 0)[0].time_out
            errors = await asyncio.gather(*(s.auth(scheme, cred) for scheme, cred in auth))
            if CONNECTION_LOSS in errors:
                raise ConnectionError("connection lost while authenticating")
            if any(errors):
                s.transport.close()
                # never the credential itself: only which identity was refused
                raise JoinError(f"authentication refused ({errors}) for "
                                f"{[c.split(':', 1)[0] for _, c in auth]}")
            return s, granted
        except (ConnectionError, OSError, ssl.SSLError):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.25)
    raise AssertionError("unreachable")  # pragma: no cover


async def provision(host: str, port: int, timeout_ms: int, sec: Security, root: str,
                    names: list[str], window: int = 1000) -> int:
    """Every slot, as the leading controller makes it (its identity, the slot
    ACL), ``window`` creates in flight at a time. Returns how many were new."""
    s, _ = await connect(host, port, timeout_ms, sec, sec.controller_auth())
    created = 0
    try:
        for start in range(0, len(names), window):
            batch = names[start:start + window]
            errors = await asyncio.gather(*(
                s.create(f"{root}/{L.HOSTS}/{n}", b"", sec.slot_acl(n)) for n in batch))
            for name, err in zip(batch, errors, strict=True):
                if err == NO_NODE:
                    raise JoinError(f"{root}/{L.HOSTS} does not exist: start a controller "
                                    "on this root first (it creates the tree)")
                if err not in (0, NODE_EXISTS):
                    raise JoinError(f"provisioning {name} failed with ZooKeeper error {err}")
                created += err == 0
    finally:
        await s.close()
    return created


async def run(args) -> int:
    parsed = urllib.parse.urlsplit(args.url)
    host, _, port_s = parsed.netloc.split(",")[0].partition(":")
    port = int(port_s)
    root = args.root.rstrip("/")
    if args.insecure:
        sec = Security(None, None)
    else:
        from harness.zksecurity import ZkSecurity

        zs = ZkSecurity(args.security_dir)
        sec = Security(zs.key, zs.ca_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    timeout_ms = int(args.session_timeout * 1000)
    began = time.monotonic()

    def clock() -> float:
        """Seconds since this process started its work (in its log lines)."""
        return time.monotonic() - began

    names = [f"{args.prefix}{i:05d}" for i in range(args.count)]
    if args.provision:
        t0 = time.monotonic()
        new = await provision(host, port, timeout_ms, sec, root, names)
        print(f"provisioned {new} slots in {time.monotonic() - t0:.1f} s", file=sys.stderr,
              flush=True)
    caps = {"services": {"nova-compute": True}, "boot_id": "sim", "version": "sim"}

    async def join(name: str) -> Session:
        auth, own_acl = sec.agent(name)
        s, granted = await connect(host, port, timeout_ms, sec, auth)
        try:
            raw = dumps(dict(caps, **{base.SESSION_TIMEOUT: granted / 1000.0}))
            if args.write_slot:
                s.send(SetData(f"{root}/{L.HOSTS}/{name}",
                               dumps({"planned_stop": None, "first_join": round(time.time(), 3)}),
                               -1))
            member = f"{root}/{L.HOSTS}/{name}/{L.MEMBER}"
            # a session of the same host that the server has not expired yet
            # still holds the member node (a re-join): wait for its expiry
            for _ in range(int(4 * granted / 1000.0 / 0.25) + 1):
                err = await s.create(member, raw, own_acl, EPHEMERAL)
                if err != NODE_EXISTS:
                    break
                s.ping()  # this session lives on meanwhile
                await asyncio.sleep(0.25)
            if err == CONNECTION_LOSS:
                raise ConnectionError(f"{name}: connection lost while joining")
            if err != 0:
                raise JoinError(f"{name}: creating {member} failed with ZooKeeper error {err}")
            err = await s.create(f"{root}/{L.LIVE}/{L.index_prefix(name)}", b"", own_acl,
                                 EPHEMERAL | SEQUENCE)
            if err == CONNECTION_LOSS:
                raise ConnectionError(f"{name}: connection lost while joining")
            if err != 0:
                raise JoinError(f"{name}: creating its live entry failed with ZooKeeper "
                                f"error {err}")
        except BaseException:
            s.transport.close()
            raise
        return s

    sessions: dict[str, Session] = {}
    rejoining: set[str] = set()
    rejoins = 0

    failures: collections.Counter[str] = collections.Counter()  # failed re-joins in a row

    async def rejoin(name: str) -> None:
        # in its own task: the other sessions' pings must not wait for it; after
        # a failed try it backs off as the agent's client does (a constant retry
        # of thousands of sessions at once would storm a starved server)
        try:
            if failures[name]:
                delay = min(REJOIN_DELAY * 2 ** failures[name], REJOIN_MAX_DELAY)
                await asyncio.sleep(delay * (1 + random.random() * RECONNECT_JITTER))
            sessions[name] = await join(name)
            failures.pop(name, None)
        except (ConnectionError, OSError, ssl.SSLError, JoinError) as e:
            failures[name] += 1
            print(f"{clock():.1f} {name}: re-join failed ({e}), next pass tries again",
                  file=sys.stderr,
                  flush=True)
        finally:
            rejoining.discard(name)

    period = args.session_timeout / 3  # kazoo pings after read_timeout/2 = T/3 idle

    async def keep_alive_forever() -> None:
        # every joined session is kept from the moment it joined: with a 2 s
        # session, waiting for all to join first would expire the early ones
        nonlocal rejoins
        tick = 0
        slices = [names[i::PING_SLICES] for i in range(PING_SLICES)]
        parent = os.getppid()
        while not stop.is_set():
            started = loop.time()
            if os.getppid() != parent:  # the benchmark died: never outlive it
                stop.set()
            part = slices[tick % PING_SLICES]
            tick += 1
            for name in part:
                if name in rejoining:
                    continue
                s = sessions.get(name)
                if s is None:
                    continue
                try:
                    s.ping()
                except ConnectionError:
                    rejoins += 1
                    print(f"{clock():.1f} {name}: session lost, joining again", file=sys.stderr,
                          flush=True)
                    rejoining.add(name)  # like the agent: re-join
                    loop.create_task(rejoin(name))
            wait = period / PING_SLICES - (loop.time() - started)
            try:
                await asyncio.wait_for(stop.wait(), max(0.0, wait))
            except asyncio.TimeoutError:
                pass

    keeping = loop.create_task(keep_alive_forever())
    window = asyncio.Semaphore(args.window)

    failed_joins = 0

    async def first_join(name: str) -> None:
        # a connection lost while joining (a starved machine) is tried again,
        # as the agent does; only an error of ZooKeeper's answers is fatal
        nonlocal failed_joins
        async with window:
            for attempt in range(10):
                try:
                    sessions[name] = await join(name)
                    return
                except (ConnectionError, OSError, ssl.SSLError):
                    if attempt == 9:
                        raise
                    failed_joins += 1
                    await asyncio.sleep(0.5)

    t0 = time.monotonic()
    joining = asyncio.gather(*(first_join(n) for n in names))
    stopping = loop.create_task(stop.wait())
    await asyncio.wait([joining, stopping], return_when=asyncio.FIRST_COMPLETED)
    if joining.done():
        joining.result()  # a join that failed for good raises here
        print(f"ready {len(sessions)} (joined in {time.monotonic() - t0:.1f} s, "
              f"{failed_joins} joins tried again, {rejoins} sessions lost meanwhile)",
              flush=True)
    else:
        joining.cancel()  # SIGTERM while joining
        await asyncio.gather(joining, return_exceptions=True)
    await stopping
    await keeping
    print(f"stopping; rejoins={rejoins}", flush=True)
    await asyncio.gather(*(s.close() for s in sessions.values()))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url")
    p.add_argument("root")
    p.add_argument("prefix")
    p.add_argument("count", type=int)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--security-dir",
                      help="the harness's ZooKeeper security directory (ca.pem, key)")
    mode.add_argument("--insecure", action="store_true",
                      help="plain port, no authentication, open ACLs")
    p.add_argument("--provision", action="store_true",
                   help="create every slot first, as the leading controller does")
    p.add_argument("--write-slot", action="store_true",
                   help="write the slot's first-join data as an agent does")
    p.add_argument("--session-timeout", type=float, default=2.0)
    p.add_argument("--window", type=int, default=16,
                   help="joins in flight at a time (a TLS handshake costs ZooKeeper several "
                        "ms of CPU: 64 at once starved its I/O threads on a loaded 2-core "
                        "machine and sessions expired)")
    return asyncio.run(run(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
