"""systemd notify protocol over a real unix datagram socket (no systemd needed)."""

import socket

from instanceha.cmd.sdnotify import SystemdNotifier
from tests.unit.clock import FakeClock


def _socket(tmp_path):
    path = str(tmp_path / "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(1)
    return s, path


def test_ready_watchdog_stopping(tmp_path):
    s, path = _socket(tmp_path)
    clock = FakeClock(0.0)
    n = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"}, clock=clock)
    n.ready("joined as compute1")
    assert s.recv(100) == b"READY=1\nSTATUS=joined as compute1"
    n.watchdog()
    assert s.recv(100) == b"WATCHDOG=1"
    clock.advance(4.9)
    n.watchdog()  # within half the period: no ping
    clock.advance(0.1)
    n.watchdog()
    assert s.recv(100) == b"WATCHDOG=1"
    n.stopping()
    assert s.recv(100) == b"STOPPING=1"
    s.setblocking(False)
    try:
        extra = s.recv(100)
    except BlockingIOError:
        extra = None
    assert extra is None
    s.close()


def test_disabled_without_systemd():
    n = SystemdNotifier({})
    assert not n.enabled and n.watchdog_interval is None
    n.ready()
    n.watchdog()
    n.stopping()


def test_loop_hook_sends_ready_once_then_only_pings(tmp_path):
    s, path = _socket(tmp_path)
    clock = FakeClock(0.0)
    n = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}, clock=clock)
    joined = []
    hook = n.loop_hook(lambda: bool(joined), "joined as compute1")
    hook()
    assert s.recv(100) == b"WATCHDOG=1"  # not ready yet: no READY
    joined.append(True)
    clock.advance(1.0)
    hook()
    assert s.recv(100) == b"READY=1\nSTATUS=joined as compute1"
    assert s.recv(100) == b"WATCHDOG=1"
    clock.advance(1.0)
    hook()
    assert s.recv(100) == b"WATCHDOG=1"
    s.close()
