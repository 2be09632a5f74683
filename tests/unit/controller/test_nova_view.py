"""NovaView: a Nova that does not answer is read again under the one back-off,
and the log says so once, not at every tick."""

from __future__ import annotations

import logging

import pytest

from instanceha.compute import exceptions as exc
from instanceha.compute.model import ComputeService
from instanceha.controller.nova_view import RETRY_MAX, NovaView
from tests.unit.clock import FakeClock

SERVICE = ComputeService(id="1", host="compute1", state="up", status="enabled",
                         forced_down=False, disabled_reason=None, zone="nova", updated_at=None)


class FlakyNova:
    def __init__(self) -> None:
        self.reads = 0
        self.down = True
        self.reason = "ConnectionRefused"

    def services(self):
        self.reads += 1
        if self.down:
            raise exc.NovaUnavailable(operation="list services", reason=self.reason)
        return [SERVICE]


def reads_while(view: NovaView, clock: FakeClock, seconds: float, step: float = 0.25) -> None:
    """Ticks of ``step`` seconds (exact in binary) for ``seconds``, each starting a due read and
    waiting for it (the view's own thread)."""
    for _ in range(round(seconds / step)):
        started = view.maybe_refresh()
        if started is not None:
            started.result(timeout=10)
        clock.advance(step)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def nova():
    return FlakyNova()


@pytest.fixture
def view(nova, clock):
    v = NovaView(nova, interval=2.0, clock=clock)
    yield v
    v.close()


def test_an_unreachable_nova_is_read_under_the_backoff_not_every_tick(view, clock, nova,
                                                                     caplog):
    caplog.set_level(logging.DEBUG, logger="instanceha.controller.nova_view")
    reads_while(view, clock, 60.0)
    # 0, 2, 6, 14, 24, 34, 44, 54: waits 2, 4, 8, then RETRY_MAX
    assert RETRY_MAX == 10.0
    assert nova.reads == 8, nova.reads
    assert "Nova is unreachable" in view.error
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "next read in 2.0 s" in warnings[0].getMessage()

    nova.reason = "ReadTimeout"  # another error: said again
    reads_while(view, clock, 10.0)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "ReadTimeout" in warnings[1].getMessage()

    nova.down = False
    caplog.clear()
    reads_while(view, clock, 10.0)
    assert view.error is None and dict(view.services) == {"compute1": SERVICE}
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == ["nova services read again, after 9 failed reads"], infos


def test_back_to_the_interval_once_nova_answers_and_the_series_starts_again(view, clock,
                                                                         nova):
    reads_while(view, clock, 30.0)  # 0, 2, 6, 14, 24
    nova.down = False
    reads_while(view, clock, 10.0)  # the read at 34 answers
    reads = nova.reads
    reads_while(view, clock, 10.0)  # every 2 s again
    assert nova.reads - reads == 5
    nova.down = True
    reads = nova.reads
    reads_while(view, clock, 3.0)  # fails, then waits 2 s (not RETRY_MAX)
    assert nova.reads - reads == 2


def test_a_write_of_ours_reads_at_once_even_while_backing_off(view, clock, nova):
    reads_while(view, clock, 30.0)
    nova.down = False
    assert view.maybe_refresh() is None  # the next try is not due yet
    view.invalidate()  # a step wrote to Nova
    view.maybe_refresh().result(timeout=10)
    assert view.error is None and "compute1" in view.services
