"""A real ZooKeeper (Debian package ``zookeeper``) started by hand on loopback.

    python tools/harness/zookeeper.py start DIR [--port P] [--tick-ms 200]
    python tools/harness/zookeeper.py stop DIR

In tests: ``ZooKeeperServer(tmpdir, tick_ms=200).start()``; ``.stop()``,
``.restart()``, ``.freeze()``/``.thaw()``. A fresh data dir per server, its
own port, admin server off, 4lw ``ruok,srvr,stat,mntr,cons,conf``.

Secure by default, as instanceha runs in production: clients connect over TLS
to ``secureClientPort`` (``.url``; the server's certificate is signed by a CA
made in the server's dir, see ``zksecurity``), authenticate with credentials
derived from the server's own test key, and every node instanceha writes
carries least-privilege ACLs. ``.section(role, host)`` gives the
``[coordination]`` options of a daemon, ``.coordinator(role, host)`` an
in-process client, ``.provision(root, hosts)`` creates the hosts' slots as the
leading controller would. The plain ``clientPort`` (``.plain_url``) stays
open for the four-letter words and for tests of clients without TLS.

``ZooKeeperEnsemble(tmpdir, size=3, tick_ms=200).start()``: that many servers
on loopback (``server.N=127.0.0.1:peer:election`` lines, a ``myid`` each);
``.url`` names them all; ``.servers[i]`` can be stopped, killed, frozen and
started again one by one; ``.leader()`` is the one in ``Mode: leader``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import ssl
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import procs  # noqa: E402
from harness.zksecurity import ZkSecurity  # noqa: E402

# Debian's zookeeper.jar names no class path for Netty, which the TLS port needs
CLASSPATH = ":".join(
    ["/usr/share/java/zookeeper.jar", "/usr/share/java/slf4j-simple.jar"]
    + [
        f"/usr/share/java/{j}"
        for j in ("zookeeper-jute.jar", "slf4j-api.jar", "jline.jar", "netty-buffer.jar",
                  "netty-codec.jar", "netty-common.jar", "netty-handler.jar",
                  "netty-resolver.jar", "netty-transport.jar",
                  "netty-transport-native-unix-common.jar",
                  "netty-transport-native-epoll.jar")
        if os.path.exists(f"/usr/share/java/{j}")
    ]
)


def four_letter(port: int, word: bytes = b"ruok", timeout: float = 1.0,
                ca_file: str | None = None) -> bytes:
    """A four-letter word; over TLS when ``ca_file`` is given (the secure port
    answers for the connections it holds, the plain port for its own)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        s = ssl.create_default_context(cafile=ca_file).wrap_socket(
            raw, server_hostname="127.0.0.1") if ca_file else raw
        with s:
            s.sendall(word)
            chunks = []
            while True:
                data = s.recv(65536)
                if not data:
                    return b"".join(chunks)
                chunks.append(data)


