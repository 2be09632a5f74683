"""IPMI 2.0 sessions for one power action each, outside pyghmi's session cache.

Why (measured on ipmi_sim and on the pyghmi BMC, pyghmi 1.6.19):

* A BMC drops a session that stayed silent (ipmi_sim after 30 s: a re-fence
  after 28 s idle took 0.12 s, after 35 s 19 s) or that it forgot (the BMC
  restarted: 21-22 s), without telling the client. A fence on such a session
  is retransmitted until pyghmi gives up and logs in again, 18-22 s later.
* Logging in again is not enough: pyghmi's ``Session.__new__`` hands out
  cached sessions. Its ``initting_sessions`` entry is keyed by the str
  credentials and deleted by their encoded bytes, so in Python 3 it is never
  deleted: every later ``Session()`` (a new ``Command``) for the same BMC,
  user, password and port gets the process's first session object back, even
  after it logged out or was marked broken, and then fails every call
  (``logoutexpiry`` is None: TypeError). That is why the earlier fix
  (1db33c6, reverted in 7c19bfa) broke the second fence.

``open_session`` builds a ``FreshSession``: pyghmi's Session with the cache
lookup taken out, so it always logs in anew and is never cached. ``close``
sends Close Session (when the session is idle) and takes the session out of
pyghmi's tables (packet routing, keepalive, retransmission), whatever the BMC
answers: no session outlives its power action, nothing accumulates per fence,
and the BMC's session slots are given back.

Several threads driving pyghmi at once (20 fences, or a check of a whole
inventory) meet a lost wake-up: pyghmi's replies are handled by whichever
thread happens to be in ``wait_for_rsp``, and a thread checks "still logging
in?" or "reply matched?" before it sleeps, without a lock. When another
thread finished its login in between, it slept on the next keepalive deadline
(~25 s, measured: a good BMC's check given up after 10 s in 6 of 100 checks run
beside a wrong-password login on another BMC); and a login refused while
another thread handled the refusal could read ``broken`` before pyghmi stored
the reason (AttributeError ``errormsg``, 3 in 300). A FreshSession therefore
logs in asynchronously, learns the outcome from pyghmi's own login callback,
and never sleeps longer than ``WAKE`` before it looks again, at login and
while it awaits a reply.

What stays shared, as pyghmi designed it: one I/O thread per process and a
few UDP sockets, each serving up to 64 BMCs. Two sessions to one BMC never
share a socket (the BMC's replies are routed by local port): logins to one
BMC take turns, and a new session avoids the sockets of those still
registered.

This module uses pyghmi internals (``pyghmi.ipmi.private.session``); the
pinned version is in tools/constraints.txt and
tests/unit/fencing/test_ipmi_session.py fails if they change shape.
"""

from __future__ import annotations

import socket
import struct
import threading

import pyghmi.exceptions as _pyghmi_exc
from pyghmi.ipmi.private import session as _pyghmi
from pyghmi.ipmi.private import util as _util
from pyghmi.ipmi.private.session import Session

CLOSE_SESSION = (0x06, 0x3C)  # netfn App, command Close Session

_registering: dict[tuple[str, int], threading.Lock] = {}
_registering_lock = threading.Lock()


def _lock_for(bmc: str, port: int) -> threading.Lock:
    with _registering_lock:
        return _registering.setdefault((bmc, port), threading.Lock())


def _sockaddrs(bmc: str, port: int) -> list:
    """The addresses pyghmi routes ``bmc``'s replies by (as in ``Session.__new__``)."""
    found: list[tuple[object, ...]] = []
    for family, _, _, _, sockaddr in socket.getaddrinfo(bmc, port, 0, socket.SOCK_DGRAM):
        if _pyghmi.ipv6support and family == socket.AF_INET:
            found.append(("::ffff:" + str(sockaddr[0]), sockaddr[1], 0, 0))
        else:
            found.append(tuple(sockaddr))
    return found


def sockets_in_use(bmc: str, port: int) -> list:
    """Sockets of the sessions registered for this BMC now: a new one avoids them."""
    used = []
    for sockaddr in _sockaddrs(bmc, port):
        for other in list(Session.bmc_handlers.get(sockaddr, {}).values()):
            if getattr(other, "socket", None) is not None:
                used.append(other.socket)
    return used


WAKE = 0.05  # s: the longest sleep before a waiting thread looks at the session again
LOGIN_LIMIT = 60.0  # s: past this a login pyghmi did not end is given up (pyghmi's own ~10 s)
CALLBACK_GRACE = 1.0  # s: for the callback of a login another thread is ending


