"""The ``ipmi`` driver: IPMI 2.0 over LAN (RMCP+, "lanplus") through pyghmi.

pyghmi speaks the protocol in-process, so the password never reaches a
command line (no ``ipmitool -P``). Power off is "chassis power off" (hard,
no OS shutdown); the read-back is "get chassis status".

Every power action (and every read) logs in on a session of its own and logs
out when the Fencer ends it (``end_session``): a BMC drops a silent session
without telling the client, and a session kept from a fence minutes earlier
cost the next fence 18-22 s (see ``ipmi_session``). A call that fails or
times out also ends its session; the next call of the action logs in again.

pyghmi's own timeouts are long (a lost session is noticed after ~30 s), so
every call runs in a worker thread bounded by the caller's timeout. Before
each login the driver sends one sessionless "Get Channel Authentication
Capabilities" datagram: a refusal (ICMP port unreachable) is reported at once
as unreachable, and an answer that is not RMCP as a garbage reply.
"""

from __future__ import annotations

import logging
import socket
import threading

from instanceha.fencing import exceptions as exc
from instanceha.fencing.base import FenceDriver, PowerState

LOG = logging.getLogger(__name__)

RMCP_HEADER = b"\x06\x00\xff\x07"
# RAKP / open-session refusals that mean "these credentials are not accepted"
AUTH_ERRORS = ("Incorrect password", "Unauthorized name", "Unauthorized role",
               "Invalid username length", "Unauthorized GUID", "Invalid RAKP4",
               "Invalid role", "wrong Kg")
TIMEOUT_ERRORS = ("timeout", "Session no longer connected", "Session Disconnected",
                  "Session failed to initialize")


def _checksum(data: bytes) -> int:
    return (-sum(data)) & 0xFF


def auth_caps_request() -> bytes:
    """An IPMI 1.5 sessionless Get Channel Authentication Capabilities (admin)."""
    header = bytes([0x20, 0x18])
    body = bytes([0x81, 0x00, 0x38, 0x8E, 0x04])
    msg = header + bytes([_checksum(header)]) + body + bytes([_checksum(body)])
    return RMCP_HEADER + b"\x00" + b"\x00" * 8 + bytes([len(msg)]) + msg


def probe(address: str, port: int, timeout: float) -> str:
    """'ok', 'refused', 'silent' or 'garbage' for one sessionless datagram."""
    try:
        infos = socket.getaddrinfo(address, port, 0, socket.SOCK_DGRAM)
    except socket.gaierror:
        return "unresolved"
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(sockaddr)
            s.send(auth_caps_request())
            data = s.recv(1024)
        except ConnectionRefusedError:
            return "refused"
        except (TimeoutError, socket.timeout):
            return "silent"
        except OSError:
            return "silent"
    return "ok" if data[:4] == RMCP_HEADER else "garbage"


CHASSIS = 0x00  # netfn Chassis
GET_CHASSIS_STATUS = 0x01
CHASSIS_CONTROL = 0x02
CONTROL = {PowerState.OFF: 0x00, PowerState.ON: 0x01}  # power down (hard) / power up