class ZooKeeperServer:
    def __init__(self, base_dir: str, port: int | None = None, tick_ms: int = 200,
                 max_session_ms: int | None = None, myid: int | None = None,
                 peers: list[str] | None = None, heap_mb: int = 256,
                 secure: bool = True, security: ZkSecurity | None = None,
                 secure_port: int | None = None, min_session_ms: int | None = None) -> None:
        self.base_dir = os.path.abspath(base_dir)
        self.port = port or procs.free_port()
        self.secure = secure
        self.security = (security or ZkSecurity(os.path.join(self.base_dir, "security"))) \
            if secure else None
        self.secure_port = (secure_port or procs.free_port()) if secure else None
        self.tick_ms = tick_ms
        self.max_session_ms = max_session_ms
        self.min_session_ms = min_session_ms
        self.myid = myid
        self.peers = peers or []  # "server.N=host:peer:election" lines of an ensemble
        self.heap_mb = heap_mb
        self.proc: subprocess.Popen | None = None
        self.data_dir = os.path.join(self.base_dir, "data")
        self.cfg = os.path.join(self.base_dir, "zoo.cfg")
        self.log = os.path.join(self.base_dir, "zookeeper.log")

    @property
    def url(self) -> str:
        """What clients use: the TLS port when secure."""
        return f"zookeeper://{self.hosts}"

    @property
    def client_port(self) -> int:
        """The port instanceha's clients connect to (the TLS one when secure)."""
        return self.secure_port if self.secure else self.port

    @property
    def plain_url(self) -> str:
        return f"zookeeper://127.0.0.1:{self.port}"

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.secure_port if self.secure else self.port}"

    # -- clients, as instanceha's daemons connect -----------------------------------
    def section(self, role: str, host: str | None = None, **more) -> dict:
        return coordination_section(self.url, self.security, role, host, **more)

    def coordinator(self, role: str, host: str | None = None, url: str | None = None,
                    **kwargs):
        """An in-process client with ``role``'s credentials (``url``: another way in
        to this server, e.g. through a proxy)."""
        return make_coordinator(url or self.url, self.security, role, host, **kwargs)

    def provision(self, root_path: str, hosts) -> None:
        provision(self.url, self.security, root_path, hosts)

    def _write_cfg(self) -> None:
        os.makedirs(self.data_dir, exist_ok=True)
        lines = [
            f"tickTime={self.tick_ms}",
            f"dataDir={self.data_dir}",
            f"clientPort={self.port}",
            "clientPortAddress=127.0.0.1",
            "admin.enableServer=false",
            "4lw.commands.whitelist=ruok,srvr,stat,mntr,cons,conf",
            "maxClientCnxns=0",
            "initLimit=10",
            "syncLimit=5",
            # tests fsync on a shared disk: don't let a slow fsync stall everyone
            "forceSync=no",
        ]
        if self.secure:
            sec = self.security
            lines += [
                f"secureClientPort={self.secure_port}",
                "secureClientPortAddress=127.0.0.1",
                "serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory",
                f"ssl.keyStore.location={sec.server_pem}",
                "ssl.keyStore.type=PEM",
                f"ssl.trustStore.location={sec.ca_file}",
                "ssl.trustStore.type=PEM",
                "ssl.clientAuth=want",
            ]
        if self.max_session_ms:
            lines.append(f"maxSessionTimeout={self.max_session_ms}")
        if self.min_session_ms:
            lines.append(f"minSessionTimeout={self.min_session_ms}")
        lines += self.peers
        with open(self.cfg, "w") as f:
            f.write("\n".join(lines) + "\n")
        if self.myid is not None:
            with open(os.path.join(self.data_dir, "myid"), "w") as f:
                f.write(f"{self.myid}\n")

    def mode(self) -> str | None:
        """``standalone``, ``leader`` or ``follower`` while serving, else None."""
        try:
            out = four_letter(self.port, b"srvr")
        except OSError:
            return None
        for line in out.decode(errors="replace").splitlines():
            if line.startswith("Mode: "):
                return line.split(": ", 1)[1].strip()
        return None

    def zxid(self) -> int:
        """The last transaction id this server applied: every write (and every
        session created or closed) adds one; a ping adds nothing."""
        out = four_letter(self.port, b"srvr").decode(errors="replace")
        for line in out.splitlines():
            if line.startswith("Zxid: "):
                return int(line.split(": ", 1)[1].strip(), 16)
        raise RuntimeError(f"no Zxid in the srvr answer of 127.0.0.1:{self.port}: {out!r}")

    def connections(self) -> dict[int, dict[str, str]]:
        """The ``cons`` answer: session id -> that connection's fields (``lop``:
        its last operation, ``lcxid``: the xid of its last request, pings
        excluded, ``recved``/``sent`` packets...)."""
        out = four_letter(self.port, b"cons").decode(errors="replace")
        if self.secure:
            out += four_letter(self.secure_port, b"cons",
                               ca_file=self.security.ca_file).decode(errors="replace")
        found = {}
        for line in out.splitlines():
            if "(" not in line or "sid=" not in line:
                continue
            fields = dict(kv.split("=", 1) for kv in
                          line[line.index("(") + 1:line.rindex(")")].split(",") if "=" in kv)
            found[int(fields["sid"], 16)] = fields
        return found

    def serving(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"ZooKeeper exited with {self.proc.returncode}; see {self.log}")
        return self.mode() is not None

    def start(self, timeout: float = 30.0, wait: bool = True) -> ZooKeeperServer:
        self._write_cfg()
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            ["java", f"-Xmx{self.heap_mb}m", "-Dzookeeper.jmx.log4j.disable=true", "-cp", CLASSPATH,
             "org.apache.zookeeper.server.quorum.QuorumPeerMain", self.cfg],
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        logf.close()
        if wait:
            # 'ruok' says imok before the server serves; 'srvr' names the mode
            # only once it does
            procs.wait_for(self.serving, timeout, f"ZooKeeper on 127.0.0.1:{self.port}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc)
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def freeze(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)


class ZooKeeperEnsemble:
    """``size`` servers on loopback forming one ensemble (one security domain)."""

    def __init__(self, base_dir: str, size: int = 3, tick_ms: int = 200,
                 secure: bool = True, security: ZkSecurity | None = None) -> None:
        self.base_dir = os.path.abspath(base_dir)
        self.security = (security or ZkSecurity(os.path.join(self.base_dir, "security"))) \
            if secure else None
        ports = [(procs.free_port(), procs.free_port(), procs.free_port()) for _ in range(size)]
        peers = [f"server.{i + 1}=127.0.0.1:{peer}:{election}"
                 for i, (_, peer, election) in enumerate(ports)]
        self.servers = [
            ZooKeeperServer(os.path.join(self.base_dir, f"zk{i + 1}"), port=client,
                            tick_ms=tick_ms, myid=i + 1, peers=peers, secure=secure,
                            security=self.security)
            for i, (client, _, _) in enumerate(ports)
        ]

    @property
    def hosts(self) -> str:
        return ",".join(s.hosts for s in self.servers)

    @property
    def url(self) -> str:
        return f"zookeeper://{self.hosts}"

    def section(self, role: str, host: str | None = None, **more) -> dict:
        return coordination_section(self.url, self.security, role, host, **more)

    def coordinator(self, role: str, host: str | None = None, **kwargs):
        return make_coordinator(self.url, self.security, role, host, **kwargs)

    def provision(self, root_path: str, hosts) -> None:
        provision(self.url, self.security, root_path, hosts)

    def start(self, timeout: float = 60.0) -> ZooKeeperEnsemble:
        for s in self.servers:
            s.start(wait=False)
        self.wait_serving(self.servers, timeout)
        return self

    def wait_serving(self, servers=None, timeout: float = 60.0) -> None:
        servers = self.servers if servers is None else servers
        procs.wait_for(lambda: all(s.serving() for s in servers), timeout,
                       f"ZooKeeper ensemble {self.hosts} to serve")

    def running(self) -> list[ZooKeeperServer]:
        return [s for s in self.servers if s.proc is not None]

    def leader(self) -> ZooKeeperServer | None:
        for s in self.running():
            if s.mode() == "leader":
                return s
        return None

    def by_port(self, port: int) -> ZooKeeperServer:
        return next(s for s in self.servers if port in (s.port, s.client_port))

    def stop(self) -> None:
        for s in self.servers:
            try:
                s.thaw()
            except (ProcessLookupError, AttributeError):
                pass
            s.stop()


def coordination_section(url: str, security: ZkSecurity | None, role: str,
                         host: str | None = None, **more) -> dict:
    """The ``[coordination]`` options of a daemon (``role``) on this ZooKeeper."""
    if security is None:
        base = {"backend_url": url, "insecure": "true", "tls": "false"}
    else:
        base = security.section(url, role, host)
    return dict(base, **more)


def make_coordinator(url: str, security: ZkSecurity | None, role: str,
                     host: str | None = None, **kwargs):
    """An in-process coordinator (not started) with ``role``'s credentials."""
    from instanceha import coordination

    if security is not None:
        kwargs.setdefault("creds", security.credentials_for(role, host))
        kwargs.setdefault("tls", security.tls())
    return coordination.get_coordinator(url, role=role, **kwargs)


def provision(url: str, security: ZkSecurity | None, root_path: str, hosts) -> None:
    """Create the tree under ``root_path`` and the slots of ``hosts``, as the
    leading controller does for the hosts of its inventory."""
    admin = make_coordinator(url, security, "controller", root_path=root_path)
    admin.start()
    try:
        for h in hosts:
            admin.provision_host(h)
    finally:
        admin.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start")
    s.add_argument("dir")
    s.add_argument("--port", type=int, default=None)
    s.add_argument("--tick-ms", type=int, default=200)
    t = sub.add_parser("stop")
    t.add_argument("dir")
    args = p.parse_args(argv)
    pidfile = os.path.join(os.path.abspath(args.dir), "zookeeper.pid")
    if args.cmd == "start":
        os.makedirs(args.dir, exist_ok=True)
        zk = ZooKeeperServer(args.dir, port=args.port, tick_ms=args.tick_ms).start()
        with open(pidfile, "w") as f:
            f.write(f"{zk.proc.pid} {zk.port}\n")
        print(zk.url)
        return 0
    try:
        pid, _ = open(pidfile).read().split()
    except FileNotFoundError:
        print(f"no ZooKeeper recorded in {pidfile}", file=sys.stderr)
        return 1
    if procs.alive(int(pid)):
        os.kill(int(pid), signal.SIGTERM)
        procs.wait_for(lambda: not procs.alive(int(pid)), 15, "ZooKeeper to stop")
    os.unlink(pidfile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
