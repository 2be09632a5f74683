"""Driver translations: every third-party failure becomes one typed error."""


import threading

import pyghmi.exceptions as pe
import pytest
import requests
import sushy
from sushy import exceptions as sushy_exc

from instanceha.fencing import exceptions as exc
from instanceha.fencing import ipmi as ipmi_driver
from instanceha.fencing import ipmi_session
from instanceha.fencing import redfish as redfish_driver
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
    assert isinstance(ipmi().translate(pe.IpmiException(text), "x"), error)


def test_ipmi_undecodable_reply_is_garbage():
    assert isinstance(ipmi().translate(IndexError("boom"), "x"), exc.GarbageReply)


class FakeSession:
    """What the driver uses of a pyghmi session: ``raw_command``."""

    def __init__(self, replies=None, block=None):
        self.replies = replies or {}
        self.block = block
        self.sent = []

    def raw_command(self, netfn, command, data=()):
        self.sent.append((netfn, command, list(data)))
        if self.block is not None:
            self.block.wait(5)
        reply = self.replies.get(command, {"code": 0, "data": bytearray()})
        if isinstance(reply, BaseException):
            raise reply
        return reply


@pytest.fixture
def closed(monkeypatch):
    """The sessions the driver ended, with how (polite: Close Session sent)."""
    ended = []
    monkeypatch.setattr(ipmi_session, "close",
                        lambda session, polite=True: ended.append((session, polite)))
    return ended


def logins(monkeypatch, login):
    """The BMC answers the sessionless probe; each login is ``login()``."""
    monkeypatch.setattr(ipmi_driver, "probe", lambda address, port, timeout: "ok")
    monkeypatch.setattr(ipmi_session, "open_session",
                        lambda address, port, username, password: login())


def logged_in(monkeypatch, *sessions):
    """A driver whose logins hand out ``sessions`` in turn (no network)."""
    queue = list(sessions)
    made = []

    def login():
        made.append(queue[0])
        return queue.pop(0)

    logins(monkeypatch, login)
    return ipmi(), made


def status(byte):
    return {1: {"code": 0, "netfn": 1, "command": 1, "data": bytearray([byte, 0, 0])}}


@pytest.mark.parametrize("replies, result", [
    (status(0x01), PowerState.ON),
    (status(0x21), PowerState.ON),  # bit 0 is "power is on"; the others are other facts
    (status(0x00), PowerState.OFF),
    (status(0x10), PowerState.OFF),
    ({1: {"code": 0, "data": bytearray()}}, exc.GarbageReply),
    ({1: "garbage"}, exc.GarbageReply),
    ({1: {"code": 0xC1, "error": "Invalid command", "data": bytearray()}}, exc.BMCError),
    ({1: {"code": 0xFFFF, "error": "timeout"}}, exc.BMCUnreachable),
    ({1: pe.IpmiException("Session no longer connected")}, exc.BMCUnreachable),
])
def test_ipmi_read_back_must_be_on_or_off(replies, result, monkeypatch, closed):
    first, afresh = FakeSession(replies), FakeSession(status(0x01))
    d, made = logged_in(monkeypatch, first, afresh)
    if isinstance(result, PowerState):
        assert d.get_power_state(timeout=2) is result
        assert closed == []  # kept for the rest of the action
    else:
        with pytest.raises(result):
            d.get_power_state(timeout=2)
        assert closed == [(first, True)]
        assert d.get_power_state(timeout=2) is PowerState.ON
        assert made == [first, afresh]  # the next call logged in afresh


@pytest.mark.parametrize("state, byte", [(PowerState.OFF, 0x00), (PowerState.ON, 0x01)])
def test_ipmi_power_request_is_chassis_control(state, byte, monkeypatch, closed):
    s = FakeSession()
    d, _ = logged_in(monkeypatch, s)
    d.request_power(state, timeout=2)
    assert s.sent == [(0x00, 0x02, [byte])]


def test_ipmi_an_action_uses_one_session_and_ends_it(monkeypatch, closed):
    """A fence (read, request, reads) logs in once; ending it logs out, and the
    next action logs in again: no session is kept between two fences."""
    first, second = FakeSession(status(0x00)), FakeSession(status(0x00))
    d, made = logged_in(monkeypatch, first, second)
    d.get_power_state(timeout=2)
    d.request_power(PowerState.OFF, timeout=2)
    d.get_power_state(timeout=2)
    assert made == [first] and len(first.sent) == 3
    d.end_session()
    assert closed == [(first, True)]
    d.get_power_state(timeout=2)  # the ended session is not used again: a new login
    assert made == [first, second] and len(first.sent) == 3 and len(second.sent) == 1
    d.end_session()
    d.end_session()  # nothing left to end: no error, nothing closed twice
    assert closed == [(first, True), (second, True)]


