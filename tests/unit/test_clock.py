"""The one Clock: its wall as epoch seconds and as UTC, its waits cut short.
No test here sleeps: the real waits are for 0 s or end on an Event already set."""

import datetime
import threading

from instanceha.clock import SYSTEM
from tests.unit.clock import FakeClock


def test_the_real_clock_reads_both_clocks_and_one_wall():
    before = datetime.datetime.now(datetime.timezone.utc)
    now = SYSTEM.utcnow()
    assert now.tzinfo is datetime.timezone.utc and now >= before - datetime.timedelta(seconds=1)
    assert abs(SYSTEM.wall() - now.timestamp()) < 5
    assert SYSTEM.monotonic() <= SYSTEM.monotonic()


def test_a_real_wait_ends_at_once_on_an_event_already_set():
    done = threading.Event()
    done.set()
    assert SYSTEM.wait(3600, done) is True
    assert SYSTEM.wait(0, threading.Event()) is False
    assert SYSTEM.wait(-1) is False  # a negative wait is no wait


def test_the_fake_clock_moves_only_when_told_or_waited_on():
    clock = FakeClock(now=10.0, wall=1000.0)
    assert (clock.monotonic(), clock.wall()) == (10.0, 1000.0)
    assert clock.wait(2.5) is False
    clock.advance(0.5)
    assert (clock.monotonic(), clock.wall(), clock.waits) == (13.0, 1003.0, [2.5])
    assert clock.utcnow() == datetime.datetime.fromtimestamp(1003.0, datetime.timezone.utc)
    stop = threading.Event()
    stop.set()
    assert clock.wait(1.0, stop) is True


def test_a_frozen_wall_stays_where_it_was_set():
    clock = FakeClock(wall=500.0, frozen_wall=True)
    clock.advance(60)
    assert clock.wall() == 500.0 and clock.monotonic() == 1060.0
