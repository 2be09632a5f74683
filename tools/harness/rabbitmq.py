"""A private RabbitMQ for tests and benchmarks, from the Debian package, on loopback.

    python tools/harness/rabbitmq.py start DIR     # prints the transport URL
    python tools/harness/rabbitmq.py stop DIR

No systemd, no switch to the ``rabbitmq`` user, no system data dir: the node
runs as the invoking user with its own epmd (own port), its own Erlang
distribution port and AMQP port (all free ports on 127.0.0.1 picked at start),
its mnesia, logs and Erlang cookie under DIR. The broker can be stopped and
started again in the middle of a test (same ports, same mnesia: durable queues
survive). epmd is stopped last: if it dies before the VM, the VM re-spawns a
stray ``epmd -daemon`` while shutting down.

Set ``INSTANCEHA_TEST_RABBITMQ_URL`` to reuse a broker that already runs
(``rabbitmq(...)`` then returns an ``ExternalRabbitMQ``, which cannot be
stopped or restarted by the tests).

The user and password are random per broker: tests can check that the password
never reaches a log or an argv.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import procs  # noqa: E402

ENV_URL = "INSTANCEHA_TEST_RABBITMQ_URL"
RABBIT_BIN = "/usr/lib/rabbitmq/bin"


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _amqp_ready(port: int, user: str, password: str) -> bool:
    """A full AMQP handshake (with our credentials) succeeds: the node is booted."""
    import amqp  # py-amqp, a dependency of kombu/oslo.messaging

    conn = amqp.Connection(f"127.0.0.1:{port}", userid=user, password=password,
                           connect_timeout=2)
    try:
        conn.connect()
        return True
    except Exception:
        return False
    finally:
        try:
            conn.close()
        except Exception:
            pass


class RabbitMQServer:
    """One RabbitMQ node plus its own epmd; state under ``base_dir``."""

    owned = True

    def __init__(self, base_dir: str, user: str | None = None,
                 password: str | None = None) -> None:
        self.base_dir = os.path.abspath(base_dir)
        self.user = user or f"ih-{secrets.token_hex(3)}"
        self.password = password or secrets.token_hex(12)
        self.amqp_port = procs.free_port()
        self.dist_port = procs.free_port()
        self.epmd_port = procs.free_port()
        self.log = os.path.join(self.base_dir, "rabbitmq.log")
        self.beam: subprocess.Popen | None = None
        self.epmd: subprocess.Popen | None = None

    # -- identity -----------------------------------------------------------
    @property
    def url(self) -> str:
        return f"rabbit://{self.user}:{self.password}@127.0.0.1:{self.amqp_port}/"

    @property
    def redacted_url(self) -> str:
        return f"rabbit://{self.user}:***@127.0.0.1:{self.amqp_port}/"

    def env(self) -> dict[str, str]:
        d = self.base_dir
        return dict(
            os.environ,
            HOME=d,  # the Erlang cookie lives here
            RABBITMQ_HOME="/usr/lib/rabbitmq",
            RABBITMQ_NODENAME="rabbit@localhost",
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            ERL_EPMD_ADDRESS="127.0.0.1",
            ERL_EPMD_PORT=str(self.epmd_port),
            RABBITMQ_MNESIA_BASE=os.path.join(d, "mnesia"),
            RABBITMQ_LOG_BASE=os.path.join(d, "log"),
            RABBITMQ_CONFIG_FILE=os.path.join(d, "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(d, "enabled_plugins"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )

    def _write_config(self) -> None:
        for sub in ("mnesia", "log"):
            os.makedirs(os.path.join(self.base_dir, sub), exist_ok=True)
        with open(os.path.join(self.base_dir, "enabled_plugins"), "w") as f:
            f.write("[].\n")
        conf = os.path.join(self.base_dir, "rabbitmq.conf")
        with open(os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(
                f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\n"
                f"default_user = {self.user}\n"
                f"default_pass = {self.password}\n"
                "loopback_users = none\n"
                "log.console = true\n"
                "log.file = false\n"
                "vm_memory_high_watermark.absolute = 512MiB\n"
                "disk_free_limit.absolute = 50MB\n"
            )

    # -- life cycle -----------------------------------------------------------
    def start(self, timeout: float = 90.0) -> RabbitMQServer:
        self._write_config()
        env = self.env()
        if self.epmd is None or self.epmd.poll() is not None:
            self.epmd = subprocess.Popen(
                ["/usr/bin/epmd", "-address", "127.0.0.1", "-port", str(self.epmd_port)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=env, start_new_session=True)
            procs.wait_for(lambda: _port_open(self.epmd_port), 10, "epmd")
        logf = open(self.log, "ab")
        # not /usr/sbin/rabbitmq-server: that one switches to the rabbitmq user
        # and the system data dir
        self.beam = subprocess.Popen(
            [os.path.join(RABBIT_BIN, "rabbitmq-server")], stdout=logf,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True)
        logf.close()

        def ready():
            if self.beam.poll() is not None:
                raise RuntimeError(f"RabbitMQ exited with {self.beam.returncode}; see {self.log}")
            return _port_open(self.amqp_port) and _amqp_ready(
                self.amqp_port, self.user, self.password)

        procs.wait_for(ready, timeout, f"RabbitMQ on 127.0.0.1:{self.amqp_port}", interval=0.2)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the node (SIGTERM to its process group: a clean shutdown); epmd stays."""
        if self.beam is None:
            return
        try:
            os.killpg(self.beam.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.beam.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.beam.pid, signal.SIGKILL)
            self.beam.wait()
        procs.wait_for(lambda: not _port_open(self.amqp_port), timeout, "AMQP port to close")
        self.beam = None

    def kill(self) -> None:
        """SIGKILL the node: a crash, not a shutdown."""
        if self.beam is not None:
            try:
                os.killpg(self.beam.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.beam.wait()
            self.beam = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the node, then epmd."""
        self.stop()
        if self.epmd is not None:
            procs.stop(self.epmd)
            self.epmd = None

    @property
    def running(self) -> bool:
        return self.beam is not None and self.beam.poll() is None

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """rabbitmqctl against this node (e.g. ``ctl("list_queues", "name", "messages")``)."""
        out = subprocess.run([os.path.join(RABBIT_BIN, "rabbitmqctl"), "-q", *args],
                             env=self.env(), capture_output=True, text=True, timeout=timeout,
                             check=True)
        return out.stdout

    def queues(self) -> dict[str, int]:
        """Queue name -> ready message count."""
        result = {}
        for line in self.ctl("list_queues", "name", "messages", "--no-table-headers").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                result[parts[0]] = int(parts[1])
        return result


class ExternalRabbitMQ:
    """A broker the tests did not start (named by INSTANCEHA_TEST_RABBITMQ_URL)."""

    owned = False
    running = True

    def __init__(self, url: str) -> None:
        self.url = url
        self.redacted_url = "(external broker, URL from $" + ENV_URL + ")"

    def stop(self) -> None:
        raise RuntimeError("cannot stop an external RabbitMQ")

    start = restart = kill = stop

    def close(self) -> None:
        pass


def rabbitmq(base_dir: str) -> RabbitMQServer | ExternalRabbitMQ:
    """The broker to test against: the external one if the environment names it,
    else a new private one (started)."""
    url = os.environ.get(ENV_URL)
    if url:
        return ExternalRabbitMQ(url)
    return RabbitMQServer(base_dir).start()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("start").add_argument("dir")
    sub.add_parser("stop").add_argument("dir")
    args = p.parse_args(argv)
    base = os.path.abspath(args.dir)
    state = os.path.join(base, "rabbitmq.json")
    if args.cmd == "start":
        os.makedirs(base, exist_ok=True)
        server = RabbitMQServer(base).start()
        with open(os.open(state, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            json.dump({"beam": server.beam.pid, "epmd": server.epmd.pid, "url": server.url}, f)
        print(server.url)
        return 0
    try:
        with open(state) as f:
            recorded = json.load(f)
    except FileNotFoundError:
        print(f"no RabbitMQ recorded in {state}", file=sys.stderr)
        return 1
    for key in ("beam", "epmd"):  # epmd last
        pid = recorded[key]
        if procs.alive(pid):
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            procs.wait_for(lambda pid=pid: not procs.alive(pid), 30, f"{key} to stop")
    os.unlink(state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
