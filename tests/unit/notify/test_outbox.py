"""The outbox: in order, retried with backoff, lost only past the deadline.

Driven through ``pump()`` with a fake clock: no sleeps."""

import logging
import threading

import pytest

from instanceha.notify.outbox import DeliveryPolicy, Outbox
from tests.unit.clock import FakeClock


class Bus:
    """A fake delivery: up or down; records what it delivered and when."""

    def __init__(self, clock):
        self.clock = clock
        self.up = True
        self.delivered = []
        self.attempts = []

    def __call__(self, message, sent_to):
        self.attempts.append((self.clock(), message["message_id"]))
        if not self.up:
            raise ConnectionRefusedError("[Errno 111] rabbit://user:pw@10.0.0.1:5672/ refused")
        self.delivered.append(message["message_id"])
        sent_to.add("fake")


def msg(i):
    return {"message_id": f"m{i}", "event_type": "instanceha.host.failed",
            "payload": {"secret_looking": "PAYLOAD-MARKER"}}


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def bus(clock):
    return Bus(clock)


def make(bus, clock, **kw):
    policy = DeliveryPolicy(**{"deadline": 60.0, "retry_interval": 0.5,
                               "retry_max_interval": 4.0, "max_pending": 100, **kw})
    return Outbox(bus, policy, clock=clock, redact=lambda s: s.replace("user:pw@", "***@"))


def test_delivers_everything_in_order(bus, clock):
    box = make(bus, clock)
    for i in range(5):
        assert box.put(msg(i))
    assert box.pump() is None
    assert bus.delivered == [f"m{i}" for i in range(5)]
    s = box.stats.snapshot()
    assert (s.emitted, s.delivered, s.lost, s.pending) == (5, 5, 0, 0)


def test_broker_down_retries_with_backoff_then_delivers_in_order(bus, clock):
    box = make(bus, clock)
    bus.up = False
    for i in range(3):
        box.put(msg(i))
    waits = []
    for _ in range(6):
        wait = box.pump()
        waits.append(wait)
        clock.advance(wait)
    # 0.5, 1, 2, 4, 4, 4: doubling, capped; only the head is tried
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert {m for _, m in bus.attempts} == {"m0"}
    bus.up = True
    assert box.pump() is None
    assert bus.delivered == ["m0", "m1", "m2"]
    s = box.stats.snapshot()
    assert (s.delivered, s.failed_attempts, s.lost) == (3, 6, 0)


def test_no_attempt_before_the_backoff_is_due(bus, clock):
    box = make(bus, clock)
    bus.up = False
    box.put(msg(0))
    assert box.pump() == 0.5
    clock.advance(0.2)
    assert box.pump() == pytest.approx(0.3)
    assert len(bus.attempts) == 1


def test_backoff_resets_after_a_success(bus, clock):
    box = make(bus, clock)
    bus.up = False
    box.put(msg(0))
    for _ in range(3):
        clock.advance(box.pump())
    bus.up = True
    box.pump()
    bus.up = False
    box.put(msg(1))
    assert box.pump() == 0.5


def test_past_the_deadline_a_message_is_lost_logged_and_counted(bus, clock, caplog):
    box = make(bus, clock, deadline=10.0)
    bus.up = False
    box.put(msg(0))
    clock.advance(6)
    box.put(msg(1))
    with caplog.at_level(logging.DEBUG, logger="instanceha.notify.outbox"):
        while clock.now < 1000 + 11:
            clock.advance(box.pump())
    s = box.stats.snapshot()
    assert (s.lost_deadline, s.pending) == (1, 1)
    lost = [r for r in caplog.records if "lost" in r.getMessage()]
    assert len(lost) == 1 and "m0" in lost[0].getMessage()
    assert lost[0].levelno == logging.ERROR
    bus.up = True
    while (wait := box.pump()) is not None:
        clock.advance(wait)
    assert bus.delivered == ["m1"]


def test_wakes_up_at_the_head_deadline_even_during_a_long_backoff(bus, clock):
    box = make(bus, clock, deadline=3.0, retry_interval=10.0, retry_max_interval=10.0)
    bus.up = False
    box.put(msg(0))
    assert box.pump() == pytest.approx(3.0)


def test_full_outbox_refuses_and_counts_without_blocking(bus, clock):
    box = make(bus, clock, max_pending=3)
    bus.up = False
    results = [box.put(msg(i)) for i in range(5)]
    assert results == [True, True, True, False, False]
    s = box.stats.snapshot()
    assert (s.emitted, s.lost_overflow, s.pending) == (5, 2, 3)


def test_logs_name_the_event_never_the_payload_nor_credentials(bus, clock, caplog):
    box = make(bus, clock, deadline=1.0)
    bus.up = False
    box.put(msg(0))
    with caplog.at_level(logging.DEBUG, logger="instanceha.notify.outbox"):
        for _ in range(3):
            clock.advance(box.pump() or 1)
    text = caplog.text
    assert "m0" in text and "instanceha.host.failed" in text
    assert "PAYLOAD-MARKER" not in text and "user:pw" not in text