class FreshSession(Session):
    """pyghmi's Session, never taken from (nor put into) its session cache,
    logging in without pyghmi's unlocked "still logging in?" wait."""

    login_result: dict | None
    """What pyghmi's login callback said (None until it calls)."""

    def __new__(cls, bmc, userid, password, port=623, kg=None, onlogon=None,
                privlevel=None, keepalive=True):
        self = object.__new__(cls)
        self.forbidsock = sockets_in_use(bmc, port)
        self.login_result = None
        self.login_done = threading.Event()
        return self

    def __init__(self, bmc, userid, password, port=623, kg=None, onlogon=None,
                 privlevel=None, keepalive=True):
        try:  # with a callback pyghmi returns once the first login packet is out
            super().__init__(bmc, userid, password, port=port, kg=kg,
                             onlogon=self._login_finished, privlevel=privlevel,
                             keepalive=keepalive)
        except (_pyghmi_exc.IpmiException, AttributeError) as e:
            # broken while pyghmi's __init__ looked: another thread is handling
            # the end of the login and calls back with the reason right after
            if not self.login_done.wait(CALLBACK_GRACE):
                reason = str(e) if isinstance(e, _pyghmi_exc.IpmiException) and e.args \
                    and e.args[0] else "Session failed to initialize"
                raise _pyghmi_exc.IpmiException(reason) from None
        give_up = _pyghmi._monotonic_time() + LOGIN_LIMIT
        while not self.login_done.is_set():
            if _pyghmi._monotonic_time() > give_up:
                forget(self)
                raise _pyghmi_exc.IpmiException("timeout")
            Session.wait_for_rsp(timeout=WAKE)
        result = self.login_result
        if result is None:  # set before login_done: never; and never taken for a login
            raise _pyghmi_exc.IpmiException("the login ended without a result")
        if "error" in result:
            raise _pyghmi_exc.IpmiException(result["error"])

    def _login_finished(self, result):
        """pyghmi's login callback, in whichever thread handled the last
        reply: {'success': True} or {'error': text}; the first one counts."""
        if self.login_result is None:
            self.login_result = dict(result)
        self.login_done.set()

    def awaitresponse(self, retry, netfn, command):
        """pyghmi's awaitresponse (1.6.19) with two changes: the replies
        already queued are looked at before the first sleep, and no sleep is
        longer than WAKE (pyghmi sleeps to the retransmission deadline, 0.5-1
        s; a reply another thread handled meanwhile waited that long)."""
        self.awaitingresponse = True
        try:
            self.process_pktqueue()
            alltimeout = _pyghmi._monotonic_time() + (self._getmaxtimeout() * 2)
            while (retry and _pyghmi.unmatched(self.lastresponse, netfn, command)
                    and (self.logging or self.logged or self.onlogpayload)):
                timeout = min(self.expiration - _pyghmi._monotonic_time(), WAKE)
                _pyghmi._io_wait(timeout, self.sockaddr)
                while self.iterwaiters:
                    self.iterwaiters.pop()({"success": True})
                self.process_pktqueue()
                if _pyghmi._monotonic_time() > alltimeout:
                    self._mark_broken()
                    raise _pyghmi_exc.IpmiException("Session no longer connected")
                with _util.protect(_pyghmi.WAITING_SESSIONS):
                    if (self in self.waiting_sessions
                            and self.expiration < _pyghmi._monotonic_time()):
                        self.waiting_sessions.pop(self, None)
                        if not self.lastpayload and not self.logging:
                            return
                        self._timedout()
        finally:
            self.awaitingresponse = False


def open_session(bmc: str, port: int, userid: str, password: str) -> FreshSession:
    """Log in to the BMC (blocking; pyghmi bounds the attempts). Raises
    pyghmi's IpmiException, with pyghmi's reason, when the login fails.

    ``keepalive=False``: pyghmi sends no keepalive for the session; should it
    ever be left open, pyghmi logs it out after about 25 s of silence."""
    with _lock_for(bmc, port):  # until registered: two sessions, two sockets
        return FreshSession(bmc=bmc, userid=userid, password=password, port=port,
                            keepalive=False)


def close(session: FreshSession, polite: bool = True) -> None:
    """End the session: Close Session to the BMC (``polite``, and only when no
    command is in flight on it; sent once, no answer awaited), then out of
    every pyghmi table. Idempotent; never raises for a BMC that is gone. A
    call still waiting on the session ends at its next retransmission."""
    if polite and session.logged and session.sockaddr is not None \
            and not session.lastpayload and not session._isincommand():
        try:
            session._send_ipmi_net_payload(
                netfn=CLOSE_SESSION[0], command=CLOSE_SESSION[1],
                data=struct.unpack("4B", struct.pack("I", session.sessionid)), retry=False)
        except Exception:  # noqa: S110 - best effort: the session is forgotten below anyway
            pass
    forget(session)


def forget(session: FreshSession) -> None:
    """Take the session out of pyghmi's tables; no packet is sent."""
    with _util.protect(_pyghmi.KEEPALIVE_SESSIONS):
        Session.keepalive_sessions.pop(session, None)
    with _util.protect(_pyghmi.WAITING_SESSIONS):
        Session.waiting_sessions.pop(session, None)
    sock = getattr(session, "socket", None)
    if sock is not None:
        try:
            myport = sock.getsockname()[1]
        except OSError:
            myport = None
        # the per-address dict is left in place (one per BMC address): deleting it
        # could drop the registration of a session being opened to that BMC now
        for sockaddr in getattr(session, "allsockaddrs", ()):
            ports = Session.bmc_handlers.get(sockaddr)
            if ports is not None and ports.get(myport) is session:
                ports.pop(myport, None)
    session.lastpayload = None
    session.onlogpayload = None
    session.logged = 0
    session.logging = False
    if not session.broken:
        session.broken = True
        if sock is not None and sock in Session.socketpool:
            Session.socketpool[sock] -= 1


def registered(bmc: str, port: int) -> list:
    """Sessions pyghmi routes this BMC's replies to now (for tests and checks)."""
    return [s for sockaddr in _sockaddrs(bmc, port)
            for s in Session.bmc_handlers.get(sockaddr, {}).values()]
