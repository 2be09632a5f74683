"""systemd's notify protocol (Type=notify, WatchdogSec=), without a dependency.

Does nothing when not started by systemd (no NOTIFY_SOCKET).
"""

from __future__ import annotations

import os
import socket

from instanceha.clock import SYSTEM, Clock


class SystemdNotifier:
    def __init__(self, environ=os.environ, clock: Clock = SYSTEM) -> None:
        addr = environ.get("NOTIFY_SOCKET")
        if addr and addr.startswith("@"):
            addr = "\0" + addr[1:]  # abstract namespace
        self.address = addr
        self.clock = clock
        usec = environ.get("WATCHDOG_USEC")
        # ping at half the watchdog period, as sd_watchdog_enabled(3) advises
        self.watchdog_interval = int(usec) / 2e6 if usec and usec.isdigit() else None
        self._last_ping: float | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *fields: str) -> None:
        if not self.address:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(self.address)
            s.sendall("\n".join(fields).encode())

    def ready(self, status: str = "") -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def loop_hook(self, is_ready, status: str):
        """The main loop's per-iteration call: READY once ``is_ready()`` first
        holds, then watchdog pings (a hung loop stops them)."""
        sent: list[bool] = []

        def on_iteration() -> None:
            if not sent and is_ready():
                sent.append(True)
                self.ready(status)
            self.watchdog()

        return on_iteration

    def watchdog(self) -> None:
        """Call from the main loop: pings only as often as needed."""
        if self.watchdog_interval is None:
            return
        now = self.clock.monotonic()
        if self._last_ping is None or now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.send("WATCHDOG=1")
