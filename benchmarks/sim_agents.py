"""Simulated agents: many real ZooKeeper sessions from one light process.

Each simulated agent is a real ZooKeeper session that registers and joins
exactly where ``instanceha-agent`` does (the znode layout of
``instanceha.coordination.zk_members`` and ``zk_hosts``), then proves it
lives the way the real agent does with ``--liveness``:

* ``session`` (the default of ``[agent] liveness``): it writes nothing more;
  its session is kept by a ping every T/3 (what kazoo sends on an idle
  connection), which ZooKeeper answers without a transaction;
* ``heartbeat`` (the mechanism before): it writes the data heartbeat every
  ``--interval`` seconds.

Unlike the real agent (a kazoo client: three threads per session), all of
them speak the ZooKeeper protocol directly with kazoo's serializers on one
asyncio loop, one ``asyncio.Protocol`` per connection (no task per session),
so that thousands fit next to ZooKeeper and the controller on a 2-core
machine. A session that the server drops is joined again, like the agent
does, and counted (``rejoins``: on a healthy run, 0).

    python benchmarks/sim_agents.py URL ROOT PREFIX COUNT [--liveness session]
        [--interval 0.5] [--session-timeout 2.0]

Prints ``ready N`` once all have joined; SIGTERM closes every session and
prints ``stopping; rejoins=R``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import struct
import sys
import urllib.parse

from kazoo.protocol.serialization import Close, Connect, Create, Ping, SetData, int_int_struct
from kazoo.security import OPEN_ACL_UNSAFE

EPHEMERAL = 1
NODE_EXISTS = -110
CONNECTION_LOSS = -4
PING_XID = -2
_len = struct.Struct("!i")
_reply = struct.Struct("!iqi")
PING = _len.pack(8) + int_int_struct.pack(PING_XID, Ping.type)


class Session(asyncio.Protocol):
    """One ZooKeeper connection and session; replies matched by xid."""

    def __init__(self) -> None:
        self.xid = 0
        self.pending: dict[int, asyncio.Future] = {}
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
                if fut is not None and not fut.done():
                    fut.set_result(err)

    def connection_lost(self, exc) -> None:
        self.closed = True
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError("closed during the handshake"))
        for fut in self.pending.values():
            if not fut.done():
                fut.set_result(CONNECTION_LOSS)
        self.pending.clear()

    # -- requests --------------------------------------------------------------
    def send(self, request, wait: bool = True):
        if self.closed:
            raise ConnectionError("session closed")
        self.xid += 1
        body = int_int_struct.pack(self.xid, request.type) + bytes(request.serialize())
        self.transport.write(_len.pack(len(body)) + body)
        if not wait:
            return None
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.xid] = fut
        return fut

    def ping(self) -> None:
        if self.closed:
            raise ConnectionError("session closed")
        self.transport.write(PING)

    async def create(self, path: str, data: bytes, flags: int = 0) -> int:
        return await self.send(Create(path, data, OPEN_ACL_UNSAFE, flags))

    async def close(self) -> None:
        try:
            if not self.closed:
                await asyncio.wait_for(self.send(Close()), 2)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        if self.transport is not None:
            self.transport.close()


async def connect(host: str, port: int, timeout_ms: int, attempts: int = 20) -> Session:
    loop = asyncio.get_running_loop()
    for attempt in range(attempts):
        try:
            _, s = await loop.create_connection(Session, host, port)
            body = bytes(Connect(0, 0, timeout_ms, 0, b"\x00" * 16, False).serialize())
            s.transport.write(_len.pack(len(body)) + body)
            await s.handshake
            return s
        except (ConnectionError, OSError):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.25)
    raise AssertionError("unreachable")  # pragma: no cover


async def run(args) -> int:
    parsed = urllib.parse.urlsplit(args.url)
    host, _, port_s = parsed.netloc.split(",")[0].partition(":")
    port = int(port_s)
    root = args.root.rstrip("/")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    timeout_ms = int(args.session_timeout * 1000)
    session_mode = args.liveness == "session"
    first = await connect(host, port, timeout_ms)
    for p in ("", "/hosts", "/members", "/heartbeats"):
        await first.create(root + p, b"")
    caps = {"services": {"nova-compute": True}, "boot_id": "sim", "liveness": args.liveness}
    if session_mode:
        caps["session_timeout"] = args.session_timeout
    caps_raw = json.dumps(caps, sort_keys=True, separators=(",", ":")).encode()

    async def join(name: str) -> Session:
        s = await connect(host, port, timeout_ms)
        await s.create(f"{root}/hosts/{name}", b'{"planned_stop":null}')
        nodes = [("members", caps_raw)] + ([] if session_mode else [("heartbeats", b"0")])
        for sub, data in nodes:
            err = await s.create(f"{root}/{sub}/{name}", data, EPHEMERAL)
            if err not in (0, NODE_EXISTS):
                print(f"{name}: create {sub} failed with {err}", file=sys.stderr, flush=True)
        return s

    sessions: dict[str, Session] = {}
    rejoining: set[str] = set()
    rejoins = 0

    async def rejoin(name: str) -> None:
        # in its own task: the other sessions' pings must not wait for it
        try:
            sessions[name] = await join(name)
        except (ConnectionError, OSError) as e:
            print(f"{name}: re-join failed ({e}), next pass tries again", file=sys.stderr,
                  flush=True)
        finally:
            rejoining.discard(name)
    # session mode: a ping every T/3 (kazoo pings after read_timeout/2 = T/3 idle);
    # heartbeat mode: the data heartbeat every interval (it keeps the session too)
    period = args.session_timeout / 3 if session_mode else args.interval

    async def keep_alive_forever() -> None:
        # every joined session is kept from the moment it joined: with a 2 s
        # session, waiting for all to join first would expire the early ones
        nonlocal rejoins
        seq = 0
        while not stop.is_set():
            started = loop.time()
            seq += 1
            beat = str(seq).encode()
            for name, s in list(sessions.items()):
                if name in rejoining:
                    continue
                try:
                    if session_mode:
                        s.ping()
                    else:
                        s.send(SetData(f"{root}/heartbeats/{name}", beat, -1), wait=False)
                except ConnectionError:
                    rejoins += 1
                    print(f"{name}: session lost, joining again", file=sys.stderr, flush=True)
                    rejoining.add(name)  # like the agent: re-join
                    loop.create_task(rejoin(name))
            try:
                await asyncio.wait_for(stop.wait(), max(0.0, period - (loop.time() - started)))
            except asyncio.TimeoutError:
                pass

    keeping = loop.create_task(keep_alive_forever())
    for i in range(args.count):
        name = f"{args.prefix}{i:05d}"
        sessions[name] = await join(name)
    await first.close()
    print(f"ready {len(sessions)}", flush=True)
    await stop.wait()
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
    p.add_argument("--liveness", choices=("session", "heartbeat"), default="session")
    p.add_argument("--interval", type=float, default=0.5)
    p.add_argument("--session-timeout", type=float, default=2.0)
    return asyncio.run(run(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
