"""IPMI 2.0 (lanplus) driver, on pyghmi.

pyghmi speaks RMCP+ itself: no ``ipmitool`` process, so no password on any
command line. Its sessions are cached per (BMC, user) by pyghmi; a failed
call drops ours so the next attempt logs in afresh.
"""

from __future__ import annotations

import threading

from pyghmi import exceptions as pg_exc
from pyghmi.ipmi import command

from instanceha.fencing import exceptions as exc
from instanceha.fencing.base import FenceDriver, PowerState

_AUTH_HINTS = ("password", "unauthorized", "user", "privilege", "rakp", "authentication",
               "not authorized")
_STATES = {"on": PowerState.ON, "off": PowerState.OFF}


class IPMIDriver(FenceDriver):
    name = "ipmi"
    default_port = 623

    def __init__(self, entry) -> None:
        super().__init__(entry)
        self._cmd = None
        # one pyghmi Command is not safe to share across threads: one lock per BMC,
        # never a global one (a slow BMC must not hold up the others)
        self._lock = threading.Lock()

    def _translate(self, e: Exception, operation: str) -> exc.FencingError:
        text = str(e).lower()
        if isinstance(e, pg_exc.IpmiException):
            # pyghmi reports a BMC that never answered as "timeout", or with no text
            if text in ("", "none") or "timeout" in text or "unreachable" in text \
                    or "no response" in text:
                return exc.BMCUnreachable(**self.facts(reason=f"{operation}: no answer"))
            if any(h in text for h in _AUTH_HINTS):
                return exc.AuthFailed(**self.facts(username=self.entry.username,
                                                   reason=f"{operation}: login refused"))
            return exc.BMCError(**self.facts(reason=f"{operation}: IPMI error "
                                             f"({type(e).__name__}: {_safe(text)})"))
        if isinstance(e, OSError):
            return exc.BMCUnreachable(**self.facts(reason=f"{operation}: {type(e).__name__}"))
        return exc.GarbageReply(**self.facts(reason=f"{operation}: {type(e).__name__}"))

    def _command(self):
        if self._cmd is None:
            self._cmd = command.Command(
                bmc=self.entry.address, port=self.port, userid=self.entry.username,
                password=self.entry.password.reveal() if self.entry.password else "",
                keepalive=False)
        return self._cmd

    def _call(self, operation: str, fn):
        try:
            with self._lock:
                return fn(self._command())
        except exc.FencingError:
            raise
        except Exception as e:  # pyghmi raises many types; all are translated
            self._cmd = None
            raise self._translate(e, operation) from None

    def request_power(self, state: PowerState, timeout: float | None = None) -> None:
        # a hard off ("off"), never "shutdown" (an OS-level soft off)
        self._call(f"power {state.value}",
                   lambda c: c.set_power(state.value, wait=False))

    def get_power_state(self, timeout: float | None = None) -> PowerState:
        reply = self._call("get power", lambda c: c.get_power())
        value = reply.get("powerstate") if isinstance(reply, dict) else None
        if value not in _STATES:
            raise exc.GarbageReply(**self.facts(reason=f"power state {value!r} in the reply"))
        return _STATES[value]

    def close(self) -> None:
        cmd, self._cmd = self._cmd, None
        if cmd is not None:
            try:
                with self._lock:
                    cmd.ipmi_session.logout()
            except Exception:  # noqa: S110 (best effort on a session going away)
                pass


def _safe(text: str) -> str:
    """pyghmi's messages carry no secrets, but keep them short and on one line."""
    return " ".join(text.split())[:120]
