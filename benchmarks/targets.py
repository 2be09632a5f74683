"""Benchmark targets declared as data, and the verdict on each.

Every benchmark declares what it promises as a tuple of :class:`Target`, measures,
then ends with::

    sys.exit(targets.report(TARGETS, measured, out=result_json))

``report`` prints one verdict line per target, stores the verdicts in the
benchmark's JSON (``out["verdicts"]``) and returns the exit status: 0 only when
every target was measured and met. A target a run could not measure (the run
stopped early, the figure does not apply) is reported as such and fails the run:
a benchmark that measured nothing has not met anything.

Targets are never asserted in tests: the machines are shared and noisy; a miss
is a finding printed and recorded, not a red test.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Callable, Mapping, MutableMapping, Sequence

OPS: Mapping[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
}

MET = "met"
MISSED = "MISSED"
NOT_MEASURED = "not measured"


@dataclasses.dataclass(frozen=True)
class Target:
    """``measured <op> limit`` must hold for the benchmark to pass."""

    name: str
    """The key of the measured figure, e.g. ``fault_to_failed_p95_s``."""
    limit: float
    op: str
    unit: str = ""
    what: str = ""
    """One line for the reader: what the figure is and why this limit."""

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"target {self.name}: op must be one of {sorted(OPS)}, "
                             f"not {self.op!r}")
        if not isinstance(self.limit, (int, float)) or isinstance(self.limit, bool) \
                or math.isnan(self.limit):
            raise ValueError(f"target {self.name}: limit must be a number")

    def verdict(self, value: float | None) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return NOT_MEASURED
        return MET if OPS[self.op](value, self.limit) else MISSED


def pct(values: Sequence[float], p: float) -> float | None:
    """The ``p``-th percentile, linearly interpolated between the closest
    ranks; None for no value (a target then reads "not measured")."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def verdicts(targets: Sequence[Target],
             measured: Mapping[str, float | None]) -> list[dict[str, object]]:
    """One record per target: name, op, limit, unit, measured value, verdict."""
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        twice = sorted(n for n in set(names) if names.count(n) > 1)
        raise ValueError(f"duplicate target names: {twice}")
    out = []
    for t in targets:
        value = measured.get(t.name)
        out.append({"name": t.name, "op": t.op, "limit": t.limit, "unit": t.unit,
                    "measured": value, "verdict": t.verdict(value), "what": t.what})
    return out


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def report(targets: Sequence[Target], measured: Mapping[str, float | None],
           out: MutableMapping[str, object] | None = None,
           say: Callable[[str], None] = print) -> int:
    """Print a verdict line per target, record them in ``out["verdicts"]`` (when
    given), and return the exit status: 0 when every target is met, else 1."""
    rows = verdicts(targets, measured)
    width = max((len(r["name"]) for r in rows), default=0)
    for r in rows:
        unit = f" {r['unit']}" if r["unit"] else ""
        say(f"target {str(r['name']).ljust(width)}  {_fmt(r['measured'])}{unit} "
            f"{r['op']} {_fmt(r['limit'])}{unit}: {r['verdict']}")
    missed = [r["name"] for r in rows if r["verdict"] != MET]
    say(f"verdict: {len(rows) - len(missed)} of {len(rows)} targets met"
        + (f"; not met: {', '.join(map(str, missed))}" if missed else ""))
    if out is not None:
        out["verdicts"] = rows
        out["targets_met"] = not missed
    return 1 if missed else 0
