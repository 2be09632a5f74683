"""Waiting for evacuations without idle time and without loading Nova: one
bulk read of the host's records shared by every server, waits that start
short and grow, Nova's word cutting them short; the shared read-through cache."""

import threading

import pytest

from instanceha.compute import exceptions as exc
from instanceha.compute.cache import TTLCache
from instanceha.compute.evacuation import EvacuationSettings, Evacuator
from instanceha.compute.waiting import CompletionWatch, HostRecords, Pause, Waker
from tests.unit.clock import FakeClock

from .fakes import FakeNova, Script, server

SETTINGS = EvacuationSettings(concurrency=8, attempts=1, timeout=60.0, poll_interval=2.0,
                              poll_initial=0.25)



def test_the_first_attempt_acts_on_the_state_it_was_given():
    nova = FakeNova([server("a")])
    clock = FakeClock()
    r = Evacuator(nova, SETTINGS, clock=clock).evacuate_server(
        server("a"), "dead")
    assert r.ok
    # no read of the server before the evacuate: the caller's list is fresh
    first = next(i for i, c in enumerate(nova.calls) if c[0] == "evacuate")
    assert [c[0] for c in nova.calls[:first]] == ["evacuations"]


def test_waits_start_short_and_grow_to_poll_interval():
    nova = FakeNova([server("a")], {"a": Script(polls_to_finish=9)})
    clock = FakeClock()
    r = Evacuator(nova, SETTINGS, clock=clock).evacuate_server(
        server("a"), "dead")
    assert r.ok
    assert clock.waits[:6] == pytest.approx([0.25, 0.375, 0.5625, 0.84375, 1.265625, 1.8984375])
    assert max(clock.waits) == 2.0


def test_a_host_s_servers_share_one_read_of_its_records():
    servers = [server(str(i)) for i in range(20)]
    nova = FakeNova(servers, {str(i): Script(polls_to_finish=3) for i in range(20)})
    records = HostRecords(nova, "dead", since=None, clock=FakeClock(now=0.0))
    # all twenty ask for records younger than 1 s at the same (frozen) instant
    got = [records.of(s.id, 1.0) for s in servers]
    assert got == [[]] * 20 and records.reads == 1
    assert sum(c[0] == "evacuations" for c in nova.calls) == 1


def test_a_read_under_way_is_waited_for_not_repeated():
    started, release = threading.Event(), threading.Event()

    class Slow:
        calls = 0

        def evacuations(self, **kw):
            Slow.calls += 1
            started.set()
            release.wait(5)
            return []

    records = HostRecords(Slow(), "dead", since=None, clock=FakeClock(now=0.0))
    first = threading.Thread(target=records.read, args=(0.0,))
    first.start()
    started.wait(5)
    second = threading.Thread(target=records.read, args=(1.0,))
    second.start()
    release.set()
    first.join(5)
    second.join(5)
    assert Slow.calls == 1


def test_a_failed_bulk_read_is_raised_and_the_next_caller_reads_again():
    class Failing:
        calls = 0

        def evacuations(self, **kw):
            Failing.calls += 1
            if Failing.calls == 1:
                raise exc.NovaServerError(operation="list", status=503, reason="busy")
            return []

    records = HostRecords(Failing(), "dead", since=None, clock=FakeClock(now=0.0))
    with pytest.raises(exc.NovaServerError):
        records.read(0.0)
    assert records.read(1.0) == [] and Failing.calls == 2


def test_nova_s_word_cuts_a_wait_short_even_if_it_came_during_the_read():
    waker = Waker()
    watch = CompletionWatch()
    watch.subscribe(["a"], waker)
    pause = Pause(waker)
    pause.mark()  # before reading Nova
    assert watch.poke("a") is True  # the notification arrives while we read
    assert pause.wait(30.0) is True  # returns at once: the word is not lost
    pause.mark()
    assert pause.wait(0.0) is False  # nothing new since the last mark
    watch.unsubscribe(["a"])
    assert watch.poke("a") is False and watch.pokes == 1  # nobody waits for it any more


def test_a_poke_starts_the_short_waits_again():
    nova = FakeNova([server("a")], {"a": Script(polls_to_finish=12)})

    class Poked(FakeClock):
        def wait(self, seconds, until=None):  # Nova says something during the 6th wait
            super().wait(seconds, until)
            return len(self.waits) == 6

    clock = Poked()
    r = Evacuator(nova, SETTINGS, clock=clock).evacuate_server(server("a"), "dead")
    assert r.ok
    waits = clock.waits
    assert waits[6] == 0.25 and waits[5] > 1.0


def test_cache_single_flight_and_failures_not_cached():
    clock = FakeClock(now=0.0)
    cache = TTLCache(10.0, clock)
    calls = []

    def read():
        calls.append(1)
        if len(calls) == 1:
            raise exc.NovaServerError(operation="x", status=500, reason="boom")
        return "v"

    with pytest.raises(exc.NovaServerError):
        cache.get("k", read)
    assert cache.get("k", read) == "v" and cache.get("k", read) == "v"
    assert len(calls) == 2
    clock.now = 11.0
    assert cache.get("k", read) == "v" and len(calls) == 3
    assert cache.get("k", read, fresh=True) == "v" and len(calls) == 4
