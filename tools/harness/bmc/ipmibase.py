"""What the two IPMI BMC emulators share: one process per BMC on its own free
UDP port on loopback, its state in a private directory, the power bit in a
file a test can read and set behind the BMC's back.

A subclass says how to run its emulator (``command``, ``environment``,
``prepare``) and how its state file spells the power bit (``ON``/``OFF``).
"""

from __future__ import annotations

import os
import socket
import subprocess

from harness import procs
from harness.bmc import ipmiprobe


class IpmiBMC:
    kind = "ipmi"
    label = "IPMI BMC"  # in error messages
    log_name = "bmc.log"
    ON, OFF = "on", "off"  # the power bit as the state file holds it

    def __init__(self, base_dir: str, name: str = "bmc", user: str = "admin",
                 password: str = "password", power_delay: float = 0, initial_on: bool = True,
                 port: int | None = None) -> None:
        self.dir = os.path.join(os.path.abspath(base_dir), name)
        self.name = name
        self.user = user
        self.password = password
        self.power_delay = power_delay
        self.initial_on = initial_on
        self.port = port or procs.free_port(socket.SOCK_DGRAM)
        self.state_file = os.path.join(self.dir, "power")
        self.proc: subprocess.Popen | None = None

    # -- what a subclass provides ---------------------------------------------
    def prepare(self) -> None:
        """Write the emulator's configuration into ``self.dir`` (exists)."""

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        """The emulator's environment (None: this process's)."""
        return None

    # -- start, stop ------------------------------------------------------------
    @property
    def log_path(self) -> str:
        return os.path.join(self.dir, self.log_name)

    def start(self, timeout: float = 15.0):
        os.makedirs(self.dir, exist_ok=True)
        if not os.path.exists(self.state_file):
            self.set_power(self.initial_on)
        self.prepare()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=self.environment(), start_new_session=True, cwd=self.dir,
        )
        log.close()
        procs.wait_for(self._ready, timeout, f"{self.label} {self.name} on udp {self.port}")
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.label} {self.name} exited with {self.proc.returncode}; "
                               f"see {self.log_path}")
        return ipmiprobe.answers(self.port, timeout=0.2)

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc, timeout=5)

    def restart(self, timeout: float = 15.0):
        """A new emulator process on the same port and power state: every IPMI
        session the BMC knew is gone, and no client is told."""
        self.stop()
        return self.start(timeout)

    # -- the "chassis" ------------------------------------------------------------
    def powered_on(self) -> bool:
        with open(self.state_file) as f:
            return f.read().strip() == self.ON

    def set_power(self, on: bool) -> None:
        with open(self.state_file, "w") as f:
            f.write((self.ON if on else self.OFF) + "\n")

    def entry(self, **extra) -> dict:
        """An inventory entry (a dict as in the YAML file) for this BMC."""
        return {"driver": "ipmi", "address": "127.0.0.1", "port": self.port,
                "username": self.user, "password": self.password, **extra}
