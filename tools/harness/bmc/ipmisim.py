"""OpenIPMI ``ipmi_sim`` BMCs (Debian package ``openipmi``) on loopback.

One process per BMC (start/stop/restart and the power state file: see
``ipmibase.IpmiBMC``). Power requests go to ``chassis_control.sh`` (without
a chassis control program ipmi_sim refuses power commands); ``power_delay``
makes it a slow BMC.
ipmi_sim does not answer "Get Channel Cipher Suites": ipmitool needs ``-C 3``;
pyghmi negotiates by itself.
"""

from __future__ import annotations

import os
import re
import subprocess

from harness.bmc.ipmibase import IpmiBMC

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


class IpmiSimBMC(IpmiBMC):
    kind = "ipmi_sim"
    label = "ipmi_sim"
    log_name = "ipmi_sim.log"
    ON, OFF = "1", "0"  # chassis_control.sh's power bit

    def prepare(self) -> None:
        os.makedirs(os.path.join(self.dir, "state"), exist_ok=True)
        guid = ("a1234567" + format(self.port, "08x")).ljust(32, "0")
        with open(self._emu, "w") as f:
            f.write(EMU)
        fd = os.open(self._lan, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(LAN.format(name=self.name, port=self.port, guid=guid, chassis=CHASSIS,
                               state=self.state_file, delay=self.power_delay,
                               user=self.user, password=self.password))

    @property
    def _emu(self) -> str:
        return os.path.join(self.dir, "bmc.emu")

    @property
    def _lan(self) -> str:
        return os.path.join(self.dir, "lan.conf")

    def command(self) -> list[str]:
        return ["ipmi_sim", "-n", "-c", self._lan, "-f", self._emu,
                "-s", os.path.join(self.dir, "state")]

    def active_sessions(self) -> int:
        """IPMI sessions open on the BMC now, asked by ipmitool (an independent
        client; its own session is not counted). The password goes through
        the environment (``-E``), never argv."""
        r = subprocess.run(
            ["ipmitool", "-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", str(self.port),
             "-U", self.user, "-E", "session", "info", "active"],
            capture_output=True, text=True, timeout=30,
            env=dict(os.environ, IPMI_PASSWORD=self.password))
        found = re.search(r"active sessions\s*:\s*(\d+)", r.stdout)
        if r.returncode != 0 or found is None:
            raise RuntimeError(f"ipmitool session info on {self.name}: rc {r.returncode}: "
                               f"{r.stderr.strip()[-300:]}")
        return int(found.group(1)) - 1

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