def test_ipmi_call_that_hangs_is_cut_at_the_timeout(monkeypatch, closed):
    release = threading.Event()
    hung, afresh = FakeSession(status(0x01), block=release), FakeSession(status(0x00))
    d, made = logged_in(monkeypatch, hung, afresh)
    with pytest.raises(exc.BMCUnreachable) as e:
        d.get_power_state(timeout=0.05)
    release.set()
    assert "within 0.1 s" in str(e.value) or "within 0.0 s" in str(e.value)
    # a command is still in flight on it: forgotten without Close Session
    assert closed == [(hung, False)]
    assert d.get_power_state(timeout=2) is PowerState.OFF and made == [hung, afresh]
    assert len(afresh.sent) == 1  # the next call ran on a session of its own


def test_ipmi_login_that_ends_after_the_caller_gave_up_is_closed_not_kept(monkeypatch):
    release, done = threading.Event(), threading.Event()
    late, afresh = FakeSession(), FakeSession(status(0x01))
    ended = []

    def close(session, polite=True):
        ended.append((session, polite))
        done.set()

    monkeypatch.setattr(ipmi_session, "close", close)
    queue = [late, afresh]

    def login():
        if queue[0] is late:
            release.wait(5)
        return queue.pop(0)

    logins(monkeypatch, login)
    d = ipmi()
    with pytest.raises(exc.BMCUnreachable):
        d.get_power_state(timeout=0.05)
    release.set()
    assert done.wait(5), "the late login was never closed"
    assert ended == [(late, True)] and late.sent == []
    assert d.get_power_state(timeout=2) is PowerState.ON  # not on the late session:
    assert queue == [] and late.sent == [] and len(afresh.sent) == 1  # a login of its own


class Unscheduled(threading.Thread):
    """A driver's worker thread that the scheduler has not run yet: ``start``
    only files it in ``held``; the test runs it later."""

    held: list = []

    def start(self):
        Unscheduled.held.append(self)

    def join(self, timeout=None):
        pass

    def is_alive(self):
        return self in Unscheduled.held


def test_ipmi_a_given_up_call_does_not_use_the_next_actions_session(monkeypatch, closed):
    """The worker of a call that timed out before it ran must not send its
    command on a session opened since (a second power request)."""
    newer = FakeSession(status(0x00))
    d, made = logged_in(monkeypatch, newer)
    with monkeypatch.context() as m:
        m.setattr(ipmi_driver.threading, "Thread", Unscheduled)
        with pytest.raises(exc.BMCUnreachable):
            d.get_power_state(timeout=0.05)  # given up before its worker ran
    (stale,) = Unscheduled.held
    Unscheduled.held.clear()
    d.request_power(PowerState.OFF, timeout=2)  # the next action logs in: newer
    assert newer.sent == [(0x00, 0x02, [0x00])]
    stale.run()  # the given-up worker runs at last: it sends nothing on newer
    assert newer.sent == [(0x00, 0x02, [0x00])]
    assert d.get_power_state(timeout=2) is PowerState.OFF  # newer is still the session
    assert made == [newer] and closed == [] and len(newer.sent) == 2


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
    assert isinstance(redfish().translate(error, "x"), expected)


class FakeSystem:
    def __init__(self, power, reset_error=None):
        self.power_state, self.reset_error, self.resets = power, reset_error, []

    def reset_system(self, value):
        self.resets.append(value)
        if self.reset_error:
            raise self.reset_error


def with_system(system, monkeypatch):
    """A driver whose BMC (sushy's root) serves ``system`` (no network)."""
    class Root:
        def __init__(self, url, **kwargs):
            pass

        def get_system(self, path):
            assert path == "/redfish/v1/Systems/1"
            return system

    monkeypatch.setattr(redfish_driver.sushy, "Sushy", Root)
    return redfish()


def test_redfish_409_on_force_off_is_an_accepted_no_op(monkeypatch):
    system = FakeSystem(sushy.POWER_STATE_OFF, http_error(sushy_exc.HTTPError, 409))
    d = with_system(system, monkeypatch)
    d.request_power(PowerState.OFF)  # no exception
    assert system.resets == [sushy.RESET_FORCE_OFF]
    assert d.get_power_state() is PowerState.OFF


def test_redfish_other_reset_errors_are_not_swallowed(monkeypatch):
    d = with_system(FakeSystem(sushy.POWER_STATE_ON, http_error(sushy_exc.BadRequestError, 400)),
                   monkeypatch)
    with pytest.raises(exc.BMCError):
        d.request_power(PowerState.OFF)


@pytest.mark.parametrize("value, result", [
    (sushy.POWER_STATE_ON, PowerState.ON),
    (sushy.POWER_STATE_OFF, PowerState.OFF),
    (sushy.POWER_STATE_POWERING_OFF, exc.PowerStateInTransition),
    (sushy.POWER_STATE_POWERING_ON, exc.PowerStateInTransition),
    (None, exc.GarbageReply),
])
def test_redfish_read_back(value, result, monkeypatch):
    d = with_system(FakeSystem(value), monkeypatch)
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
