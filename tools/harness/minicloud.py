"""The project's real mini-cloud (tools/minicloud) from Python.

    cloud = MiniCloud(run_dir).up()        # tools/minicloud/up.sh, ~60-110 s
    cloud.endpoints["auth"], cloud.endpoints["computes"], cloud.connection()
    cloud.kill_compute("compute2")         # SIGKILL its nova-compute
    cloud.kill_host("compute2")            # ...and its management address goes silent
    cloud.start_compute("compute2")        # same config and node identity, address back
    cloud.down()                           # tools/minicloud/down.sh (only our PIDs)

``MiniCloud.attach(run_dir)`` uses a cloud that is already up (for example
one started by hand with ``tools/minicloud/up.sh``) and leaves it running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness import hostnet, procs  # noqa: E402

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MINICLOUD_DIR = os.path.join(TOP, "tools", "minicloud")


class MiniCloudError(RuntimeError):
    pass


class MiniCloud:
    def __init__(self, run_dir: str, computes: int = 3, owned: bool = True) -> None:
        self.run_dir = os.path.abspath(run_dir)
        self.computes = computes
        self.owned = owned
        self._endpoints: dict | None = None

    # -- life cycle ----------------------------------------------------------

    @staticmethod
    def install() -> None:
        """tools/minicloud/install.sh: ~2 s when the venv is up to date."""
        _run([os.path.join(MINICLOUD_DIR, "install.sh")], "install.sh", timeout=900)

    def up(self, timeout: float = 400.0) -> MiniCloud:
        env = dict(os.environ, MINICLOUD_COMPUTES=str(self.computes))
        env.pop("MINICLOUD_PORT_BASE", None)  # always a free block
        _run([os.path.join(MINICLOUD_DIR, "up.sh"), self.run_dir], "up.sh", timeout, env)
        self._endpoints = None
        return self

    def down(self, wipe: bool = False) -> str:
        for host in self.hosts if self._has_endpoints() else ():
            self.restore(host)
        argv = [os.path.join(MINICLOUD_DIR, "down.sh"), self.run_dir] + (["--wipe"] if wipe else [])
        return _run(argv, "down.sh", 120)

    @classmethod
    def in_run_dir(cls, prefix: str = "test-", computes: int = 3) -> MiniCloud:
        """A cloud whose state lives in a fresh dir under <repo>/.run/minicloud.

        Not under pytest's tmp dirs: a concurrent pytest session may prune those
        while this cloud still runs (seen: the MariaDB datadir vanished)."""
        base = os.path.join(TOP, ".run", "minicloud")
        os.makedirs(base, exist_ok=True)
        return cls(tempfile.mkdtemp(prefix=prefix, dir=base), computes=computes)

    @classmethod
    def attach(cls, run_dir: str) -> MiniCloud:
        cloud = cls(run_dir, owned=False)
        cloud.computes = len(cloud.endpoints["computes"])
        missing = [n for n in ("keystone", "nova-api", "nova-conductor", "nova-scheduler")
                   if cloud.pid(n) is None]
        if missing:
            raise MiniCloudError(f"mini-cloud in {run_dir} is not running: {missing} are down")
        return cloud

    # -- facts ---------------------------------------------------------------

    @property
    def endpoints(self) -> dict:
        if self._endpoints is None:
            with open(os.path.join(self.run_dir, "endpoints.json")) as f:
                self._endpoints = json.load(f)
        return self._endpoints

    @property
    def hosts(self) -> list[str]:
        return list(self.endpoints["computes"])

    def _has_endpoints(self) -> bool:
        return os.path.exists(os.path.join(self.run_dir, "endpoints.json"))

    def host_ip(self, host: str) -> str:
        """The host's management address (its own loopback address: nova-compute's
        ``my_ip``, Nova's hypervisor ``host_ip``)."""
        ips = self.endpoints.get("host_ips")
        if not ips or host not in ips:
            raise MiniCloudError(f"no management address for {host}: a mini-cloud started "
                                 "by an older tools/minicloud/up.sh (start it again)")
        return ips[host]

    def pid(self, name: str) -> int | None:
        """The PID of a component recorded by up.sh, if that process is alive."""
        try:
            with open(os.path.join(self.run_dir, "pids", f"{name}.pid")) as f:
                fields = f.read().split()
        except FileNotFoundError:
            return None
        pid = int(fields[0])
        if not procs.alive(pid):
            return None
        if len(fields) > 1 and fields[1] != "0" and _starttime(pid) != fields[1]:
            return None  # a recycled PID
        return pid

    def connection(self):
        """An openstacksdk connection as the cloud admin (for test set-up)."""
        import openstack

        ep = self.endpoints
        return openstack.connect(auth=dict(ep["auth"]), region_name=ep["region_name"],
                                 interface="public", identity_api_version="3")

    def nova_options(self) -> dict[str, object]:
        """[nova] options for instanceha against this cloud."""
        ep = self.endpoints
        return dict(ep["auth"], auth_type="password", region_name=ep["region_name"],
                    interface="public")

    # -- failures ------------------------------------------------------------

    def _compute(self, host: str, action: str) -> int | None:
        if host not in self.hosts:
            raise MiniCloudError(f"{host} is not a compute of this cloud ({self.hosts})")
        n = host[len("compute"):]
        out = _run([os.path.join(MINICLOUD_DIR, "lib", "compute.sh"), self.run_dir, n, action],
                   f"compute.sh {host} {action}", 60).strip()
        return int(out.splitlines()[-1]) if out else None

    def kill_compute(self, host: str) -> int | None:
        """SIGKILL the host's nova-compute (a host dying without warning)."""
        return self._compute(host, "kill")

    def start_compute(self, host: str) -> int:
        """(Re)start the host's nova-compute with the same config and node identity;
        its management address answers again (the host is back)."""
        self.restore(host)
        return self._compute(host, "start")

    def kill_host(self, host: str) -> int | None:
        """The whole host dies: its management address goes silent (no packet to it
        is answered, hostnet.silence) and its nova-compute is SIGKILLed. The caller
        kills the host's agent. ``start_compute`` brings it back."""
        self.silence(host)
        return self.kill_compute(host)

    def freeze_host(self, host: str) -> int | None:
        """The whole host hangs (a stuck kernel): its address goes silent and its
        nova-compute is SIGSTOPped (the caller freezes the host's agent)."""
        self.silence(host)
        pid = self.pid(f"nova-{host}")
        if pid is not None:
            os.kill(pid, signal.SIGSTOP)
        return pid

    def silence(self, host: str) -> None:
        hostnet.silence(self.host_ip(host))

    def restore(self, host: str) -> None:
        address = (self.endpoints.get("host_ips") or {}).get(host)
        if address is not None:  # (a cloud from an older up.sh has none to restore)
            hostnet.restore(address)

    def silenced(self, host: str) -> bool:
        return hostnet.is_silenced(self.host_ip(host))

    def compute_running(self, host: str) -> bool:
        return self.pid(f"nova-{host}") is not None

    def compute_started_at(self, host: str) -> float | None:
        """When the host's running nova-compute started (epoch seconds), if it runs."""
        pid = self.pid(f"nova-{host}")
        ticks = _starttime(pid) if pid is not None else None
        if ticks is None:
            return None
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return btime + int(ticks) / os.sysconf("SC_CLK_TCK")

    def log(self, name: str) -> str:
        try:
            with open(os.path.join(self.run_dir, "log", f"{name}.log"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""


def _starttime(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (FileNotFoundError, IndexError):
        return None


def _run(argv, what, timeout, env=None) -> str:
    """Run a harness script, echoing its progress lines to stderr as they come."""
    t0 = time.monotonic()
    lines = []
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env, stdin=subprocess.DEVNULL) as proc:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("[minicloud") or "ERROR" in line:
                sys.stderr.write(line)
                sys.stderr.flush()
            if time.monotonic() - t0 > timeout:
                proc.kill()
        rc = proc.wait()
    out = "".join(lines)
    if rc != 0:
        raise MiniCloudError(
            f"{what} failed with {rc} after {time.monotonic() - t0:.0f} s:\n{out[-8000:]}")
    return out


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Start or stop the mini-cloud from Python.")
    p.add_argument("cmd", choices=("up", "down", "kill", "start"))
    p.add_argument("run_dir")
    p.add_argument("host", nargs="?")
    a = p.parse_args(argv)
    cloud = MiniCloud(a.run_dir)
    if a.cmd == "up":
        print(cloud.up().endpoints["nova"])
    elif a.cmd == "down":
        print(cloud.down())
    elif a.cmd == "kill":
        print(cloud.kill_compute(a.host))
    else:
        print(cloud.start_compute(a.host))
    return 0


if __name__ == "__main__":
    sys.exit(main())
