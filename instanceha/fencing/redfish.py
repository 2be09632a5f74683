"""Redfish driver, on sushy.

ForceOff / On through the system's Reset action, power state read back from
the system resource. A BMC that answers 409 (or 400 with "already") to a
reset into the state the system is already in has accepted the request: the
read-back decides.
"""

from __future__ import annotations

import requests
import sushy
from sushy import exceptions as sushy_exc

from instanceha.fencing import exceptions as exc
from instanceha.fencing.base import FenceDriver, PowerState

_RESET = {PowerState.OFF: sushy.RESET_FORCE_OFF, PowerState.ON: sushy.RESET_ON}
_STATES = {sushy.POWER_STATE_ON: PowerState.ON, sushy.POWER_STATE_OFF: PowerState.OFF}
_TRANSITION = {getattr(sushy, n) for n in ("POWER_STATE_POWERING_ON", "POWER_STATE_POWERING_OFF")
               if hasattr(sushy, n)}


class RedfishDriver(FenceDriver):
    name = "redfish"
    default_port = 443

    def __init__(self, entry) -> None:
        super().__init__(entry)
        self._root = None

    @property
    def base_url(self) -> str:
        return f"{self.entry.scheme}://{self.address}"

    def _connect(self):
        if self._root is None:
            password = self.entry.password.reveal() if self.entry.password else None
            connector = sushy.connector.Connector(
                self.base_url, verify=self.entry.verify,
                default_request_timeout=self.call_timeout,
                connect_timeout=min(5.0, self.call_timeout))
            self._root = sushy.Sushy(
                self.base_url, verify=self.entry.verify, connector=connector,
                auth=sushy.auth.BasicAuth(self.entry.username, password),
                server_side_retries=0, server_side_retries_delay=0)
        return self._root

    def _system(self):
        root = self._connect()
        system_id = self.entry.system_id
        if system_id and not system_id.startswith("/"):
            system_id = f"/redfish/v1/Systems/{system_id}"
        if system_id:
            return root.get_system(system_id)
        return root.get_system()  # the BMC's only system

    def _translate(self, e: Exception, operation: str) -> exc.FencingError:
        self._root = None
        if isinstance(e, sushy_exc.ResourceNotFoundError):
            return exc.BMCError(**self.facts(reason=f"{operation}: system "
                                             f"{self.entry.system_id!r} not found (check "
                                             "system_id in the fencing inventory)"))
        if isinstance(e, sushy_exc.AccessError):
            return exc.AuthFailed(**self.facts(username=self.entry.username,
                                               reason=f"{operation}: HTTP {e.status_code}"))
        if isinstance(e, sushy_exc.ConnectionError):
            cause = e.__cause__ or e.__context__
            if isinstance(cause, requests.exceptions.SSLError) or "certificate" in str(e).lower():
                return exc.TLSFailure(**self.facts(reason=f"{operation}: certificate not "
                                                   "trusted"))
            return exc.BMCUnreachable(**self.facts(reason=f"{operation}: no connection"))
        if isinstance(e, sushy_exc.HTTPError):
            status = getattr(e, "status_code", None)
            if status is not None and status >= 500:
                return exc.BMCError(**self.facts(reason=f"{operation}: HTTP {status}"))
            return exc.BMCError(**self.facts(reason=f"{operation}: HTTP {status} refused"))
        if isinstance(e, (sushy_exc.MissingAttributeError, sushy_exc.MalformedAttributeError,
                          sushy_exc.UnknownDefaultError, ValueError, KeyError, TypeError)):
            return exc.GarbageReply(**self.facts(reason=f"{operation}: {type(e).__name__}"))
        if isinstance(e, requests.exceptions.SSLError):
            return exc.TLSFailure(**self.facts(reason=f"{operation}: certificate not trusted"))
        if isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                          OSError)):
            return exc.BMCUnreachable(**self.facts(reason=f"{operation}: {type(e).__name__}"))
        return exc.GarbageReply(**self.facts(reason=f"{operation}: {type(e).__name__}"))

    def request_power(self, state: PowerState, timeout: float | None = None) -> None:
        operation = f"reset {_RESET[state]}"
        try:
            self._system().reset_system(_RESET[state])
        except sushy_exc.HTTPError as e:
            status = getattr(e, "status_code", None)
            if status == 409 or (status == 400 and "already" in str(e).lower()):
                return  # "already in that state": accepted; the read-back decides
            raise self._translate(e, operation) from None
        except Exception as e:
            raise self._translate(e, operation) from None

    def get_power_state(self, timeout: float | None = None) -> PowerState:
        try:
            system = self._system()
            system.refresh(force=True)
            value = system.power_state
        except Exception as e:
            raise self._translate(e, "get power state") from None
        if value in _TRANSITION:
            raise exc.PowerStateInTransition(host=self.host, state=str(value))
        if value not in _STATES:
            raise exc.GarbageReply(**self.facts(reason=f"power state {value!r}"))
        return _STATES[value]

    def close(self) -> None:
        root, self._root = self._root, None
        if root is not None:
            try:
                root.close()
            except Exception:  # noqa: S110 (best effort)
                pass
