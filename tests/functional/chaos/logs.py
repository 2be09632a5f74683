"""Read the controllers' decisions (leadership, phases, hand-overs) from their logs."""

from __future__ import annotations

import datetime
import re

from harness import daemons

GAINED = r"leadership gained by {name} \(token (\d+)\)"
LOST = r"leadership lost by {name}"
# the log-only actuator's hand-over (what the fencing driver would receive)
HANDOVER = re.compile(r"host=(\S+) phase=FAILED action=none token=(\d+)")
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})", re.M)


def log_time(text: str, pos: int) -> float:
    """Wall-clock time (epoch s) of the log line holding ``pos``."""
    start = text.rfind("\n", 0, pos) + 1
    m = _STAMP.match(text, start)
    if m is None:
        raise AssertionError(f"no timestamp on the log line at {pos}: {text[start:start + 80]!r}")
    return datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()


def event_time(d: daemons.Daemon, pattern: str, after: int = 0, timeout: float = 30.0) -> float:
    """Wait for ``pattern`` in d's log after offset ``after``; its line's time."""
    m = d.wait_log(pattern, timeout=timeout, after=after)
    return log_time(d.read_log(), m.start())


def handovers(d: daemons.Daemon, after: int = 0) -> list[tuple[str, int, float]]:
    """(host, token, wall time) of every hand-over d logged after offset ``after``."""
    text = d.read_log()
    return [(m.group(1), int(m.group(2)), log_time(text, m.start()))
            for m in HANDOVER.finditer(text, after)]


def phases(d: daemons.Daemon, host: str, after: int = 0) -> list[str]:
    """The phases d decided for ``host`` after offset ``after``, in order."""
    return re.findall(rf"host={re.escape(host)} phase=\w+->(\w+)", d.read_log()[after:])


def lead_first(daemon_factory, name: str, extra: dict | None = None) -> daemons.Daemon:
    """Start a controller and wait until it leads (the next ones will stand by)."""
    ctl = daemon_factory("controller", name, extra=extra)
    ctl.wait_log(GAINED.format(name=name))
    return ctl


def coordination(url: str, **more) -> dict:
    return {"coordination": dict({"backend_url": url}, **more)}


def leads(d: daemons.Daemon) -> bool:
    """Whether d's log says it leads now (its last leadership line is a gain)."""
    text = d.read_log()
    gained = [m.start() for m in re.finditer(GAINED.format(name=re.escape(d.name)), text)]
    lost = [m.start() for m in re.finditer(LOST.format(name=re.escape(d.name)), text)]
    return bool(gained) and (not lost or gained[-1] > lost[-1])


def token(d: daemons.Daemon) -> int | None:
    """The token of d's latest term, from its log."""
    found = re.findall(GAINED.format(name=re.escape(d.name)), d.read_log())
    return int(found[-1]) if found else None
