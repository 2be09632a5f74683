"""The ``ipmi`` driver: IPMI 2.0 over LAN (RMCP+, "lanplus") through pyghmi.

pyghmi speaks the protocol in-process, so the password never reaches a
command line (no ``ipmitool -P``). Power off is "chassis power off" (hard,
no OS shutdown); the read-back is "get chassis status".

pyghmi's own timeouts are long (a lost session is noticed after ~30 s), so
every call runs in a worker thread bounded by the caller's timeout. Before
the first login the driver sends one sessionless "Get Channel Authentication
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


class IPMIDriver(FenceDriver):
    name = "ipmi"
    default_port = 623

    def __init__(self, entry) -> None:
        super().__init__(entry)
        self._command = None
        self._lock = threading.Lock()

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
            self._command = None  # the session is suspect; log in again next time
            raise exc.BMCUnreachable(**self.facts(reason=f"no answer to {what} within "
                                                  f"{timeout:.1f} s"))
        if "error" in box:
            raise self._translate(box["error"], what)
        return box["value"]

    def _translate(self, e: BaseException, what: str) -> exc.FencingError:
        self._command = None
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
        from pyghmi.ipmi import command

        return command.Command(bmc=self.entry.address, port=self.port,
                               userid=self.entry.username,
                               password=self.entry.password.reveal(),
                               # no background keepalive traffic to hundreds of idle
                               # BMCs: a fence logs in afresh when its session expired
                               keepalive=False)

    def _run(self, what: str, fn, timeout: float | None):
        timeout = timeout or self.call_timeout
        with self._lock:
            def call():
                if self._command is None:
                    self._command = self._login(timeout)
                return fn(self._command)

            return self._bounded(call, timeout, what)

    # -- the two primitives ------------------------------------------------

    def request_power(self, state: PowerState, timeout: float | None = None) -> None:
        want = {PowerState.OFF: "off", PowerState.ON: "on"}[state]
        reply = self._run(f"chassis power {want}", lambda c: c.set_power(want, wait=False),
                          timeout)
        if not isinstance(reply, dict):
            raise exc.GarbageReply(**self.facts(reason=f"chassis power {want}: "
                                                "unexpected reply"))

    def get_power_state(self, timeout: float | None = None) -> PowerState:
        reply = self._run("get chassis status", lambda c: c.get_power(), timeout)
        value = reply.get("powerstate") if isinstance(reply, dict) else None
        if value == "on":
            return PowerState.ON
        if value == "off":
            return PowerState.OFF
        raise exc.GarbageReply(**self.facts(reason=f"power state {value!r} is neither "
                                            "on nor off"))

    def close(self) -> None:
        command, self._command = self._command, None
        if command is not None:
            try:
                command.ipmi_session.logout()
            except Exception:  # best effort: the BMC may be gone
                LOG.debug("logout from %s failed", self.address)
