"""What Nova's records say about an evacuation, as a table (engine.evacuation)."""

import dataclasses
import datetime

import pytest

from instanceha.engine import evacuation as ev

T0 = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.timezone.utc)


@dataclasses.dataclass
class Rec:
    id: int
    status: str
    source_compute: str | None = "dead"
    created_at: datetime.datetime | None = None

    @property
    def succeeded(self):
        return self.status in ("done", "completed")

    @property
    def failed(self):
        return self.status in ("error", "failed")


@dataclasses.dataclass
class Srv:
    host: str | None
    status: str = "ACTIVE"
    task_state: str | None = None


@pytest.mark.parametrize("records, floor, accepted", [
    ([], 0, False),
    ([Rec(5, "accepted")], 9, True),  # running now: whatever the floor
    ([Rec(5, "done")], 4, True),  # settled, newer than the floor
    ([Rec(5, "done")], 5, False),  # the floor itself: an older evacuation
    ([Rec(5, "done", source_compute="other")], 0, False),  # of another host
    ([Rec(5, "done", source_compute=None)], 0, True),  # no source said: counts
    ([Rec(5, "done", created_at=T0)], None, True),  # older ones unknown: created since
    ([Rec(5, "done", created_at=T0 - datetime.timedelta(seconds=1))], None, False),
    ([Rec(5, "error", created_at=None)], None, False),
])
def test_accepted(records, floor, accepted):
    assert ev.accepted(records, "dead", floor, T0) is accepted


@pytest.mark.parametrize("server, record, broken", [
    (Srv("spare"), Rec(5, "done"), False),
    (Srv("spare"), Rec(5, "error"), True),
    (Srv("dead", "ERROR"), None, True),
    (Srv("dead", "ERROR", "rebuilding"), None, False),  # still being acted on
    (Srv("dead"), None, False),
])
def test_broken(server, record, broken):
    assert ev.broken(server, record) is broken


@pytest.mark.parametrize("server, landed", [
    (Srv("spare"), True),
    (Srv("spare", "SHUTOFF"), True),
    (Srv("spare", "ACTIVE", "rebuild_spawning"), False),
    (Srv("spare", "ERROR"), False),
    (Srv("dead"), False),
    (Srv(None), False),
])
def test_landed(server, landed):
    assert ev.landed(server, "dead") is landed
