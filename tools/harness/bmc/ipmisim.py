"""OpenIPMI ``ipmi_sim`` BMCs (Debian package ``openipmi``) on loopback.

One process per BMC, each on its own free UDP port, state in a private dir.
Power requests go to ``chassis_control.sh`` (without a chassis control program
ipmi_sim refuses power commands); ``power_delay`` makes it a slow BMC.
ipmi_sim does not answer "Get Channel Cipher Suites": ipmitool needs ``-C 3``;
pyghmi negotiates by itself.
"""

from __future__ import annotations

import os
import socket
import subprocess

from harness import procs
from harness.bmc import ipmiprobe

HERE = os.path.dirname(os.path.abspath(__file__))
CHASSIS = os.path.join(HERE, "chassis_control.sh")

EMU = """mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
"""

LAN = """name "{name}"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid {guid}
  endlan
  chassis_control "{chassis} {state} {delay} 0x20"
  user 2 true  "{user}" "{password}" admin 10 none md2 md5 straight
"""


class IpmiSimBMC:
    kind = "ipmi_sim"

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

    def _write(self) -> tuple[str, str]:
        os.makedirs(os.path.join(self.dir, "state"), exist_ok=True)
        emu = os.path.join(self.dir, "bmc.emu")
        lan = os.path.join(self.dir, "lan.conf")
        with open(emu, "w") as f:
            f.write(EMU)
        guid = ("a1234567" + format(self.port, "08x")).ljust(32, "0")
        fd = os.open(lan, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(LAN.format(name=self.name, port=self.port, guid=guid, chassis=CHASSIS,
                               state=self.state_file, delay=self.power_delay,
                               user=self.user, password=self.password))
        if not os.path.exists(self.state_file):
            self.set_power(self.initial_on)
        return emu, lan

    def start(self, timeout: float = 15.0) -> IpmiSimBMC:
        emu, lan = self._write()
        log = open(os.path.join(self.dir, "ipmi_sim.log"), "ab")
        self.proc = subprocess.Popen(
            ["ipmi_sim", "-n", "-c", lan, "-f", emu, "-s", os.path.join(self.dir, "state")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=self.dir,
        )
        log.close()
        procs.wait_for(lambda: self._ready(), timeout, f"ipmi_sim {self.name} on udp {self.port}")
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"ipmi_sim {self.name} exited with {self.proc.returncode}; "
                               f"see {self.dir}/ipmi_sim.log")
        return ipmiprobe.answers(self.port, timeout=0.2)

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc, timeout=5)

    # the "chassis": what the test can check and set behind the BMC's back
    def powered_on(self) -> bool:
        with open(self.state_file) as f:
            return f.read().strip() == "1"

    def set_power(self, on: bool) -> None:
        with open(self.state_file, "w") as f:
            f.write("1\n" if on else "0\n")

    def power_requests(self) -> list[bool]:
        """Every power request the BMC received, in order (True: on, False: off)."""
        try:
            with open(self.state_file + ".requests") as f:
                return [line.strip() == "1" for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def power_off_requests(self) -> int:
        return self.power_requests().count(False)

    def first_off_at(self) -> float | None:
        """When a power request first turned the power bit off (epoch seconds)."""
        try:
            with open(self.state_file + ".changes") as f:
                for line in f:
                    bit, _, at = line.partition(" ")
                    if bit == "0":
                        return float(at)
        except FileNotFoundError:
            pass
        return None

    def entry(self, **extra) -> dict:
        """An inventory entry (a dict as in the YAML file) for this BMC."""
        return {"driver": "ipmi", "address": "127.0.0.1", "port": self.port,
                "username": self.user, "password": self.password, **extra}
