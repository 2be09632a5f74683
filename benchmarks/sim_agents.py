"""Simulated agents: many real ZooKeeper sessions from one light process.

Each simulated agent is a real ZooKeeper session that registers, joins and
writes the data heartbeat exactly where ``instanceha-agent`` does (the znode
layout of ``instanceha.coordination.zookeeper``), every ``--interval``
seconds. Unlike the real agent (a kazoo client: three threads per session),
they speak the ZooKeeper protocol directly with kazoo's serializers on one
asyncio loop, so that 1000 of them fit next to ZooKeeper and the controller
on a 2-core machine. Used by the detection benchmark as background load.

    python benchmarks/sim_agents.py URL ROOT PREFIX COUNT [--interval 0.5]

Prints ``ready N`` once all have joined; SIGTERM closes every session.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import struct
import sys
import urllib.parse

from kazoo.protocol.serialization import Close, Connect, Create, SetData, int_int_struct
from kazoo.security import OPEN_ACL_UNSAFE

EPHEMERAL = 1
NODE_EXISTS = -110
_len = struct.Struct("!i")
_reply = struct.Struct("!iqi")


class Session:
    def __init__(self, host: str, port: int, timeout_ms: int) -> None:
        self.host, self.port, self.timeout_ms = host, port, timeout_ms
        self.xid = 0
        self.pending: dict[int, asyncio.Future] = {}

    async def connect(self, attempts: int = 20) -> None:
        for attempt in range(attempts):
            try:
                await self._connect()
                return
            except (asyncio.IncompleteReadError, ConnectionError):
                if attempt == attempts - 1:
                    raise
                await asyncio.sleep(0.25)

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        body = Connect(0, 0, self.timeout_ms, 0, b"\x00" * 16, False).serialize()
        self.writer.write(_len.pack(len(body)) + bytes(body))
        size = _len.unpack(await self.reader.readexactly(4))[0]
        await self.reader.readexactly(size)
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                size = _len.unpack(await self.reader.readexactly(4))[0]
                data = await self.reader.readexactly(size)
                xid, _zxid, err = _reply.unpack_from(data, 0)
                fut = self.pending.pop(xid, None)
                if fut is not None and not fut.done():
                    fut.set_result(err)
        except (asyncio.IncompleteReadError, ConnectionError):
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_result(-4)  # connection loss

    @property
    def closed(self) -> bool:
        return self.writer.is_closing() or self.task.done()

    def send(self, request, wait: bool = True):
        if self.closed:
            raise ConnectionError("session closed")
        self.xid += 1
        body = int_int_struct.pack(self.xid, request.type) + bytes(request.serialize())
        self.writer.write(_len.pack(len(body)) + body)
        if wait:
            fut = asyncio.get_running_loop().create_future()
            self.pending[self.xid] = fut
            return fut
        return None

    async def create(self, path: str, data: bytes, flags: int = 0) -> int:
        return await self.send(Create(path, data, OPEN_ACL_UNSAFE, flags))

    async def close(self) -> None:
        try:
            if not self.closed:
                await asyncio.wait_for(self.send(Close()), 2)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        self.writer.close()


async def run(args) -> int:
    parsed = urllib.parse.urlsplit(args.url)
    host, _, port = parsed.netloc.split(",")[0].partition(":")
    root = args.root.rstrip("/")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    first = Session(host, int(port), int(args.session_timeout * 1000))
    await first.connect()
    for p in ("", "/hosts", "/members", "/heartbeats"):
        await first.create(root + p, b"")
    caps = json.dumps({"services": {"nova-compute": True}, "boot_id": "sim"}).encode()
    timeout_ms = int(args.session_timeout * 1000)

    async def join(name: str) -> Session:
        s = Session(host, int(port), timeout_ms)
        await s.connect()
        await s.create(f"{root}/hosts/{name}", b'{"planned_stop":null}')
        for sub, data in (("members", caps), ("heartbeats", b"0")):
            err = await s.create(f"{root}/{sub}/{name}", data, EPHEMERAL)
            if err not in (0, NODE_EXISTS):
                print(f"{name}: create {sub} failed with {err}", file=sys.stderr, flush=True)
        return s

    sessions: dict[str, Session] = {}
    rejoins = 0

    async def heartbeat_forever() -> None:
        # every joined session beats from the moment it joined: with a 2 s
        # session, waiting for all 1000 to join first would expire the early ones
        nonlocal rejoins
        seq = 0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = loop.time()
            seq += 1
            for name, s in list(sessions.items()):
                try:
                    s.send(SetData(f"{root}/heartbeats/{name}", str(seq).encode(), -1),
                           wait=False)
                except ConnectionError:
                    rejoins += 1
                    sessions[name] = await join(name)  # like the agent: re-join
            try:
                await asyncio.wait_for(stop.wait(),
                                       max(0.0, args.interval - (loop.time() - started)))
            except asyncio.TimeoutError:
                pass

    beating = asyncio.get_running_loop().create_task(heartbeat_forever())
    for i in range(args.count):
        name = f"{args.prefix}{i:05d}"
        sessions[name] = await join(name)
    await first.close()
    print(f"ready {len(sessions)}", flush=True)
    await stop.wait()
    await beating
    print(f"stopping; rejoins={rejoins}", flush=True)
    for s in sessions.values():
        await s.close()
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url")
    p.add_argument("root")
    p.add_argument("prefix")
    p.add_argument("count", type=int)
    p.add_argument("--interval", type=float, default=0.5)
    p.add_argument("--session-timeout", type=float, default=2.0)
    return asyncio.run(run(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
