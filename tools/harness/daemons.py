"""Run instanceha's own daemons (agent, controller) as real processes.

Each daemon gets its own config file and log file in a work dir; the test
reads the log to see what the daemon decided.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from harness import procs

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


def write_conf(path: str, sections: dict[str, dict[str, object]]) -> str:
    with open(path, "w") as f:
        for group, values in sections.items():
            f.write(f"[{group}]\n")
            for key, value in values.items():
                if isinstance(value, dict):
                    value = ",".join(f"{k}:{v}" for k, v in value.items())
                f.write(f"{key} = {value}\n")
            f.write("\n")
    return path


class Daemon:
    def __init__(self, argv: list[str], workdir: str, name: str, env: dict | None = None):
        self.argv = argv
        self.name = name
        self.workdir = workdir
        self.log = os.path.join(workdir, f"{name}.log")
        self.env = dict(os.environ, **(env or {}))
        self.proc: subprocess.Popen | None = None

    @classmethod
    def instanceha(cls, prog: str, workdir: str, name: str, sections: dict, env=None,
                   argv_prefix: list[str] | None = None) -> Daemon:
        sections = {k: dict(v) for k, v in sections.items()}
        default = sections.setdefault("DEFAULT", {})
        default.setdefault("log_file", os.path.join(workdir, f"{name}.log"))
        default.setdefault("debug", "false")
        conf = write_conf(os.path.join(workdir, f"{name}.conf"), sections)
        exe = argv_prefix or [os.path.join(BIN, prog)]
        return cls(exe + ["--config-file", conf], workdir, name, env)

    def start(self) -> Daemon:
        out = open(os.path.join(self.workdir, f"{self.name}.out"), "ab")
        self.proc = subprocess.Popen(
            self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=self.env, start_new_session=True,
        )
        out.close()
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def freeze(self) -> None:
        self.signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.signal(signal.SIGCONT)

    def terminate(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        procs.stop(self.proc, timeout)
        return self.proc.returncode

    def read_log(self) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def output(self) -> str:
        try:
            with open(os.path.join(self.workdir, f"{self.name}.out"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern: str, timeout: float = 30.0, after: int = 0) -> re.Match:
        rx = re.compile(pattern)

        def found():
            if self.proc is not None and self.proc.poll() is not None:
                m = rx.search(self.read_log(), after)
                if m:
                    return m
                raise AssertionError(
                    f"{self.name} exited with {self.proc.returncode} before logging "
                    f"{pattern!r}; output: {self.output()[-2000:]}; log: {self.read_log()[-2000:]}"
                )
            return rx.search(self.read_log(), after)

        return procs.wait_for(found, timeout, f"{self.name} to log {pattern!r}")

    def log_size(self) -> int:
        return len(self.read_log())


def wait_until(predicate, timeout: float, what: str):
    return procs.wait_for(predicate, timeout, what)


def now() -> float:
    return time.monotonic()
