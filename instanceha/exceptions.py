"""Errors of instanceha.

In the manner of sushy: one root error, a message template per class, and the
facts passed as keywords at the raise site::

    raise ConfigError(option="heartbeat_interval", group="agent",
                      file="/etc/instanceha/instanceha.conf",
                      reason="must be shorter than [detection] heartbeat_stale_after")

Every error says what the caller should do next through ``action``:

* ``RETRY``: a passing condition (coordinator away, BMC slow); try again later.
* ``ESCALATE``: retrying will not help; an operator must fix something
  (wrong password, bad configuration, host not in the inventory).

Messages must never contain secrets: raise sites pass host names, addresses,
option names and file paths, never passwords, tokens or transport URLs.
"""

from __future__ import annotations

import enum


class Action(enum.Enum):
    """What the caller should do next with a failed operation."""

    RETRY = "retry later"
    ESCALATE = "give up and escalate to an operator"


class InstanceHAError(Exception):
    """Root of every instanceha error."""

    message = "An unknown error occurred"
    action = Action.ESCALATE

    def __init__(self, message: str | None = None, **kwargs: object) -> None:
        self.kwargs = kwargs
        if message is None:
            try:
                message = self.message % kwargs
            except (KeyError, TypeError, ValueError) as e:  # a bad raise site
                message = f"{self.message} (message formatting failed: {e!r}; facts: {kwargs!r})"
        super().__init__(message)

    @property
    def retryable(self) -> bool:
        return self.action is Action.RETRY


# -- configuration ---------------------------------------------------------


class ConfigError(InstanceHAError):
    message = "Invalid configuration: [%(group)s] %(option)s in %(file)s: %(reason)s"


# -- coordination ----------------------------------------------------------


class CoordinationError(InstanceHAError):
    message = "Coordination backend error: %(reason)s"
    action = Action.RETRY


class CoordinatorUnavailable(CoordinationError):
    message = "Coordinator %(where)s is unreachable: %(reason)s"


class MemberConflict(CoordinationError):
    message = (
        "Member %(member)s is already present with another session (%(owner)s); "
        "waiting for that session to expire"
    )


class IncidentNotFound(InstanceHAError):
    message = "No incident %(incident_id)s in the journal (it may have been pruned by retention)"


class NotLeader(CoordinationError):
    message = "This controller does not hold leadership: %(reason)s"


class UnknownBackend(InstanceHAError):
    message = "Unknown coordination backend %(scheme)r in %(url_option)s; known: %(known)s"


class SessionTimeoutRejected(InstanceHAError):
    message = (
        "The coordinator granted a session timeout of %(granted)s s instead of the "
        "%(requested)s s requested: ZooKeeper clamps it to [2, 20] x tickTime"
    )


class CredentialsError(InstanceHAError):
    """A coordination credentials file that cannot be used (never quotes its content)."""

    message = "Coordination credentials %(file)s: %(reason)s"


class NotProvisioned(CoordinationError):
    message = (
        "Host %(host)s is not provisioned in the coordination store %(where)s: %(reason)s"
    )


class CoordinationDenied(CoordinationError):
    """ZooKeeper refused an operation (ACL): the identity may not do it."""

    message = (
        "The coordination store %(where)s refused %(operation)s for identity %(identity)s: "
        "%(reason)s"
    )
    action = Action.ESCALATE


class LayoutMismatch(CoordinationError):
    message = "The coordination tree %(root)s at %(where)s cannot be used: %(reason)s"
    action = Action.ESCALATE
