"""Fakes for the fencing unit tests: a clock that only moves when slept on."""

import pytest

from instanceha.fencing import fake
from instanceha.fencing.model import BMCEntry, Secret

PASSWORD = "s3cr3t-Pa55word-do-not-leak"


class FakeClock:
    def __init__(self, start=1000.0):
        self.now = start
        self.sleeps = []

    def __call__(self):
        return self.now

    def wall(self):
        return 1_700_000_000.0 + self.now

    def sleep(self, seconds):
        assert seconds > 0, "the loop slept for nothing"
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def registry(clock):
    return fake.FakeRegistry(clock=clock)


def make_entry(host="compute1", driver="fake", **kw):
    kw.setdefault("address", f"bmc-{host}")
    kw.setdefault("username", "admin")
    kw.setdefault("password", Secret(PASSWORD))
    return BMCEntry(host=host, driver=driver, **kw)


@pytest.fixture
def entry():
    return make_entry()
