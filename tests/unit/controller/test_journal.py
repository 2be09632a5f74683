"""The incident journal on the in-memory store: one story per failure across
leaders, in order, nothing lost while the store is away, bounded retention.
No background writer here: the tests flush by hand."""

import pytest

from instanceha.controller.journal import IncidentJournal, IncidentState, Retention
from tests.unit.clock import FakeClock
from tests.unit.fakes import FakeCoordinator


def journal(store, name="ctl-a", term=5, clock=None, **kwargs):
    j = IncidentJournal(store, name, clock=clock or FakeClock(wall=1_700_000_000.0),
                        background=False, **kwargs)
    j.term(term)
    return j


def kinds(store, incident):
    return [e["kind"] for e in store.incident_entries(incident)]


@pytest.fixture
def store():
    return FakeCoordinator(FakeClock())


def test_one_failure_is_one_incident_with_its_story_in_order(store):
    j = journal(store)
    assert j.record("compute1", "decision", "decided fence: heartbeat stale",
                    new_failure=True, signals=[{"phase": "SUSPECT"}]) is None  # store unread
    incident = j.open("compute1", 5, "fence_start", "fencing", state=IncidentState.FENCING)
    j.record("compute1", "fence_ok", "power off read back", fence={"driver": "ipmi"})
    j.record("compute1", "forced_down", "forced down", state=IncidentState.FENCED)
    j.record("compute1", "instance", "vm1 evacuated", counts={"evacuated": 1})
    j.record("compute1", "instance", "vm2 notified", counts={"notified": 1})
    j.record("compute1", "recovery_end", "recovered", state=IncidentState.RECOVERED)
    assert j.flush()
    assert incident == "compute1-5"
    assert kinds(store, incident) == ["decision", "fence_start", "fence_ok", "forced_down",
                                      "instance", "instance", "recovery_end"]
    summary = store.incidents()[incident]
    assert summary["state"] == "recovered" and summary["host"] == "compute1"
    assert summary["fence"] == {"driver": "ipmi"}
    assert (summary["evacuated"], summary["notified"], summary["entries"]) == (1, 1, 7)
    first = store.incident_entries(incident)[0]
    assert first["signals"] == [{"phase": "SUSPECT"}] and first["by"] == "ctl-a"
    assert first["term"] == 5


def test_a_new_leader_continues_the_incident_the_old_one_left(store):
    a = journal(store, "ctl-a", term=5)
    incident = a.open("compute1", 5, "fence_start", "fencing", state=IncidentState.FENCING)
    assert a.flush()  # then ctl-a dies before recording its fence in Nova
    b = journal(store, "ctl-b", term=6)
    assert b.open("compute1", 6, "fence_start", "fencing", state=IncidentState.FENCING) == incident
    b.record("compute1", "forced_down", "forced down", state=IncidentState.FENCED)
    assert b.flush()
    assert [e["by"] for e in store.incident_entries(incident)] == ["ctl-a", "ctl-b", "ctl-b"]
    assert list(store.incidents()) == [incident]


@pytest.mark.parametrize("left_in", [IncidentState.RECOVERED, IncidentState.HELD,
                                     IncidentState.FENCED])
def test_a_new_failure_after_the_host_was_back_opens_a_new_incident(store, left_in):
    j = journal(store)
    first = j.open("compute1", 5, "fence_start", "fencing")
    j.record("compute1", "x", "x", state=left_in)
    second = j.open("compute1", 5, "fence_start", "fencing again")
    assert j.flush()
    assert (first, second) == ("compute1-5", "compute1-5.2")
    summaries = store.incidents()
    assert summaries[first]["state"] == "closed" and summaries[first]["closed_at"]
    assert kinds(store, first)[-1] == "closed"
    assert summaries[second]["state"] == "detected"


def test_restored_closes_and_entries_without_an_open_incident_are_not_kept(store):
    j = journal(store)
    incident = j.open("compute1", 5, "fence_start", "fencing")
    j.record("compute1", "restored", "back in service", state=IncidentState.CLOSED)
    assert j.record("compute1", "decision", "decided idle") is None
    assert j.record("compute2", "decision", "decided idle") is None
    assert j.flush()
    assert kinds(store, incident) == ["fence_start", "restored"]
    assert set(store.incidents()) == {incident}


def test_back_before_any_fence_closes_a_detected_incident_only(store):
    j = journal(store)
    a = j.open("compute1", 5, "decision", "decided fence")
    b = j.open("compute2", 5, "fence_start", "fencing", state=IncidentState.FENCING)
    back = frozenset({IncidentState.DETECTED})
    j.record("compute1", "decision", "decided idle", close_if=back)
    j.record("compute2", "decision", "decided idle", close_if=back)
    assert j.flush()
    assert store.incidents()[a]["state"] == "closed"
    assert store.incidents()[b]["state"] == "fencing"


def test_nothing_is_lost_while_the_store_is_away(store):
    j = journal(store)
    incident = j.open("compute1", 5, "fence_start", "fencing")
    store.journal_down = True
    for n in range(5):
        j.record("compute1", "instance", f"vm{n}")
    assert not j.flush()
    assert j.pending() == 6 and j.write_errors == 1
    store.journal_down = False
    assert j.flush() and j.pending() == 0
    assert kinds(store, incident) == ["fence_start"] + ["instance"] * 5


