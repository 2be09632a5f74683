"""sushy-emulator (sushy-tools) with its fake systems driver on loopback.

TLS with a self-signed certificate made at start (the client uses it as CA
bundle), HTTP basic auth from a bcrypt htpasswd file (the only kind its
middleware accepts), several systems named ``systems``, state dir inside the
harness dir (upstream defaults to a shared dir in the system temp dir), and a
fixed power-change delay in whole seconds (upstream: random 1-11 s).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import bcrypt
import requests

from harness import procs
from harness.bmc import tls

HERE = os.path.dirname(os.path.abspath(__file__))


class SushyEmulator:
    kind = "sushy"

    def __init__(self, base_dir: str, systems: list[str] | tuple[str, ...] = ("node1",),
                 user: str = "admin", password: str = "password", power_delay: int = 0,
                 initial_power: str = "On", name: str = "sushy", port: int | None = None) -> None:
        self.dir = os.path.join(os.path.abspath(base_dir), name)
        self.systems = {s: str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.{s}")) for s in systems}
        self.user = user
        self.password = password
        self.power_delay = int(power_delay)
        self.initial_power = initial_power
        self.port = port or procs.free_port()
        self.proc: subprocess.Popen | None = None
        self.cert = self.key = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _write(self) -> str:
        os.makedirs(os.path.join(self.dir, "state"), exist_ok=True)
        self.cert, self.key = tls.self_signed(self.dir, "sushy")
        htpasswd = os.path.join(self.dir, "htpasswd")
        hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=4)).decode()
        fd = os.open(htpasswd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{self.user}:{hashed}\n")
        systems = [
            {"uuid": u, "name": n, "power_state": self.initial_power,
             "nics": [{"mac": "52:54:00:00:00:%02x" % (i + 1), "ip": "127.0.0.1"}]}
            for i, (n, u) in enumerate(self.systems.items())
        ]
        conf = os.path.join(self.dir, "emulator.conf")
        with open(conf, "w") as f:
            f.write(
                f"SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n"
                f"SUSHY_EMULATOR_LISTEN_PORT = {self.port}\n"
                f"SUSHY_EMULATOR_SSL_CERT = {self.cert!r}\n"
                f"SUSHY_EMULATOR_SSL_KEY = {self.key!r}\n"
                f"SUSHY_EMULATOR_AUTH_FILE = {htpasswd!r}\n"
                f"SUSHY_EMULATOR_FAKE_DRIVER = True\n"
                f"SUSHY_EMULATOR_STATE_DIR = {os.path.join(self.dir, 'state')!r}\n"
                f"SUSHY_EMULATOR_FAKE_SYSTEMS = {systems!r}\n"
            )
        return conf

    def start(self, timeout: float = 30.0) -> SushyEmulator:
        conf = self._write()
        log = open(os.path.join(self.dir, "sushy.log"), "ab")
        env = dict(os.environ, INSTANCEHA_SUSHY_POWER_DELAY=str(self.power_delay))
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "run_sushy.py"), "--config", conf],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, cwd=self.dir,
        )
        log.close()
        procs.wait_for(self._ready, timeout, f"sushy-emulator on {self.url}", interval=0.1)
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"sushy-emulator exited with {self.proc.returncode}; "
                               f"see {self.dir}/sushy.log")
        try:
            r = requests.get(f"{self.url}/redfish/v1/Systems", verify=self.cert,
                             auth=(self.user, self.password), timeout=1)
        except requests.RequestException:
            return False
        return r.status_code == 200

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc, timeout=5)

    def system_path(self, name: str) -> str:
        return f"/redfish/v1/Systems/{self.systems[name]}"

    def power_state(self, name: str) -> str:
        r = requests.get(self.url + self.system_path(name), verify=self.cert,
                         auth=(self.user, self.password), timeout=5)
        r.raise_for_status()
        return r.json()["PowerState"]

    def entry(self, name: str, **extra) -> dict:
        return {"driver": "redfish", "address": "127.0.0.1", "port": self.port,
                "username": self.user, "password": self.password, "verify": self.cert,
                "system_id": self.systems[name], **extra}
