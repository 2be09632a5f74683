"""A TCP proxy on loopback that a test can cut: one client's link to a server.

    proxy = TcpProxy("127.0.0.1", zk.port).start()
    ... point one daemon at 127.0.0.1:proxy.port ...
    proxy.blackhole()   # bytes are swallowed both ways, connections stay open
    proxy.reset()       # every connection is reset (RST); new ones are reset at once
    proxy.restore()     # forward again (new connections only after reset())
    proxy.stop()

``blackhole`` is a network partition as the client sees it (no FIN, no RST:
only its own timers notice); ``reset`` is a peer that went away loudly.
``connections`` counts the connections accepted so far, ``live`` the open ones.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading

from harness import procs

PASS = "pass"
BLACKHOLE = "blackhole"
RESET = "reset"


def _rst_close(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _Link:
    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.closed = False
        self.tainted = False  # bytes were swallowed: the stream is broken

    def close(self, rst: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        for s in (self.client, self.server):
            if rst:
                _rst_close(s)
            else:
                try:
                    s.close()
                except OSError:
                    pass


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int, port: int | None = None) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = port or procs.free_port()
        self.mode = PASS
        self.connections = 0
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._sel = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def live(self) -> int:
        with self._lock:
            return sum(1 for link in self._links if not link.closed)

    def start(self) -> TcpProxy:
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        ls.setblocking(False)
        self._listener = ls
        self._sel.register(ls, selectors.EVENT_READ, None)
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._loop, name=f"tcpproxy:{self.port}",
                                        daemon=True)
        self._thread.start()
        return self

    # -- the test's switches ------------------------------------------------
    def blackhole(self) -> None:
        """Swallow every byte both ways; keep connections open; accept new ones
        and forward nothing."""
        self.mode = BLACKHOLE

    def reset(self) -> None:
        """Reset every open connection and every new one until ``restore()``."""
        self.mode = RESET
        self._wake()

    def restore(self) -> None:
        """Forward again. A connection that lost bytes in the black hole is reset
        (its stream is broken, as TCP would have ended it after retries)."""
        self.mode = PASS
        self._wake()

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            for link in self._links:
                link.close()
        if self._listener is not None:
            self._listener.close()
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- the loop -----------------------------------------------------------
    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        self.connections += 1
        if self.mode == RESET:
            _rst_close(client)
            return
        try:
            server = socket.create_connection(self.upstream, timeout=2.0)
        except OSError:
            _rst_close(client)
            return
        for s in (client, server):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = _Link(client, server)
        with self._lock:
            self._links.append(link)
        self._sel.register(client, selectors.EVENT_READ, (link, server))
        self._sel.register(server, selectors.EVENT_READ, (link, client))

    def _drop(self, link: _Link, rst: bool) -> None:
        for s in (link.client, link.server):
            try:
                self._sel.unregister(s)
            except (KeyError, ValueError):
                pass
        link.close(rst)
        with self._lock:
            self._links = [x for x in self._links if not x.closed]

    def _loop(self) -> None:
        while not self._stop.is_set():
            mode = self.mode
            if mode != BLACKHOLE:
                with self._lock:
                    links = [x for x in self._links if mode == RESET or x.tainted]
                for link in links:
                    self._drop(link, rst=True)
            for key, _ in self._sel.select(timeout=0.2):
                if key.data is None:
                    self._accept()
                    continue
                if key.data == "wake":
                    try:
                        self._wake_r.recv(4096)
                    except OSError:
                        pass
                    continue
                link, peer = key.data
                if link.closed:
                    continue
                try:
                    data = key.fileobj.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    self._drop(link, rst=True)
                    continue
                if not data:
                    self._drop(link, rst=False)
                    continue
                if self.mode != PASS:
                    link.tainted = True
                    continue  # black hole (or about to be reset): swallowed
                try:
                    peer.setblocking(True)
                    peer.sendall(data)
                    peer.setblocking(False)
                except OSError:
                    self._drop(link, rst=True)
