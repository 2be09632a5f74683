"""pyghmi-based BMCs (see pyghmi_bmc_main.py), one process per UDP port
(start/stop/restart and the power state file: see ``ipmibase.IpmiBMC``)."""

from __future__ import annotations

import os
import sys

from harness.bmc.ipmibase import IpmiBMC

HERE = os.path.dirname(os.path.abspath(__file__))


class PyghmiBMC(IpmiBMC):
    kind = "pyghmi"
    label = "pyghmi BMC"
    log_name = "bmc.log"
    ON, OFF = "on", "off"

    def command(self) -> list[str]:
        return [sys.executable, os.path.join(HERE, "pyghmi_bmc_main.py"), "--port",
                str(self.port), "--user", self.user, "--state-file", self.state_file,
                "--power-delay", str(self.power_delay)]

    def environment(self) -> dict[str, str]:
        # the password goes through the environment, never argv
        return dict(os.environ, BMC_PASSWORD=self.password)
