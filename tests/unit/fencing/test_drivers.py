"""Driver translations: every third-party failure becomes one typed error."""

import types

import pyghmi.exceptions as pe
import pytest
import requests
import sushy
from sushy import exceptions as sushy_exc

from instanceha.fencing import exceptions as exc
from instanceha.fencing.base import PowerState
from instanceha.fencing.ipmi import IPMIDriver, auth_caps_request
from instanceha.fencing.redfish import RedfishDriver

from .conftest import make_entry


def ipmi():
    return IPMIDriver(make_entry(driver="ipmi", address="127.0.0.1"))


@pytest.mark.parametrize("text, error", [
    ("Incorrect password provided", exc.AuthFailed),
    ("Unauthorized name", exc.AuthFailed),
    (None, exc.BMCUnreachable),
    ("timeout", exc.BMCUnreachable),
    ("Session no longer connected", exc.BMCUnreachable),
    ("Node busy", exc.BMCError),
])
def test_ipmi_errors(text, error):
    assert isinstance(ipmi()._translate(pe.IpmiException(text), "x"), error)


def test_ipmi_undecodable_reply_is_garbage():
    assert isinstance(ipmi()._translate(IndexError("boom"), "x"), exc.GarbageReply)


@pytest.mark.parametrize("reply, result", [
    ({"powerstate": "on"}, PowerState.ON),
    ({"powerstate": "off"}, PowerState.OFF),
    ({"powerstate": "unknown"}, exc.GarbageReply),
    ({}, exc.GarbageReply),
    ("off", exc.GarbageReply),
])
def test_ipmi_read_back_must_be_on_or_off(reply, result):
    d = ipmi()
    d._command = types.SimpleNamespace(get_power=lambda: reply)
    if isinstance(result, PowerState):
        assert d.get_power_state(timeout=2) is result
    else:
        with pytest.raises(result):
            d.get_power_state(timeout=2)


def test_ipmi_call_that_hangs_is_cut_at_the_timeout():
    import threading

    release = threading.Event()
    d = ipmi()
    d._command = types.SimpleNamespace(get_power=lambda: release.wait(5))
    with pytest.raises(exc.BMCUnreachable) as e:
        d.get_power_state(timeout=0.05)
    release.set()
    assert "within 0.1 s" in str(e.value) or "within 0.0 s" in str(e.value)
    assert d._command is None


def test_ipmi_probe_packet_is_a_valid_ipmi_15_message():
    pkt = auth_caps_request()
    assert pkt[:4] == b"\x06\x00\xff\x07" and pkt[13] == len(pkt) - 14
    msg = pkt[14:]
    assert sum(msg[:3]) & 0xFF == 0 and sum(msg[3:]) & 0xFF == 0


class FakeResponse:
    def __init__(self, status, body=None):
        self.status_code = status
        self._body = body

    def json(self):
        if self._body is None:
            raise ValueError("no json")
        return self._body


def http_error(cls, status):
    return cls("POST", "https://bmc/x", FakeResponse(status, {"error": {"code": "c"}}))


def redfish():
    return RedfishDriver(make_entry(driver="redfish", address="127.0.0.1",
                                    system_id="1", port=8443))


def chained(outer_cls, cause):
    try:
        try:
            raise cause
        except Exception as c:
            raise outer_cls(url="u", error=c)
    except outer_cls as e:
        return e


@pytest.mark.parametrize("error, expected", [
    (http_error(sushy_exc.AccessError, 401), exc.AuthFailed),
    (http_error(sushy_exc.AccessError, 403), exc.AuthFailed),
    (http_error(sushy_exc.ServerSideError, 503), exc.BMCError),
    (http_error(sushy_exc.HTTPError, 412), exc.BMCError),
    (http_error(sushy_exc.ResourceNotFoundError, 404), exc.InventoryError),
    (chained(sushy_exc.ConnectionError, requests.exceptions.SSLError("x")), exc.TLSFailure),
    (chained(sushy_exc.ConnectionError, requests.exceptions.ConnectTimeout()),
     exc.BMCUnreachable),
    (chained(sushy_exc.ConnectionError, requests.exceptions.ConnectionError()),
     exc.BMCUnreachable),
    (requests.exceptions.JSONDecodeError("x", "doc", 0), exc.GarbageReply),
    (sushy_exc.MissingAttributeError(attribute="PowerState", resource="r"), exc.GarbageReply),
])
def test_redfish_errors(error, expected):
    assert isinstance(redfish()._translate(error, "x"), expected)


class FakeSystem:
    def __init__(self, power, reset_error=None):
        self.power_state, self.reset_error, self.resets = power, reset_error, []

    def reset_system(self, value):
        self.resets.append(value)
        if self.reset_error:
            raise self.reset_error


def with_system(system):
    d = redfish()
    d._system = lambda timeout: system
    return d


def test_redfish_409_on_force_off_is_an_accepted_no_op():
    system = FakeSystem(sushy.POWER_STATE_OFF, http_error(sushy_exc.HTTPError, 409))
    d = with_system(system)
    d.request_power(PowerState.OFF)  # no exception
    assert system.resets == [sushy.RESET_FORCE_OFF]
    assert d.get_power_state() is PowerState.OFF


def test_redfish_other_reset_errors_are_not_swallowed():
    d = with_system(FakeSystem(sushy.POWER_STATE_ON, http_error(sushy_exc.BadRequestError, 400)))
    with pytest.raises(exc.BMCError):
        d.request_power(PowerState.OFF)


@pytest.mark.parametrize("value, result", [
    (sushy.POWER_STATE_ON, PowerState.ON),
    (sushy.POWER_STATE_OFF, PowerState.OFF),
    (sushy.POWER_STATE_POWERING_OFF, exc.PowerStateInTransition),
    (sushy.POWER_STATE_POWERING_ON, exc.PowerStateInTransition),
    (None, exc.GarbageReply),
])
def test_redfish_read_back(value, result):
    d = with_system(FakeSystem(value))
    if isinstance(result, PowerState):
        assert d.get_power_state() is result
    else:
        with pytest.raises(result):
            d.get_power_state()


def test_redfish_urls_and_defaults():
    d = redfish()
    assert d.base_url == "https://127.0.0.1:8443"
    plain = RedfishDriver(make_entry(driver="redfish", address="bmc", scheme="http"))
    assert plain.base_url == "http://bmc:443" and plain.call_timeout == 10.0
