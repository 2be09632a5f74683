"""Typed fencing failures.

Each says what the operator must fix and whether to retry later (``RETRY``)
or give up and escalate (``ESCALATE``). Raise sites pass host names, driver
names, addresses, file paths and inventory keys: never a password, and never
the text of a third-party exception that might echo one (an HTTP client's
message can contain a URL with credentials; callers pass ``reason`` strings
they built themselves).
"""

from __future__ import annotations

from collections.abc import Sequence

from instanceha.exceptions import Action, InstanceHAError


class FencingError(InstanceHAError):
    """Root of the fencing failures. None of them means "powered off"."""

    message = "Fencing of %(host)s failed: %(reason)s"
    action = Action.ESCALATE


class BMCUnreachable(FencingError):
    message = (
        "BMC of %(host)s (%(driver)s at %(address)s) is unreachable: %(reason)s. "
        "Check that the BMC is powered and cabled, that the address and port in the "
        "fencing inventory are right, and that no firewall drops the traffic"
    )
    action = Action.RETRY


class AuthFailed(FencingError):
    message = (
        "BMC of %(host)s (%(driver)s at %(address)s) refused the credentials of user "
        "%(username)r: %(reason)s. Fix username/password (or password_file) of %(host)s "
        "in the fencing inventory, or the account on the BMC"
    )
    action = Action.ESCALATE


class TLSFailure(FencingError):
    message = (
        "TLS with the BMC of %(host)s (%(driver)s at %(address)s) failed: %(reason)s. "
        "Set 'verify' of %(host)s in the fencing inventory to the CA bundle that signed "
        "the BMC's certificate, or fix the certificate on the BMC"
    )
    action = Action.ESCALATE


class GarbageReply(FencingError):
    message = (
        "The BMC of %(host)s (%(driver)s at %(address)s) gave an answer that is not a "
        "valid %(driver)s reply: %(reason)s. Check that the address and port in the "
        "fencing inventory point at the BMC and that its firmware works"
    )
    action = Action.ESCALATE


class BMCError(FencingError):
    message = (
        "The BMC of %(host)s (%(driver)s at %(address)s) refused or failed the request: "
        "%(reason)s. It may be busy; if this persists, check the BMC's own logs"
    )
    action = Action.RETRY


class PowerStateInTransition(FencingError):
    message = "The BMC of %(host)s reports power state %(state)r (a transition is under way)"
    action = Action.RETRY


class DeadlineExceeded(FencingError):
    message = (
        "Power %(requested)s of %(host)s (%(driver)s at %(address)s) was not confirmed "
        "within %(deadline).1f s after %(attempts)d request(s): the last read-back was "
        "%(last_state)s%(last_error)s. The host must be treated as NOT fenced; check the "
        "BMC, or raise [fencing] deadline (or 'deadline' of this host in the inventory) "
        "if this BMC is just slow"
    )
    action = Action.RETRY


class HostNotInInventory(FencingError):
    message = (
        "Host %(host)s has no entry in the fencing inventory %(file)s: add one under "
        "'hosts:' with its BMC's driver, address and credentials"
    )
    action = Action.ESCALATE


class InventoryError(FencingError):
    message = "Fencing inventory %(file)s, host %(host)s, key %(key)s: %(reason)s"
    action = Action.ESCALATE


class UnknownDriver(FencingError):
    message = "Unknown fencing driver %(driver)r; known drivers: %(known)s"
    action = Action.ESCALATE


class AgentTimeout(FencingError):
    message = (
        "Fence agent %(driver)s for %(host)s (at %(address)s) did not finish '%(what)s' "
        "within %(timeout).1f s and was killed. The device may be unreachable or slow: "
        "check it, or raise 'timeout' of this device in the fencing inventory"
    )
    action = Action.RETRY


class AgentLoginFailed(FencingError):
    message = (
        "Fence agent %(driver)s could not connect to or log in to %(address)s for "
        "%(host)s ('%(what)s': %(reason)s). The agent does not say which: check the "
        "address and port, then username and password (or password_file) of %(host)s in "
        "the fencing inventory against the device"
    )
    action = Action.RETRY


class AgentFailed(FencingError):
    message = (
        "Fence agent %(driver)s for %(host)s (at %(address)s) failed '%(what)s' with exit "
        "code %(rc)s: %(reason)s. Run '%(driver)s -o %(what)s' by hand with the "
        "device's options to see the agent's own diagnostics"
    )
    action = Action.RETRY


class LevelsFailed(FencingError):
    failures: Sequence[tuple[int, str, FencingError]] = ()
    """(level, device, its error) of each level tried (set where it is raised)."""
    message = (
        "No fencing level of %(host)s confirmed power %(requested)s: %(levels)s. The host "
        "must be treated as NOT fenced; fix a level's devices (or attest the power-off "
        "with 'instanceha host confirm-down')"
    )
    action = Action.RETRY
