"""The unit tests' one Nova (tests/unit/nova.py) cannot drift from NovaClient."""

import inspect

import pytest

from instanceha.compute.nova import NovaClient
from tests.unit import fakes
from tests.unit.compute import fakes as compute_fakes
from tests.unit.nova import FakeNova

HELPERS = {"set_service"}
"""The fake's own public helpers (a test's hand on the cloud), not Nova's."""


def _public(cls):
    return {name: fn for name, fn in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")}


@pytest.mark.parametrize("fake_class", [FakeNova, fakes.FakeNova, compute_fakes.FakeNova],
                         ids=["the fake", "as the recovery tests set it up",
                              "running scripted evacuations"])
def test_the_fake_has_exactly_the_adapters_methods_with_the_same_signatures(fake_class):
    real = _public(NovaClient)
    fake = {n: f for n, f in _public(fake_class).items() if n not in HELPERS}
    assert sorted(fake) == sorted(real)
    for name, fn in real.items():
        assert _shape(fake[name]) == _shape(fn), name


def _shape(fn):
    """Parameter names, kinds and defaults (annotations: mypy checks the real one)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_calls_record_what_changes_nova_and_reads_what_only_reads():
    from tests.unit.controller.test_recovery_actuator import svc

    nova = FakeNova([svc("c1")], record_keywords=True)
    nova.services()
    nova.force_down("c1", "r")
    nova.enable("c1", unset_forced_down=False)
    assert nova.calls == [("force_down", "c1", "r"), ("enable", "c1", False)]
    assert nova.reads == ["services"]
    assert nova.svc["c1"].forced_down and nova.svc["c1"].status == "enabled"
