"""The chaos suite's record: which fault each test injected and what happened.

A chaos test says what it does with a marker and what it saw with the
``fault`` fixture::

    @pytest.mark.fault("ZooKeeper loses quorum", component="zookeeper",
                       expect="the leader stops acting; nothing is fenced")
    def test_quorum_loss(fault, ...):
        ...
        fault.observed(f"leader stopped after {dt:.1f} s; 0 fences")

``pytest --fault-report PATH`` writes every such test's fault, expectation,
outcome (passed / failed / skipped) and observations as JSON; then
``tools/fault_table.py PATH`` renders the table in doc/source/faults.rst.
A unit test checks that the table names every fault the suite declares.
"""

from __future__ import annotations

import datetime
import json
import os
import platform

import pytest


class FaultRecord:
    def __init__(self) -> None:
        self.observations: list[str] = []

    def observed(self, text: str) -> None:
        self.observations.append(text)


_RECORDS: dict[str, dict] = {}
_RECORD = pytest.StashKey[FaultRecord]()
"""Where the ``fault`` fixture keeps a test's record on its item."""


def pytest_addoption(parser):
    parser.addoption("--fault-report", default=None, metavar="PATH",
                     help="write the chaos suite's faults and outcomes as JSON to PATH")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "fault(name, component, expect): a chaos test: the fault it injects, the "
        "component hit and the expected behaviour (recorded by --fault-report)")


@pytest.fixture
def fault(request):
    record = FaultRecord()
    request.node.stash[_RECORD] = record
    return record


def _declared(item):
    marker = item.get_closest_marker("fault")
    if marker is None:
        return None
    name = marker.args[0] if marker.args else marker.kwargs["name"]
    return {"name": name, "component": marker.kwargs.get("component", ""),
            "expect": marker.kwargs.get("expect", ""), "test": item.nodeid}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    declared = _declared(item)
    if declared is None:
        return
    entry = _RECORDS.setdefault(item.nodeid, dict(declared, outcome="not run",
                                                 observed=[]))
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        entry["outcome"] = report.outcome
        if report.outcome == "skipped" and isinstance(report.longrepr, tuple):
            entry["observed"].append(f"skipped: {report.longrepr[2]}")
        if report.outcome == "failed":
            crash = getattr(report.longrepr, "reprcrash", None)
            message = crash.message.splitlines()[0][:200] if crash is not None else ""
            entry["observed"].append(f"failed: {message}" if message else "failed")
    record = item.stash.get(_RECORD, None)
    if record is not None and report.when == "call":
        entry["observed"][:0] = record.observations


def pytest_sessionfinish(session):
    path = session.config.getoption("--fault-report")
    if not path or not _RECORDS:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"generated": datetime.datetime.now(datetime.timezone.utc).isoformat(
                       timespec="seconds"),
                   "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPU "
                              f"{platform.python_version()}",
                   "faults": sorted(_RECORDS.values(), key=lambda r: (r["component"],
                                                                       r["name"]))},
                  f, indent=1)