def test_entries_before_the_store_is_read_are_applied_in_order_once_it_is(store):
    store.journal_down = True  # the fake refuses writes; reads work
    j = journal(store)
    j.record("compute1", "decision", "decided fence", new_failure=True)
    j.record("compute1", "held", "guard holds")
    store.journal_down = False
    assert j.flush()
    (incident,) = store.incidents()
    assert kinds(store, incident) == ["decision", "held"]


def test_a_new_term_rereads_what_another_leader_wrote(store):
    a = journal(store, "ctl-a", term=5)
    b = journal(store, "ctl-b", term=6)
    first = a.open("compute1", 5, "fence_start", "fencing")
    assert a.flush()
    assert b.open("compute1", 6, "x", "x", state=IncidentState.RECOVERED) == first
    b.record("compute1", "restored", "back", state=IncidentState.CLOSED)
    assert b.flush()
    # ctl-a leads again (term 7): it must not keep appending to the closed incident
    assert a.open("compute1", 7, "fence_start", "fencing") == "compute1-7"


def test_retention_keeps_open_ones_and_the_newest_closed(store):
    clock = FakeClock(wall=1_700_000_000.0)
    j = journal(store, clock=clock, retention=Retention(keep=2, max_age=10 * 86400.0))
    held = j.open("compute0", 5, "held", "held", state=IncidentState.HELD)
    closed = []
    for n in range(4):
        clock.advance(60)
        closed.append(j.open(f"compute{n + 1}", 5, "fence_start", "fencing"))
        j.record(f"compute{n + 1}", "restored", "back", state=IncidentState.CLOSED)
    clock.advance(60)
    j.open("compute9", 5, "fence_start", "fencing")  # pruning happens on a new incident
    assert j.flush()
    assert set(store.incidents()) == {held, closed[2], closed[3], "compute9-5"}
    clock.advance(11 * 86400)
    j.open("compute8", 5, "fence_start", "fencing")
    assert j.flush()
    assert set(store.incidents()) == {held, "compute9-5", "compute8-5"}


def test_the_write_queue_is_bounded(store):
    j = journal(store, max_queue=3)
    store.journal_down = True
    j.open("compute1", 5, "fence_start", "fencing")
    for n in range(4):
        j.record("compute1", "instance", f"vm{n}")
    assert j.pending() == 3 and j.dropped == 2
    store.journal_down = False
    assert j.flush()


def test_long_texts_are_cut(store):
    j = journal(store)
    incident = j.open("compute1", 5, "fence_error", "x" * 10000)
    assert j.flush()
    assert len(store.incident_entries(incident)[0]["text"]) == 2000


def test_retention_refuses_nonsense():
    with pytest.raises(ValueError):
        Retention(keep=0)


def test_a_slow_load_never_overwrites_what_another_thread_loaded_and_recorded(store):
    """The writer and a fence job both load the store at a term's start; the
    slower read (older) must not replace the index the other one already used."""
    j = journal(store)
    calls = []
    read = store.incidents

    def slow_incidents():
        calls.append(1)
        before = read()  # the slow reader's (old) view
        if len(calls) == 1:
            j.open("compute1", 5, "fence_start", "fencing")  # meanwhile, another thread
        return before

    store.incidents = slow_incidents
    assert j.load()
    assert j.current("compute1") == "compute1-5"
    assert j.flush() and list(read()) == ["compute1-5"]


def test_a_new_term_with_writes_still_queued_keeps_them(store):
    """Leadership lost and regained while the store was away: the re-read of the
    store is overlaid with what is still queued (newer), nothing is misfiled."""
    j = journal(store, term=5)
    store.journal_down = True
    incident = j.open("compute1", 5, "fence_start", "fencing", state=IncidentState.FENCING)
    assert not j.flush()
    j.term(9)
    assert j.current("compute1") == incident
    j.record("compute1", "forced_down", "forced down", state=IncidentState.FENCED)
    store.journal_down = False
    assert j.flush()
    assert kinds(store, incident) == ["fence_start", "forced_down"]


def test_a_failure_opened_while_the_store_is_unreadable_never_takes_a_closed_ones_id():
    """A closed incident ``compute1-5`` (this term); the host fails again while
    the store cannot be read: the id said at once (its notifications carry it,
    and consumers de-duplicate on their keys) is not ``compute1-5``, and the
    incident is stored under that very id once the store reads."""

    store = FakeCoordinator(FakeClock())
    j = journal(store)
    first = j.open("compute1", 5, "fence_start", "fencing")
    j.record("compute1", "restored", "back in service", state=IncidentState.CLOSED)
    assert j.flush()
    store.journal_unreadable = True
    later = journal(store, name="ctl-b")  # a controller that could not read it yet
    second = later.open("compute1", 5, "fence_start", "fencing again")
    assert first == "compute1-5" and second.startswith("compute1-5.") and second != first
    store.journal_unreadable = False
    assert later.flush()
    assert set(store.incidents()) == {first, second}
    assert store.incidents()[second]["state"] == "detected"
    assert kinds(store, second) == ["fence_start"]
