"""Errors of the Nova adapter: every Nova, Keystone or HTTP failure becomes one.

``raise_for_response()`` sorts HTTP answers once: 5xx, 409 and 429 are
passing conditions (RETRY); other 4xx will not get better by retrying
(ESCALATE). Transport failures (refused, timed out) are RETRY. Messages carry
the operation, the status and Nova's own explanation, never a token or a
password.
"""

from __future__ import annotations

from instanceha.exceptions import Action, InstanceHAError


class ComputeError(InstanceHAError):
    message = "Nova call %(operation)s failed: %(reason)s"


class NovaUnavailable(ComputeError):
    message = "Nova is unreachable during %(operation)s: %(reason)s"
    action = Action.RETRY

    @property
    def unsent(self) -> bool:
        """The request never left (connection refused): Nova cannot act on it.
        Otherwise (a timeout, a connection lost after sending) it may have."""
        return bool(self.kwargs.get("unsent"))


class NovaAuthError(ComputeError):
    message = "Nova/Keystone refused the credentials of [nova] during %(operation)s: %(reason)s"


class NovaConfigError(ComputeError):
    message = "Nova cannot be used as configured in [nova] (%(operation)s): %(reason)s"


class NovaHTTPError(ComputeError):
    message = "Nova answered %(status)s to %(operation)s: %(reason)s"

    @property
    def status(self) -> int:
        status = self.kwargs.get("status", 0)
        return int(status) if isinstance(status, (int, str)) else 0


class NovaServerError(NovaHTTPError):
    """5xx: Nova or a service behind it failed; try again later."""

    action = Action.RETRY


class NovaConflict(NovaHTTPError):
    """409/429: the object is busy (task state, service still up) or rate-limited."""

    action = Action.RETRY


class NovaForbidden(NovaHTTPError):
    """401/403: the [nova] account lacks the admin rights instanceha needs."""


class NovaNotFound(NovaHTTPError):
    """404: the server, service or migration does not exist (any more)."""


class NovaBadRequest(NovaHTTPError):
    """Other 4xx: instanceha asked for something Nova does not accept."""


class ServiceNotFound(ComputeError):
    message = "No nova-compute service on host %(host)s"


class EvacuationFailed(ComputeError):
    """One server could not be moved off a failed host after every attempt."""

    message = ("Server %(server)s could not be evacuated from %(host)s after %(attempts)s "
               "attempt(s): %(reason)s")


class NoCapacity(EvacuationFailed):
    """The scheduler found no host for the server (NoValidHost)."""

    message = ("No host has room for server %(server)s from %(host)s "
               "(%(attempts)s attempt(s)): %(reason)s")


_BY_STATUS = {401: NovaForbidden, 403: NovaForbidden, 404: NovaNotFound, 409: NovaConflict,
              429: NovaConflict}


def _explanation(response) -> str:
    try:
        body = response.json()
    except ValueError:
        return (response.text or "").strip()[:300] or response.reason or ""
    if isinstance(body, dict):
        for value in body.values():  # {"conflictingRequest": {"message": ...}}
            if isinstance(value, dict) and "message" in value:
                return str(value["message"])[:300]
        if "message" in body:
            return str(body["message"])[:300]
    return str(body)[:300]


def error_for_response(response, operation: str) -> NovaHTTPError:
    status = response.status_code
    cls = NovaServerError if status >= 500 else _BY_STATUS.get(status, NovaBadRequest)
    return cls(operation=operation, status=status, reason=_explanation(response))


def raise_for_response(response, operation: str):
    """Return the response when it is a success, else raise the matching error."""
    if response.status_code < 400:
        return response
    raise error_for_response(response, operation)


def unanswered(e: InstanceHAError) -> bool:
    """No answer from Nova itself (a timeout, a gateway's 502/504): the request
    may have reached nova-api, which may still act on it."""
    if isinstance(e, NovaUnavailable):
        return not e.unsent
    return getattr(e, "status", None) in (502, 504)


class WaitingForRoom(ComputeError):
    """Servers of a fenced host were held back: no surviving host has room for
    them now. Not a failure of anything: the recovery is tried again, and
    sends them when room appears."""

    message = "%(count)d server(s) of %(host)s wait for room (%(reason)s)"
    action = Action.RETRY
