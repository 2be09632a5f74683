"""benchmarks/targets.py: the verdicts every benchmark prints and exits with."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))

import targets  # noqa: E402

TARGETS = (
    targets.Target("latency_p95_s", 3.0, "<=", "s", "fault to FAILED"),
    targets.Target("hosts", 1000, ">=", what="sessions held"),
    targets.Target("false_failed", 0, "=="),
)


@pytest.mark.parametrize("measured, status, verdict", [
    ({"latency_p95_s": 2.5, "hosts": 1000, "false_failed": 0}, 0, ["met"] * 3),
    ({"latency_p95_s": 3.0, "hosts": 1001, "false_failed": 0}, 0, ["met"] * 3),
    ({"latency_p95_s": 3.01, "hosts": 1000, "false_failed": 0}, 1, ["MISSED", "met", "met"]),
    ({"latency_p95_s": 1.0, "hosts": 999, "false_failed": 1}, 1, ["met", "MISSED", "MISSED"]),
    ({"latency_p95_s": None, "hosts": 1000}, 1, ["not measured", "met", "not measured"]),
    ({"latency_p95_s": float("nan"), "hosts": 1000, "false_failed": 0}, 1,
     ["not measured", "met", "met"]),
])
def test_report_verdicts_and_exit_status(measured, status, verdict):
    lines, out = [], {}
    assert targets.report(TARGETS, measured, out=out, say=lines.append) == status
    assert [r["verdict"] for r in out["verdicts"]] == verdict
    assert out["targets_met"] is (status == 0)
    assert len(lines) == len(TARGETS) + 1
    for line, v in zip(lines, verdict, strict=False):
        assert line.endswith(f": {v}")
    assert lines[-1].startswith(f"verdict: {verdict.count('met')} of 3 targets met")


def test_verdicts_are_json_ready_records():
    (rec,) = targets.verdicts(TARGETS[:1], {"latency_p95_s": 1.25})
    assert rec == {"name": "latency_p95_s", "op": "<=", "limit": 3.0, "unit": "s",
                   "measured": 1.25, "verdict": "met", "what": "fault to FAILED"}


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "x", "limit": 1, "op": "<"}, "op must be one of"),
    ({"name": "x", "limit": float("nan"), "op": "<="}, "limit must be a number"),
    ({"name": "x", "limit": "1", "op": "<="}, "limit must be a number"),
])
def test_bad_target_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        targets.Target(**kwargs)


def test_duplicate_names_are_refused():
    with pytest.raises(ValueError, match="duplicate target names"):
        targets.verdicts(TARGETS + TARGETS[:1], {})


def test_percentile_interpolates_and_knows_no_value():
    assert targets.pct([], 50) is None
    assert targets.pct([3.0], 95) == 3.0
    assert targets.pct([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert targets.pct([4.0, 1.0, 3.0, 2.0], 100) == 4.0
