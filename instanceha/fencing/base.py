"""The fencing driver interface: two primitives, nothing else.

A driver asks its BMC for a power state (``request_power``) and reads the
power state back (``get_power_state``). It never decides that a host is off:
``confirm.confirm`` does, from a read-back. Drivers are built from one
inventory entry, do no I/O in ``__init__`` and raise only the typed errors
of ``instanceha.fencing.exceptions``.
"""

from __future__ import annotations

import abc
import enum

from instanceha.fencing.model import BMCEntry


class PowerState(enum.Enum):
    ON = "on"
    OFF = "off"

    def __str__(self) -> str:
        return self.value


class FenceDriver(abc.ABC):
    """One BMC, reached with the facts of one inventory entry."""

    #: the entry-point name of the driver (``instanceha.fencing.drivers``)
    name = "abstract"
    #: the port used when the inventory entry names none
    default_port: int | None = None

    def __init__(self, entry: BMCEntry) -> None:
        self.entry = entry

    @property
    def host(self) -> str:
        return self.entry.host

    @property
    def port(self) -> int | None:
        return self.entry.port or self.default_port

    @property
    def address(self) -> str:
        return f"{self.entry.address}:{self.port}" if self.port else self.entry.address

    def password(self) -> str:
        """The entry's password, revealed for the BMC call only. The inventory
        refuses an ipmi or redfish entry without one (NEEDS_CREDENTIALS)."""
        if self.entry.password is None:
            raise ValueError(f"{self.entry.describe()}: no password in the inventory entry")
        return self.entry.password.reveal()

    @property
    def call_timeout(self) -> float:
        """Seconds one BMC call may take (inventory ``timeout``, else 10)."""
        return self.entry.timeout or 10.0

    def facts(self, **extra: object) -> dict:
        """Keywords for the typed errors: who, which driver, where (no secret)."""
        return {"host": self.host, "driver": self.name, "address": self.address, **extra}

    @abc.abstractmethod
    def request_power(self, state: PowerState, timeout: float | None = None) -> None:
        """Ask the BMC for a hard power change (off = no OS shutdown).

        Returns once the BMC accepted the request; that proves nothing about
        the power state. A BMC that says the system already is in ``state``
        (Redfish 409) has accepted it too. ``timeout`` (seconds) bounds the
        call; ``None`` means ``call_timeout``.
        """

    @abc.abstractmethod
    def get_power_state(self, timeout: float | None = None) -> PowerState:
        """Read the power state: ON or OFF. Anything else raises a typed error."""

    def end_session(self) -> None:  # noqa: B027  (optional hook)
        """End the BMC session the last calls used (log out), so that the next
        power action or read logs in afresh. The Fencer calls it after each
        one. Must not raise. Default: nothing (no session to end)."""

    def monitor(self, timeout: float | None = None) -> PowerState:
        """What ``instanceha fencing check`` asks: is the device usable? The
        power state, or a typed error. Nothing is powered. Drivers with a
        cheaper or fuller health call override it (fence_agent: monitor + status)."""
        return self.get_power_state(timeout)

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Drop any session with the BMC. Called when a Fencer is closed."""
