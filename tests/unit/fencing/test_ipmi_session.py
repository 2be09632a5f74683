"""ipmi_session: a session never comes from pyghmi's cache, and leaves every
pyghmi table when closed. No network: sessions are built by hand."""

import inspect
import socket
import threading

import pytest
from pyghmi.ipmi.private import session as pyghmi_session

from instanceha.fencing import ipmi_session

Session = pyghmi_session.Session
BMC, PORT = "127.0.0.1", 40623


@pytest.fixture
def tables(monkeypatch):
    """pyghmi's class-level tables, empty for the test and restored after."""
    for name in ("bmc_handlers", "keepalive_sessions", "waiting_sessions",
                 "initting_sessions", "socketpool"):
        monkeypatch.setattr(Session, name, {})
    monkeypatch.setattr(pyghmi_session, "ipv6support", False)
    sockets = []
    yield sockets
    for s in sockets:
        s.close()


def registered_session(tables, logged=1):
    """A session as pyghmi leaves it after a login: routed, kept alive."""
    s = object.__new__(ipmi_session.FreshSession)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    tables.append(sock)
    addr = (BMC, PORT)
    s.socket, s.allsockaddrs, s.sockaddr = sock, [addr], addr
    s.logged, s.logging, s.broken = logged, False, False
    s.lastpayload = s.onlogpayload = None
    s.incommand, s.sessionid = False, 0x1234
    Session.socketpool[sock] = Session.socketpool.get(sock, 0) + 1
    Session.bmc_handlers.setdefault(addr, {})[sock.getsockname()[1]] = s
    Session.keepalive_sessions[s] = {"ipmisession": s, "timeout": 0}
    Session.waiting_sessions[s] = {"ipmisession": s, "timeout": 0}
    return s


def test_a_new_session_is_never_the_cached_one(tables):
    """pyghmi keeps the first session of a BMC and credentials in
    ``initting_sessions`` for good (keyed by the str credentials, deleted by
    their encoded bytes) and hands it to every later Session(), logged out or
    not; FreshSession makes a new one, on a socket of its own."""
    cached = registered_session(tables)
    cached.bmc, cached.userid, cached.password, cached.kgo = BMC, b"admin", b"pw", None
    Session.initting_sessions[(BMC, "admin", "pw", PORT, None)] = cached
    cached.logged = 0  # even logged out (and routed nowhere) it comes back
    Session.bmc_handlers.clear()
    assert Session.__new__(Session, BMC, "admin", "pw", port=PORT) is cached  # the trap
    cached.logged = 1
    Session.initting_sessions.clear()
    Session.bmc_handlers.setdefault((BMC, PORT), {})[cached.socket.getsockname()[1]] = cached
    fresh = ipmi_session.FreshSession.__new__(ipmi_session.FreshSession, BMC, "admin", "pw",
                                              port=PORT)
    assert fresh is not cached and not hasattr(fresh, "initialized")
    assert fresh.forbidsock == [cached.socket]  # the BMC's replies are routed by local port
    assert Session.initting_sessions == {}  # nor put in the cache


def test_close_sends_close_session_and_empties_every_table(tables, monkeypatch):
    s = registered_session(tables)
    sent = []
    monkeypatch.setattr(s, "_send_ipmi_net_payload", lambda **kw: sent.append(kw),
                        raising=False)
    monkeypatch.setattr(s, "_isincommand", lambda: 0, raising=False)
    ipmi_session.close(s)
    assert sent == [{"netfn": 0x06, "command": 0x3C, "data": (0x34, 0x12, 0, 0),
                     "retry": False}]
    assert ipmi_session.registered(BMC, PORT) == []
    assert s not in Session.keepalive_sessions and s not in Session.waiting_sessions
    assert Session.socketpool[s.socket] == 0
    assert (s.logged, s.broken) == (0, True)
    ipmi_session.close(s)  # idempotent: nothing sent, nothing counted twice
    assert len(sent) == 1 and Session.socketpool[s.socket] == 0


@pytest.mark.parametrize("busy", ["in command", "payload in flight", "not logged in"])
def test_close_of_a_busy_or_dead_session_sends_nothing(tables, monkeypatch, busy):
    s = registered_session(tables, logged=0 if busy == "not logged in" else 1)
    if busy == "payload in flight":
        s.lastpayload = b"x"
    sent = []
    monkeypatch.setattr(s, "_send_ipmi_net_payload", lambda **kw: sent.append(kw),
                        raising=False)
    monkeypatch.setattr(s, "_isincommand", lambda: 3.0 if busy == "in command" else 0,
                        raising=False)
    ipmi_session.close(s)
    assert sent == [] and ipmi_session.registered(BMC, PORT) == []


def test_forget_leaves_another_session_of_the_same_bmc_routed(tables):
    old, other = registered_session(tables), registered_session(tables)
    ipmi_session.forget(old)
    assert ipmi_session.registered(BMC, PORT) == [other]