class IPMIDriver(FenceDriver):
    name = "ipmi"
    default_port = 623

    @property
    def port(self) -> int:
        return self.entry.port or self.default_port

    def __init__(self, entry) -> None:
        super().__init__(entry)
        self._session = None
        self._epoch = 0  # bumped when a session ends: a login finishing late is not kept
        self._lock = threading.Lock()  # one call at a time
        self._state = threading.Lock()  # _session and _epoch, shared with the workers

    # -- plumbing ----------------------------------------------------------

    def _bounded(self, fn, timeout: float, what: str):
        """Run fn() in a worker thread; give up after timeout seconds."""
        box: dict = {}

        def work():
            try:
                box["value"] = fn()
            except BaseException as e:  # handed to the caller's thread
                box["error"] = e

        t = threading.Thread(target=work, name=f"ipmi-{self.host}", daemon=True)
        t.start()
        t.join(timeout)
        if t.is_alive():
            self._end(polite=False)  # a call is in flight on it: no Close Session
            raise exc.BMCUnreachable(**self.facts(reason=f"no answer to {what} within "
                                                  f"{timeout:.1f} s"))
        if "error" in box:
            self._end()
            raise self.translate(box["error"], what)
        return box["value"]

    def translate(self, e: BaseException, what: str) -> exc.FencingError:
        """The one typed error for what pyghmi raised during ``what`` (an
        authentication refusal, a timeout, a BMC error or an undecodable reply);
        the reason is built here, never a copy of the library's text."""
        if isinstance(e, exc.FencingError):
            return e
        import pyghmi.exceptions as pe

        text = str(e.args[0]) if e.args and e.args[0] is not None else "timeout"
        if isinstance(e, pe.IpmiException):
            if any(s in text for s in AUTH_ERRORS):
                return exc.AuthFailed(**self.facts(username=self.entry.username,
                                                   reason=f"{text} (during {what})"))
            if any(s in text for s in TIMEOUT_ERRORS):
                return exc.BMCUnreachable(**self.facts(reason=f"{what}: session timed out"))
            return exc.BMCError(**self.facts(reason=f"{what}: {text}"))
        LOG.debug("unexpected %s from pyghmi during %s", type(e).__name__, what)
        return exc.GarbageReply(**self.facts(reason=f"{what}: the reply could not be "
                                             f"decoded ({type(e).__name__})"))

    def _login(self, timeout: float):
        verdict = probe(self.entry.address, self.port, min(1.0, timeout / 3))
        if verdict == "refused":
            raise exc.BMCUnreachable(**self.facts(
                reason=f"nothing listens on udp port {self.port} (ICMP port unreachable)"))
        if verdict == "unresolved":
            raise exc.BMCUnreachable(**self.facts(reason="the address does not resolve"))
        if verdict == "garbage":
            raise exc.GarbageReply(**self.facts(reason="the answer to Get Channel "
                                                "Authentication Capabilities is not RMCP"))
        from instanceha.fencing import ipmi_session

        return ipmi_session.open_session(self.entry.address, self.port,
                                         self.entry.username or "", self.password())

    def _session_for(self, epoch: int, timeout: float):
        """The session of the current action (logged in on first use). Runs in
        the worker thread."""
        with self._state:
            if epoch != self._epoch:  # this call timed out before it got here
                raise exc.BMCUnreachable(**self.facts(reason="the call was given up"))
            session = self._session
        if session is not None:
            return session
        session = self._login(timeout)
        with self._state:
            if epoch == self._epoch:
                self._session = session
                return session
        # the caller gave up while this login ran: end it here, nobody will
        self._close(session, polite=True)
        raise exc.BMCUnreachable(**self.facts(reason="login finished after the caller "
                                              "gave up"))

    def _run(self, what: str, fn, timeout: float | None):
        timeout = timeout or self.call_timeout
        with self._lock:
            epoch = self._epoch

            def call():
                return fn(self._session_for(epoch, timeout))

            return self._bounded(call, timeout, what)

    def _command(self, session, netfn: int, command: int, data=()) -> dict:
        reply = session.raw_command(netfn=netfn, command=command, data=data)
        if not isinstance(reply, dict):
            raise exc.GarbageReply(**self.facts(reason=f"command 0x{command:02x}: no reply "
                                                "decoded"))
        if reply.get("error"):
            import pyghmi.exceptions as pe

            raise pe.IpmiException(reply["error"])
        return reply

    def _end(self, polite: bool = True) -> None:
        with self._state:
            session, self._session = self._session, None
            self._epoch += 1
        if session is not None:
            self._close(session, polite)

    def _close(self, session, polite: bool) -> None:
        from instanceha.fencing import ipmi_session

        try:
            ipmi_session.close(session, polite=polite)
        except Exception:  # best effort: the BMC may be gone
            LOG.debug("closing the IPMI session of %s failed", self.address, exc_info=True)

    # -- the two primitives ------------------------------------------------

    def request_power(self, state: PowerState, timeout: float | None = None) -> None:
        want = CONTROL[state]
        self._run(f"chassis power {state}",
                  lambda s: self._command(s, CHASSIS, CHASSIS_CONTROL, [want]), timeout)

    def get_power_state(self, timeout: float | None = None) -> PowerState:
        def read(session) -> PowerState:
            reply = self._command(session, CHASSIS, GET_CHASSIS_STATUS)
            data = reply.get("data")
            if reply.get("code") or not data:
                raise exc.GarbageReply(**self.facts(
                    reason=f"get chassis status: completion code {reply.get('code')!r}, "
                    f"{len(data or ())} data byte(s)"))
            return PowerState.ON if data[0] & 0x01 else PowerState.OFF  # "power is on"

        return self._run("get chassis status", read, timeout)

    def end_session(self) -> None:
        """Log out of the action's session; the next call logs in afresh."""
        self._end()

    def close(self) -> None:
        self._end()
