"""Fixtures for the fencing unit tests: the fake clock, fake BMCs."""

import pytest

from instanceha.fencing import fake
from instanceha.fencing.model import BMCEntry, Secret
from tests.unit.clock import EPOCH, FakeClock

PASSWORD = "s3cr3t-Pa55word-do-not-leak"


@pytest.fixture
def clock():
    return FakeClock(now=1000.0, wall=EPOCH + 1000.0)


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