def test_the_pyghmi_internals_used_are_there():
    """ipmi_session reaches into pyghmi (pinned in tools/constraints.txt): an
    upgrade that moves these fails here, not at a fence."""
    params = list(inspect.signature(Session.__new__).parameters)
    assert params[:5] == ["cls", "bmc", "userid", "password", "port"]
    assert list(inspect.signature(ipmi_session.FreshSession.__new__).parameters) == params
    for name in ("bmc_handlers", "keepalive_sessions", "waiting_sessions", "socketpool",
                 "_send_ipmi_net_payload", "_isincommand", "raw_command", "login"):
        assert hasattr(Session, name), name
    assert hasattr(pyghmi_session, "KEEPALIVE_SESSIONS")
    assert hasattr(pyghmi_session, "WAITING_SESSIONS")
    assert "ipv6support" in vars(pyghmi_session)


def bare_session(monkeypatch, **attrs):
    """A FreshSession with only what awaitresponse and the login wait read."""
    s = object.__new__(ipmi_session.FreshSession)
    s.login_result, s.login_done = None, threading.Event()
    s.lastresponse, s.logging, s.logged, s.onlogpayload = None, False, 1, None
    s.lastpayload, s.sockaddr, s.iterwaiters = b"x", (BMC, PORT), []
    s.expiration = pyghmi_session._monotonic_time() + 3600  # far: only WAKE bounds a sleep
    vars(s).update(attrs)
    monkeypatch.setattr(s, "_getmaxtimeout", lambda: 3600, raising=False)
    monkeypatch.setattr(Session, "waiting_sessions", {})
    return s


def test_a_reply_already_queued_is_looked_at_before_waiting(monkeypatch):
    """pyghmi's wait for a reply starts by sleeping until a wake-up: a reply the
    I/O thread queued just before was left until the retransmission timer."""
    s = bare_session(monkeypatch)
    slept = []
    monkeypatch.setattr(pyghmi_session, "_io_wait", lambda *a, **k: slept.append(a))

    def look():
        s.lastresponse = {"netfn": 1, "command": 1}
    monkeypatch.setattr(s, "process_pktqueue", look, raising=False)
    s.awaitresponse(True, 1, 1)
    assert slept == []


def test_a_reply_handled_by_another_thread_ends_the_wait_within_wake(monkeypatch):
    """Another thread in pyghmi's event loop handles this session's reply while
    this one sleeps: pyghmi slept on to the retransmission deadline; the
    FreshSession's sleeps are never longer than WAKE, so it looks again."""
    s = bare_session(monkeypatch)
    monkeypatch.setattr(s, "process_pktqueue", lambda: None, raising=False)
    slept = []

    def io_wait(timeout, addr=None, evq=None):
        slept.append(timeout)
        if len(slept) == 2:  # the other thread handled the reply during the 2nd sleep
            s.lastresponse = {"netfn": 6, "command": 1}
    monkeypatch.setattr(pyghmi_session, "_io_wait", io_wait)
    s.awaitresponse(True, 6, 1)
    assert len(slept) == 2 and all(t <= ipmi_session.WAKE for t in slept)


def login_with(monkeypatch, pyghmi_init):
    """FreshSession() with pyghmi's Session.__init__ replaced by ``pyghmi_init``
    (which gets the session and the onlogon callback pyghmi was given)."""
    monkeypatch.setattr(Session, "__init__",
                        lambda self, *a, onlogon=None, **k: pyghmi_init(self, onlogon))
    monkeypatch.setattr(ipmi_session, "sockets_in_use", lambda bmc, port: [])
    return ipmi_session.FreshSession(BMC, "admin", "pw", port=PORT, keepalive=False)


def test_login_outcome_comes_from_pyghmis_callback_whoever_handles_it(monkeypatch):
    """The login is asynchronous (pyghmi returns once the first packet is out);
    the outcome is the callback pyghmi calls from whichever thread handled the
    last reply, not pyghmi's unlocked "still logging in?" flag."""
    waits = []

    def wait_for_rsp(timeout=None, callout=True):
        waits.append(timeout)
        if len(waits) == 3:
            calls["cb"]({"success": True})
    calls = {}
    monkeypatch.setattr(Session, "wait_for_rsp", staticmethod(wait_for_rsp))
    s = login_with(monkeypatch, lambda self, cb: calls.update(cb=cb))
    assert s.login_result == {"success": True}
    assert waits == [ipmi_session.WAKE] * 3  # never a sleep on pyghmi's keepalive deadline


def test_a_refusal_handled_by_another_thread_keeps_its_reason(monkeypatch):
    """pyghmi marks the session broken (in logout) before it stores errormsg:
    its __init__, looking in between, raised AttributeError. The reason comes
    from the callback, which pyghmi calls before it marks the session broken."""
    def refused(self, cb):
        cb({"error": "Incorrect password provided"})
        self.broken = True
        raise AttributeError("'FreshSession' object has no attribute 'errormsg'")
    with pytest.raises(pyghmi_session.exc.IpmiException) as e:
        login_with(monkeypatch, refused)
    assert str(e.value) == "Incorrect password provided"


def test_a_broken_login_without_a_callback_is_a_timeout_not_a_crash(monkeypatch):
    def broken(self, cb):
        raise AttributeError("errormsg")
    monkeypatch.setattr(ipmi_session, "CALLBACK_GRACE", 0.0)
    with pytest.raises(pyghmi_session.exc.IpmiException) as e:
        login_with(monkeypatch, broken)
    assert str(e.value) == "Session failed to initialize"
