"""Errors of the notification adapter (see instanceha.exceptions for the style)."""

from instanceha.exceptions import Action, InstanceHAError


class NotificationError(InstanceHAError):
    message = "Notification bus error: %(reason)s"
    action = Action.RETRY


class NotificationSetupError(NotificationError):
    """The bus cannot be set up from the configuration (never carries the URL)."""

    message = "Cannot set up notifications (%(what)s): %(reason)s"
    action = Action.ESCALATE