def test_one_warning_per_outage_not_one_per_attempt(bus, clock, caplog):
    box = make(bus, clock)
    bus.up = False
    box.put(msg(0))
    with caplog.at_level(logging.INFO, logger="instanceha.notify.outbox"):
        for _ in range(10):
            clock.advance(box.pump())
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_a_retry_skips_the_drivers_that_already_took_the_message(clock):
    calls = []
    second_up = [False]

    def deliver(message, sent_to):
        for name in ("log", "bus"):
            if name in sent_to:
                continue
            calls.append(name)
            if name == "bus" and not second_up[0]:
                raise OSError("down")
            sent_to.add(name)

    box = Outbox(deliver, DeliveryPolicy(retry_interval=1, retry_max_interval=1), clock=clock)
    box.put(msg(0))
    clock.advance(box.pump())
    second_up[0] = True
    box.pump()
    assert calls == ["log", "bus", "bus"]


def test_close_flushes_then_counts_the_rest_as_lost(bus, clock):
    box = make(bus, clock)
    box.put(msg(0))
    snap = box.close(timeout=0)
    assert (snap.delivered, snap.lost_shutdown) == (1, 0)
    bus.up = False
    box2 = make(bus, clock)
    box2.put(msg(1))
    box2.put(msg(2))
    snap = box2.close(timeout=0)
    assert (snap.lost_shutdown, snap.pending) == (2, 0)
    assert box2.put(msg(3)) is False  # closed


def test_put_returns_at_once_while_the_sender_is_stuck_in_a_delivery():
    release = threading.Event()
    entered = threading.Event()
    delivered = []

    def deliver(message, sent_to):
        entered.set()
        assert release.wait(30)
        delivered.append(message["message_id"])

    box = Outbox(deliver, DeliveryPolicy()).start()
    box.put(msg(0))
    assert entered.wait(30)
    # the sender thread is blocked inside deliver(): every put still returns
    for i in range(1, 101):
        assert box.put(msg(i))
    assert box.pending() == 101
    release.set()
    snap = box.close(timeout=30)
    assert delivered == [f"m{i}" for i in range(101)]
    assert (snap.delivered, snap.lost) == (101, 0)


@pytest.mark.parametrize("kw", [dict(deadline=0), dict(retry_interval=0), dict(max_pending=0),
                                dict(retry_interval=2, retry_max_interval=1)])
def test_policy_refuses_nonsense(kw):
    with pytest.raises(ValueError):
        DeliveryPolicy(**kw)


def test_a_full_outbox_drains_in_order_after_a_long_outage(bus, clock):
    box = make(bus, clock, max_pending=10000, deadline=3600.0)
    bus.up = False
    for i in range(10000):
        box.put(msg(i))
    clock.advance(box.pump())
    clock.advance(1800)
    bus.up = True
    assert box.pump() is None
    assert bus.delivered == [f"m{i}" for i in range(10000)]
    assert box.stats.snapshot().lost == 0


def test_drop_oldest_keeps_the_newest_and_counts_the_loss(clock, caplog):
    delivered = []
    box = Outbox(lambda m, sent_to: delivered.append(m["message_id"]),
                 DeliveryPolicy(max_pending=2, drop_oldest=True), clock=clock,
                 describe=lambda m: f"record {m['message_id']}", what="record")
    with caplog.at_level(logging.ERROR, logger="instanceha.notify.outbox"):
        assert all(box.put(msg(i)) for i in range(3))
    assert box.pending() == 2 and box.stats.lost_overflow == 1
    assert "record lost: record m0 dropped" in caplog.text
    assert box.pump() is None and delivered == ["m1", "m2"]


def test_without_a_deadline_nothing_expires(bus, clock):
    box = make(bus, clock, deadline=float("inf"))
    bus.up = False
    box.put(msg(0))
    for _ in range(50):
        clock.advance(box.pump())
    bus.up = True
    assert box.pump() is None and bus.delivered == ["m0"] and box.stats.lost_deadline == 0


def test_each_message_says_once_whether_it_was_delivered_or_given_up(bus, clock):
    box = make(bus, clock, max_pending=2)
    done = []
    for i in range(3):  # the third finds the outbox full
        box.put(msg(i), on_done=lambda ok, i=i: done.append((i, ok)))
    assert done == [(2, False)]
    bus.up = False
    box.pump()
    assert done == [(2, False)]  # failed attempts are not an end
    clock.advance(61.0)  # past the deadline
    box.pump()
    assert sorted(done) == [(0, False), (1, False), (2, False)]
    bus.up = True
    box.put(msg(3), on_done=lambda ok: done.append((3, ok)))
    box.pump()
    assert done[-1] == (3, True)


def test_flush_tries_at_once_whatever_the_backoff_and_lists_what_waits(bus, clock):
    box = make(bus, clock)
    bus.up = False
    box.put(msg(0))
    box.put(msg(1))
    assert not box.flush()
    assert [m["message_id"] for m in box.pending_messages()] == ["m0", "m1"]
    bus.up = True
    assert box.pump() > 0  # the back-off still waits...
    assert box.flush() and bus.delivered == ["m0", "m1"]  # ...flush does not
    assert box.pending_messages() == []
