"""Local health of a compute node: are nova-compute and libvirtd running?

Read from /proc, no subprocess: cheap enough to run every few seconds and
never blocks on a hung service.
"""

from __future__ import annotations

import os
from collections.abc import Mapping


def _cmdlines(proc_root: str = "/proc"):
    me = os.getpid()
    for entry in os.listdir(proc_root):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(os.path.join(proc_root, entry, "cmdline"), "rb") as f:
                raw = f.read()
            with open(os.path.join(proc_root, entry, "stat"), "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # gone meanwhile, or a kernel thread
        if raw and state != b"Z":
            yield raw.replace(b"\0", b" ").decode(errors="replace")


class ProcessProbe:
    """name -> running, where running means a live process whose command line
    contains the name's pattern."""

    def __init__(self, patterns: Mapping[str, str], proc_root: str = "/proc") -> None:
        self.patterns = dict(patterns)
        self.proc_root = proc_root

    def __call__(self) -> dict[str, bool]:
        found = dict.fromkeys(self.patterns, False)
        pending = dict(self.patterns)
        for cmdline in _cmdlines(self.proc_root):
            for name, pattern in list(pending.items()):
                if pattern in cmdline:
                    found[name] = True
                    del pending[name]
            if not pending:
                break
        return found


def boot_id(path: str = "/proc/sys/kernel/random/boot_id") -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None
