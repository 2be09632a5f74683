"""The one back-off: the waits of a series, capped, reset by a success."""

import pytest

from instanceha.backoff import Backoff


def test_each_wait_is_factor_times_the_last_up_to_the_maximum():
    b = Backoff(0.5, 5.0)
    assert [b.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert Backoff(0.25, 2.0, factor=1.5).delay(3) == pytest.approx(0.5625)


def test_the_maximum_caps_the_first_wait_too_and_huge_counts_do_not_overflow():
    assert Backoff(10.0, 3.0).delay(1) == 3.0
    assert Backoff(0.1, 60.0).delay(10_000) == 60.0


def test_retries_grow_with_failures_and_start_again_after_a_success():
    r = Backoff(1.0, 30.0).start()
    assert r.peek() == 1.0 and r.failures == 0
    assert [r.next(), r.next(), r.next()] == [1.0, 2.0, 4.0]
    assert r.peek() == 8.0 and r.failures == 3
    r.reset()
    assert r.next() == 1.0


def test_two_series_of_one_policy_are_independent():
    policy = Backoff(1.0, 30.0)
    a, b = policy.start(), policy.start()
    a.next(), a.next()
    assert b.next() == 1.0


@pytest.mark.parametrize("kwargs", [
    {"initial": 0, "maximum": 1}, {"initial": 1, "maximum": 0},
    {"initial": 1, "maximum": 2, "factor": 0.5},
])
def test_a_back_off_that_cannot_wait_is_refused(kwargs):
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_failures_count_from_one():
    with pytest.raises(ValueError):
        Backoff(1.0, 2.0).delay(0)
