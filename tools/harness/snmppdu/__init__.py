"""A switched rack PDU on loopback: snmpsim serving an APC PowerNet outlet table.

``ApcPDU`` starts ``snmpsim-command-responder`` (PyPI ``snmpsim``) with a data
file that makes it an APC rPDU (sysObjectID ``.1.3.6.1.4.1.318.1.3.4.5``) with
``outlets`` outlets, and the project's variation module ``apcoutlet``
(``variation/apcoutlet.py``): a SET of rPDUOutletControlOutletCommand really
switches the outlet (a power bit per outlet in a file), rPDUOutletStatusOutletState
reads it back. ClusterLabs' ``fence_apc_snmp`` drives it as it drives a real
APC AP7xxx. SNMP v1/v2c: the community is the data file's name (``private``
by default, what fence_apc_snmp sends unless told otherwise); a request with
another community gets no answer at all, as with a real PDU.

Like the BMC emulators: free loopback port, state in the directory given,
``start()``/``stop()``, the outlet's power as the PDU holds it
(``powered_on(n)``), and ``entry(n)``, the fencing-inventory device that
reaches outlet ``n`` through the ``fence_agent`` driver.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

from harness import procs

HERE = os.path.dirname(os.path.abspath(__file__))
VARIATIONS = os.path.join(HERE, "variation")

APC_RPDU = "1.3.6.1.4.1.318.1.3.4.5"
CONTROL = "1.3.6.1.4.1.318.1.1.12.3.3.1.1.4"  # rPDUOutletControlOutletCommand.N
NAME = "1.3.6.1.4.1.318.1.1.12.3.5.1.1.2"  # rPDUOutletStatusOutletName.N
STATE = "1.3.6.1.4.1.318.1.1.12.3.5.1.1.4"  # rPDUOutletStatusOutletState.N
INDEX = "1.3.6.1.4.1.318.1.1.12.3.5.1.1.1"  # rPDUOutletStatusIndex.N


def _responder() -> str:
    path = os.path.join(os.path.dirname(sys.executable), "snmpsim-command-responder")
    return path if os.path.exists(path) else shutil.which("snmpsim-command-responder")


class ApcPDU:
    kind = "snmpsim"

    def __init__(self, base_dir: str, name: str = "pdu", outlets: int = 8,
                 community: str = "private", power_delay: float = 0,
                 initial_on: bool = True, port: int | None = None,
                 outlet_names: dict[int, str] | None = None) -> None:
        self.dir = os.path.join(os.path.abspath(base_dir), name)
        self.name = name
        self.outlets = outlets
        self.community = community
        self.power_delay = power_delay
        self.initial_on = initial_on
        self.port = port or procs.free_port(socket.SOCK_DGRAM)
        self.outlet_names = outlet_names or {}
        self.state_dir = os.path.join(self.dir, "outlets")
        self.proc: subprocess.Popen | None = None

    def _records(self) -> list[tuple[str, str, str]]:
        recs = [("1.3.6.1.2.1.1.1.0", "4", "APC Web/SNMP Management Card (instanceha test PDU)"),
                ("1.3.6.1.2.1.1.2.0", "6", APC_RPDU),
                ("1.3.6.1.2.1.1.5.0", "4", self.name)]
        for n in range(1, self.outlets + 1):
            recs += [(f"{CONTROL}.{n}", "2:apcoutlet", f"kind=control,outlet={n}"),
                     (f"{INDEX}.{n}", "2", str(n)),
                     (f"{NAME}.{n}", "4", self.outlet_names.get(n, f"outlet{n}")),
                     (f"{STATE}.{n}", "2:apcoutlet", f"kind=status,outlet={n}")]
        return sorted(recs, key=lambda r: tuple(int(x) for x in r[0].split(".")))

    def _write(self) -> str:
        data = os.path.join(self.dir, "data")
        os.makedirs(data, exist_ok=True)
        os.makedirs(self.state_dir, exist_ok=True)
        with open(os.path.join(data, f"{self.community}.snmprec"), "w") as f:
            for oid, tag, value in self._records():
                f.write(f"{oid}|{tag}|{value}\n")
        for n in range(1, self.outlets + 1):
            if not os.path.exists(self._file(n)):
                self.set_power(n, self.initial_on)
        return data

    def start(self, timeout: float = 30.0) -> ApcPDU:
        data = self._write()
        log = open(os.path.join(self.dir, "snmpsim.log"), "ab")
        # snmpsim refuses to run as root unless told it may (CI runs as root); it
        # only listens on loopback
        env = dict(os.environ, SNMPSIM_ALLOW_ROOT="true")
        self.proc = subprocess.Popen(
            [_responder(), f"--data-dir={data}", f"--cache-dir={os.path.join(self.dir, 'cache')}",
             f"--variation-modules-dir={VARIATIONS}",
             f"--variation-module-options=apcoutlet:state={self.state_dir},"
             f"delay={self.power_delay}",
             f"--agent-udpv4-endpoint=127.0.0.1:{self.port}",
             "--logging-method=stderr", "--log-level=error"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, cwd=self.dir)
        log.close()
        procs.wait_for(self._ready, timeout, f"snmpsim PDU {self.name} on udp {self.port}",
                       interval=0.1)
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"snmpsim {self.name} exited with {self.proc.returncode}; "
                               f"see {self.dir}/snmpsim.log")
        return self.get(f"{STATE}.1") is not None

    def get(self, oid: str, timeout: float = 0.3) -> str | None:
        """One SNMP GET through net-snmp's snmpget (not the agent under test)."""
        r = subprocess.run(["snmpget", "-v2c", "-c", self.community, "-m", "", "-Oqv",
                            "-t", str(timeout), "-r", "0", f"127.0.0.1:{self.port}", oid],
                           capture_output=True, text=True, timeout=timeout + 5)
        return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc, timeout=5)

    # the outlets, as the PDU holds them (what a test checks and sets)
    def _file(self, outlet: int, suffix: str = "") -> str:
        return os.path.join(self.state_dir, f"outlet{outlet}{suffix}")

    def powered_on(self, outlet: int) -> bool:
        with open(self._file(outlet)) as f:
            return f.read().strip() == "1"

    def set_power(self, outlet: int, on: bool) -> None:
        with open(self._file(outlet), "w") as f:
            f.write("1\n" if on else "0\n")

    def power_requests(self, outlet: int) -> list[str]:
        """Every SET the PDU accepted for the outlet, in order: '1' on, '0' off, 'r' reboot."""
        try:
            with open(self._file(outlet, ".requests")) as f:
                return [line.strip() for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def power_off_requests(self, outlet: int) -> int:
        return self.power_requests(outlet).count("0")

    def entry(self, outlet: int, **extra) -> dict:
        """The inventory device that switches ``outlet`` through fence_apc_snmp."""
        options = {"snmp_version": "2c", "community": self.community, "power_wait": 0,
                   **extra.pop("options", {})}
        return {"driver": "fence_agent", "agent": "fence_apc_snmp", "address": "127.0.0.1",
                "port": self.port, "plug": str(outlet), "options": options, **extra}
