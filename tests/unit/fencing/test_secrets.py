"""The BMC password appears in no repr, no log line and no exception text."""

import logging
import pickle

import pytest

from instanceha.fencing import FencePolicy, Fencer, fake
from instanceha.fencing import exceptions as exc
from instanceha.fencing.base import PowerState
from instanceha.fencing.inventory import Inventory, Secret
from instanceha.fencing.ipmi import IPMIDriver
from instanceha.fencing.redfish import RedfishDriver

from .conftest import PASSWORD, make_entry


def test_secret_hides_itself():
    s = Secret(PASSWORD)
    assert PASSWORD not in repr(s) and PASSWORD not in str(s) and PASSWORD not in f"{s}"
    assert s.reveal() == PASSWORD
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_entry_and_inventory_reprs_hide_the_password():
    e = make_entry(driver="ipmi")
    inv = Inventory({"compute1": e}, "/etc/inv.yaml")
    for text in (repr(e), str(e), repr(inv), repr(e.__dict__)):
        assert PASSWORD not in text


def test_failed_fences_leak_nothing(caplog, registry, clock):
    caplog.set_level(logging.DEBUG)
    entries = {h: make_entry(h) for h in ("down", "auth", "garbage", "slow")}
    registry.bmc("bmc-down").down = True
    registry.bmc("bmc-auth").password = "the right one"
    registry.bmc("bmc-garbage").garbage = True
    registry.bmc("bmc-slow").power_delay = 1000
    fencer = Fencer(Inventory(entries), FencePolicy(deadline=3, poll_interval=0.5),
                    driver_factory=lambda e: fake.FakeDriver(e, registry),
                    clock=clock)
    errors = []
    for host in entries:
        with pytest.raises(exc.FencingError) as e:
            fencer.power_off(host)
        errors.append(e.value)
    assert {type(e) for e in errors} == {exc.BMCUnreachable, exc.AuthFailed,
                                         exc.GarbageReply, exc.DeadlineExceeded}
    for e in errors:
        assert PASSWORD not in str(e) and PASSWORD not in repr(e)
        assert PASSWORD not in repr(e.kwargs)
    assert caplog.records and PASSWORD not in caplog.text


def test_ipmi_errors_never_echo_the_password():
    d = IPMIDriver(make_entry(driver="ipmi"))
    import pyghmi.exceptions as pe

    for text in ("Incorrect password provided", None, "Unauthorized name", "weird 0xd5"):
        err = d.translate(pe.IpmiException(text), "get chassis status")
        assert PASSWORD not in str(err)


def test_redfish_errors_are_built_not_copied(monkeypatch):
    """A requests error whose text holds the credentials is summarised, not echoed."""
    import requests
    from sushy import exceptions as sushy_exc

    d = RedfishDriver(make_entry(driver="redfish"))
    url = f"https://admin:{PASSWORD}@bmc/redfish/v1"
    try:
        try:
            raise requests.exceptions.ConnectionError(f"failed: {url}")
        except requests.exceptions.ConnectionError as cause:
            raise sushy_exc.ConnectionError(url=url, error=cause)
    except sushy_exc.ConnectionError as e:
        err = d.translate(e, "GET PowerState")
    assert isinstance(err, exc.BMCUnreachable) and PASSWORD not in str(err)


def test_fake_driver_checks_the_password_without_showing_it(registry):
    registry.bmc("bmc-compute1").password = "other"
    d = fake.FakeDriver(make_entry(), registry)
    with pytest.raises(exc.AuthFailed) as e:
        d.get_power_state()
    assert "admin" in str(e.value) and PASSWORD not in str(e.value)
    registry.bmc("bmc-compute1").password = PASSWORD
    assert d.get_power_state() is PowerState.ON
