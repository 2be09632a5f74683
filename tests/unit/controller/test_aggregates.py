"""The host aggregates cache: background reads on a fake clock, run inline; no sleep."""

import logging

from instanceha.compute import exceptions as exc
from instanceha.controller.aggregates import AggregateCache
from tests.unit.clock import FakeClock
from tests.unit.nova import FakeNova


def Nova(*answers):  # noqa: N802 - the one fake Nova, its aggregates scripted
    """Nova whose host_aggregates() answers ``answers`` in turn (the last one
    kept); an exception is raised."""
    nova = FakeNova()
    nova.answers["host_aggregates"] = list(answers)
    return nova


class Later:
    """A submit that keeps the job until the test runs it (the background thread)."""

    def __init__(self):
        self.jobs = []

    def __call__(self, fn):
        self.jobs.append(fn)

    def run(self):
        jobs, self.jobs = self.jobs, []
        for job in jobs:
            job()


RACKS = {"c1": frozenset({"rack1"}), "c2": frozenset({"rack1", "gpu"})}


def test_unknown_until_the_first_read_then_grouped_by_aggregate():
    later, clock = Later(), FakeClock()
    cache = AggregateCache(Nova(RACKS).host_aggregates, refresh=300, clock=clock, submit=later)
    assert cache() is None  # the read is in the background: the tick never waits
    assert cache() is None and len(later.jobs) == 1  # one read at a time
    later.run()
    assert cache() == {"rack1": frozenset({"c1", "c2"}), "gpu": frozenset({"c2"})}
    assert cache.describe() == {"known": True, "count": 2, "age": 0.0, "error": None}


def test_read_again_only_every_refresh_seconds():
    nova, later, clock = Nova(RACKS), Later(), FakeClock()
    cache = AggregateCache(nova.host_aggregates, refresh=300, clock=clock, submit=later)
    cache()
    later.run()
    clock.advance(299)
    cache()
    assert later.jobs == []
    clock.advance(1)
    cache()
    later.run()
    assert len(nova.reads) == 2


def test_a_failed_read_keeps_the_last_grouping_retries_sooner_and_is_logged_once(caplog):
    down = exc.NovaUnavailable(operation="list aggregates", reason="ConnectFailure")
    nova, later, clock = Nova(RACKS, down, down, {}), Later(), FakeClock()
    cache = AggregateCache(nova.host_aggregates, refresh=300, retry=30, clock=clock,
                           submit=later)
    cache()
    later.run()
    clock.advance(300)
    with caplog.at_level(logging.DEBUG):
        for _ in range(2):
            cache()
            later.run()
            assert cache() is not None and "rack1" in cache()  # the last grouping stays
            clock.advance(30)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "host aggregates not read" in warnings[0].getMessage()
    assert "the grouping read 300 s ago stays in use" in warnings[0].getMessage()
    assert cache.describe()["error"] and cache.describe()["age"] == 360.0
    assert len(nova.reads) == 3
    cache()
    later.run()
    assert cache() == {} and cache.describe()["error"] is None  # no aggregates at all


def test_never_read_stays_unknown_and_says_so(caplog):
    nova = Nova(exc.NovaAuthError(operation="list aggregates", reason="Forbidden"))
    later, clock = Later(), FakeClock()
    cache = AggregateCache(nova.host_aggregates, refresh=300, retry=30, clock=clock,
                           submit=later)
    with caplog.at_level(logging.WARNING):
        cache()
        later.run()
    assert cache() is None
    assert "the grouping is unknown" in caplog.text
    assert cache.describe() == {"known": False, "count": None, "age": None,
                                "error": cache.describe()["error"]}
    assert cache.describe()["error"]


def test_an_unexpected_error_does_not_kill_the_refresher(caplog):
    nova, later = Nova(KeyError("hosts"), RACKS), Later()
    clock = FakeClock()
    cache = AggregateCache(nova.host_aggregates, refresh=300, retry=30, clock=clock,
                           submit=later)
    with caplog.at_level(logging.WARNING):
        cache()
        later.run()
    assert cache() is None and "Traceback" in caplog.text
    clock.advance(30)
    cache()
    later.run()
    assert cache() is not None


def test_the_real_pool_reads_in_the_background_and_closes():
    import threading

    gate = threading.Event()

    def read():
        gate.wait(5)
        return RACKS

    cache = AggregateCache(read, refresh=300)
    try:
        assert cache() is None  # returns while the read is blocked
        gate.set()
        cache.close(wait=True)  # the read in flight ends and is kept
        assert cache() is not None and "rack1" in cache()
    finally:
        cache.close()
