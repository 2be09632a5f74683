"""pyghmi-based BMCs (see pyghmi_bmc_main.py), one process per UDP port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from harness import procs
from harness.bmc import ipmiprobe

HERE = os.path.dirname(os.path.abspath(__file__))


class PyghmiBMC:
    kind = "pyghmi"

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

    def start(self, timeout: float = 15.0) -> PyghmiBMC:
        os.makedirs(self.dir, exist_ok=True)
        if not os.path.exists(self.state_file):
            self.set_power(self.initial_on)
        log = open(os.path.join(self.dir, "bmc.log"), "ab")
        # the password goes through the environment, never argv
        env = dict(os.environ, BMC_PASSWORD=self.password)
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "pyghmi_bmc_main.py"), "--port", str(self.port),
             "--user", self.user, "--state-file", self.state_file,
             "--power-delay", str(self.power_delay)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, cwd=self.dir,
        )
        log.close()
        procs.wait_for(self._ready, timeout, f"pyghmi BMC {self.name} on udp {self.port}")
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"pyghmi BMC {self.name} exited with {self.proc.returncode}; "
                               f"see {self.dir}/bmc.log")
        return ipmiprobe.answers(self.port, timeout=0.2)

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc, timeout=5)

    def powered_on(self) -> bool:
        with open(self.state_file) as f:
            return f.read().strip() == "on"

    def set_power(self, on: bool) -> None:
        with open(self.state_file, "w") as f:
            f.write("on\n" if on else "off\n")

    def entry(self, **extra) -> dict:
        return {"driver": "ipmi", "address": "127.0.0.1", "port": self.port,
                "username": self.user, "password": self.password, **extra}
