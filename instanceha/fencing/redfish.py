"""The ``redfish`` driver, through sushy.

Power off is ``ComputerSystem.Reset`` with ``ResetType=ForceOff`` (hard);
the read-back is the system's ``PowerState``. A 409 Conflict to a Reset is
what many BMCs answer when the system already is in the requested state: it
is accepted as a no-op, and the read-back decides. ``PoweringOn`` /
``PoweringOff`` are transitions, never a confirmation.

TLS is verified by default (``verify: true`` = system CAs; a path = that CA
bundle; ``false`` only for labs). HTTP basic auth: no session token to
expire in the middle of a fence. sushy's own retries (which sleep seconds
on connection errors) are turned off: the confirm loop retries, within its
deadline.
"""

from __future__ import annotations

import logging
import threading

import requests
import sushy
from sushy import exceptions as sushy_exc

from instanceha.fencing import exceptions as exc
from instanceha.fencing.base import FenceDriver, PowerState

LOG = logging.getLogger(__name__)

_RESET = {PowerState.OFF: sushy.RESET_FORCE_OFF, PowerState.ON: sushy.RESET_ON}
_STATES = {sushy.POWER_STATE_ON: PowerState.ON, sushy.POWER_STATE_OFF: PowerState.OFF}
_TRANSITIONS = {sushy.POWER_STATE_POWERING_ON, sushy.POWER_STATE_POWERING_OFF}


def _cause(e: BaseException) -> BaseException | None:
    """The requests exception under a sushy ConnectionError (raised in its except)."""
    return e.__cause__ or e.__context__


class RedfishDriver(FenceDriver):
    name = "redfish"
    default_port = 443

    def __init__(self, entry) -> None:
        super().__init__(entry)
        self._root: sushy.Sushy | None = None
        self._system_path: str | None = None
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"{self.entry.scheme}://{self.address}"

    # -- plumbing ----------------------------------------------------------

    def _connect(self, timeout: float):
        auth = sushy.auth.BasicAuth(self.entry.username, self.password())
        root = sushy.Sushy(f"{self.base_url}/redfish/v1", auth=auth, verify=self.entry.verify,
                           server_side_retries=1, read_timeout=timeout,
                           connect_timeout=timeout)
        path = self.entry.system_id
        if path is None:
            members = list(root.get_system_collection().members_identities)
            if len(members) != 1:
                raise exc.InventoryError(
                    file=self.entry.source, host=self.host, key="system_id",
                    reason=f"the BMC at {self.address} has {len(members)} systems: "
                           f"name one of {sorted(members)}")
            path = members[0]
        elif not path.startswith("/"):
            path = f"/redfish/v1/Systems/{path}"
        self._system_path = path
        return root

    def _system(self, timeout: float):
        if self._root is None:
            self._root = self._connect(timeout)
        return self._root.get_system(self._system_path)

    def _run(self, what: str, fn, timeout: float | None):
        timeout = timeout or self.call_timeout
        with self._lock:
            try:
                return fn(timeout)
            except exc.FencingError:
                raise
            except Exception as e:
                self._root = None  # reconnect next time
                raise self.translate(e, what)

    def translate(self, e: Exception, what: str) -> exc.FencingError:
        """The one typed error for what sushy or requests raised during ``what``.
        Reasons are built here, never copied from the exception text (URLs and
        bodies can carry what we do not want in a log line)."""
        if isinstance(e, sushy_exc.AccessError):
            return exc.AuthFailed(**self.facts(username=self.entry.username,
                                               reason=f"HTTP {e.status_code} on {what}"))
        if isinstance(e, sushy_exc.ConnectionError):
            cause = _cause(e)
            if isinstance(cause, requests.exceptions.SSLError):
                return exc.TLSFailure(**self.facts(reason=_ssl_reason(cause)))
            if isinstance(cause, requests.exceptions.Timeout):
                return exc.BMCUnreachable(**self.facts(reason=f"{what}: timed out"))
            return exc.BMCUnreachable(**self.facts(reason=f"{what}: connection failed "
                                                   f"({type(cause).__name__})"))
        if isinstance(e, sushy_exc.ServerSideError):
            return exc.BMCError(**self.facts(reason=f"{what}: HTTP {e.status_code}"))
        if isinstance(e, sushy_exc.ResourceNotFoundError):
            return exc.InventoryError(file=self.entry.source, host=self.host, key="system_id",
                                      reason=f"{self._system_path} does not exist on the BMC "
                                             f"at {self.address} (HTTP 404)")
        if isinstance(e, sushy_exc.HTTPError):
            return exc.BMCError(**self.facts(reason=f"{what}: HTTP {e.status_code} "
                                             f"({e.code})"))
        if isinstance(e, requests.exceptions.SSLError):
            return exc.TLSFailure(**self.facts(reason=_ssl_reason(e)))
        if isinstance(e, requests.exceptions.RequestException) and not isinstance(e, ValueError):
            return exc.BMCUnreachable(**self.facts(reason=f"{what}: {type(e).__name__}"))
        # ValueError (JSON), sushy's MissingAttribute/MalformedAttribute, ...
        return exc.GarbageReply(**self.facts(reason=f"{what}: {type(e).__name__}"))

    # -- the two primitives ------------------------------------------------

    def request_power(self, state: PowerState, timeout: float | None = None) -> None:
        def call(t):
            system = self._system(t)
            try:
                system.reset_system(_RESET[state])
            except sushy_exc.HTTPError as e:
                if e.status_code != 409:
                    raise
                LOG.info("%s: Reset %s answered 409 Conflict: taken as 'already %s'; "
                         "the read-back decides", self.host, _RESET[state].value, state)

        self._run(f"Reset {_RESET[state].value}", call, timeout)

    def get_power_state(self, timeout: float | None = None) -> PowerState:
        value = self._run("GET PowerState", lambda t: self._system(t).power_state, timeout)
        if value in _STATES:
            return _STATES[value]
        if value in _TRANSITIONS:
            raise exc.PowerStateInTransition(host=self.host, state=str(value))
        raise exc.GarbageReply(**self.facts(reason=f"PowerState {value!r} is neither On nor "
                                            "Off"))

    def close(self) -> None:
        self._root = None


def _ssl_reason(e: BaseException) -> str:
    text = str(e)
    for known in ("CERTIFICATE_VERIFY_FAILED", "certificate has expired",
                  "Hostname mismatch", "self-signed certificate", "WRONG_VERSION_NUMBER",
                  "unable to get local issuer certificate"):
        if known in text:
            return known
    return "TLS handshake or certificate verification failed"
