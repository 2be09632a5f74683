"""The incident journal on a real ZooKeeper: two leaders write one story, a
ZooKeeper restart loses nothing, and ``instanceha incidents`` reads it."""

import json

import pytest
from harness import daemons

from instanceha.controller.journal import IncidentJournal, IncidentState

pytestmark = pytest.mark.functional


@pytest.fixture
def coordinators(zookeeper, root_path):
    made = []

    def make():
        c = zookeeper.coordinator("controller", session_timeout=2.0, root_path=root_path)
        c.start()
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()


@pytest.fixture
def incidents(cli):
    return lambda *args: cli("incidents", *args)


def test_two_leaders_one_story_and_the_cli_reads_it(coordinators, incidents):
    a = IncidentJournal(coordinators(), "ctl-a")
    incident = a.open("compute1", 5, "fence_start", "fencing: heartbeat stale 3.1 s",
                      state=IncidentState.FENCING)
    a.record("compute1", "fence_ok", "power off read back via ipmi",
             fence={"driver": "ipmi", "read_back": "off", "attempts": 1, "duration": 0.3})
    a.close()  # writes what is queued: ctl-a then dies before force-down

    b = IncidentJournal(coordinators(), "ctl-b")
    assert b.open("compute1", 6, "fence_start", "fencing", state=IncidentState.FENCING) == incident
    b.record("compute1", "forced_down", "forced down", state=IncidentState.FENCED)
    b.record("compute1", "instance", "vm1: evacuated to compute2", counts={"evacuated": 1})
    b.record("compute1", "held", "held for an operator: flapping", state=IncidentState.HELD)
    other = b.open("compute2", 6, "fence_start", "fencing", state=IncidentState.FENCING)
    b.record("compute2", "restored", "back in service", state=IncidentState.CLOSED)
    b.close()

    listed = incidents("--format", "json")
    assert listed.returncode == 1, listed.stderr  # compute1 is held: needs an operator
    rows = {r["id"]: r for r in json.loads(listed.stdout)}
    assert set(rows) == {incident, other}
    assert rows[incident]["state"] == "held" and rows[incident]["evacuated"] == 1
    assert rows[incident]["fence"]["read_back"] == "off"
    table = incidents("--open")
    assert incident in table.stdout and other not in table.stdout
    assert "ipmi: off" in table.stdout and "1/0/0/0" in table.stdout
    assert incidents("--host", "compute2").returncode == 0

    shown = incidents("show", incident, "--format", "json")
    doc = json.loads(shown.stdout)
    assert [(e["by"], e["kind"]) for e in doc["entries"]] == [
        ("ctl-a", "fence_start"), ("ctl-a", "fence_ok"), ("ctl-b", "fence_start"),
        ("ctl-b", "forced_down"), ("ctl-b", "instance"), ("ctl-b", "held")]
    text = incidents("show", incident).stdout
    assert "flapping" in text and "+0.0" in text
    missing = incidents("show", "compute9-1")
    assert missing.returncode == 2 and "No incident compute9-1" in missing.stderr


def test_a_zookeeper_outage_delays_the_journal_and_loses_nothing(coordinators, zookeeper):
    store = coordinators()
    j = IncidentJournal(store, "ctl-a", retry_max=0.5)
    incident = j.open("compute1", 5, "fence_start", "fencing", state=IncidentState.FENCING)
    daemons.wait_until(lambda: j.pending() == 0, 30, "the first entry written")
    zookeeper.freeze()
    try:
        for n in range(10):
            j.record("compute1", "instance", f"vm{n}")
        assert j.pending() == 10
    finally:
        zookeeper.thaw()
    daemons.wait_until(lambda: j.pending() == 0, 60, "queued entries written after the outage")
    j.close()
    reader = coordinators()
    texts = [e["text"] for e in reader.incident_entries(incident)]
    assert texts == ["fencing"] + [f"vm{n}" for n in range(10)]
