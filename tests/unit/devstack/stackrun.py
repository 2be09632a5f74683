"""One node's ``stack.sh`` as far as the devstack plugin goes: its phases run
in bash against the stub of devstack's function library (stub_functions.sh),
which records every call, and instanceha's real commands (bin/instanceha
records their argv, then runs the ones of this virtualenv)."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
DEVSTACK = os.path.join(TOP, "devstack")
PHASES = ("pre-install", "install", "post-config", "extra")
ALL_IN_ONE = "key,rabbit,mysql,n-api,n-cond,n-sch,n-cpu,placement-api,g-api"
BIN = os.path.join(HERE, "bin")
"""What the stub's get_python_exec_prefix names: instanceha's commands, recorded."""


class Run:
    """One node's stack.sh (the plugin's phases) against the stub."""

    def __init__(self, tmp_path, phases=PHASES, **env):
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp_path
        self.calls_file = tmp_path / "calls.tsv"
        self.conf_dir = pathlib.Path(env.get("INSTANCEHA_CONF_DIR", tmp_path / "etc-instanceha"))
        script = "\n".join(
            ["set -o errexit", f"source {HERE}/stub_functions.sh",
             f"source {DEVSTACK}/settings"]
            + [f"source {DEVSTACK}/plugin.sh stack {p}" for p in phases])
        base = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CALLS": str(self.calls_file),
                "DEST": str(tmp_path / "stack"), "DATA_DIR": str(tmp_path / "data"),
                "INSTANCEHA_CONF_DIR": str(self.conf_dir), "STUB_DISTRO": "ubuntu",
                "INSTANCEHA_READY_TIMEOUT": "3", "SERVICE_HOST": "127.0.0.1",
                "INSTANCEHA_AGENT_SESSION_DIR": str(tmp_path / "run"),
                "INSTANCEHA_TMPFILES_DIR": str(tmp_path / "tmpfiles.d"),
                "STUB_COMPUTE_HOSTS": "compute1 compute2", "STUB_PYTHON_PREFIX": BIN,
                "STUB_REAL_PREFIX": os.path.dirname(sys.executable),
                "STUB_COORDINATION_CHECK": "ok"}
        base.update(env)
        self.proc = subprocess.run(["bash", "-c", script], env=base, capture_output=True,
                                   text=True, timeout=180)
        self.calls = [line.split("\t") for line in
                      (self.calls_file.read_text().splitlines()
                       if self.calls_file.exists() else [])]

    @property
    def ok(self):
        return self.proc.returncode == 0

    def of(self, name):
        return [c[1:] for c in self.calls if c[0] == name]

    def path(self, name):
        return str(self.conf_dir / name)

    @property
    def conf_path(self):
        return self.path("instanceha.conf")

    def conf(self, path=None) -> dict[tuple[str, str], str]:
        """{(section, option): value} of the iniset calls on one file."""
        path = path or self.conf_path
        return {(s, o): v for f, s, o, v in self.of("iniset") if f == path}

    def log(self, service) -> str:
        path = f"{self.calls_file}.{service}.log"
        return open(path).read() if os.path.exists(path) else ""

    def stop(self) -> None:
        """Stop what run_process really started (STUB_RUN), by process group."""
        pids = f"{self.calls_file}.pids"
        if not os.path.exists(pids):
            return
        for line in open(pids).read().split():
            try:
                os.killpg(int(line), signal.SIGTERM)
            except ProcessLookupError:
                pass
        for line in open(pids).read().split():
            try:
                os.waitpid(int(line), 0)
            except ChildProcessError:
                # not our child (bash started it): wait for the group to go
                _wait_gone(int(line))
        os.unlink(pids)


def _wait_gone(pid: int, timeout: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)
