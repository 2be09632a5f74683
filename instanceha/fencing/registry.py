"""The fencing drivers installed: stevedore entry points, found by name.

Drivers register in the ``instanceha.fencing.drivers`` namespace (setup.cfg):
``ipmi``, ``redfish``, ``fence_agent``, ``fake``. Nothing here imports a
driver module: stevedore loads the one an inventory entry names, when a
Fencer first needs it.
"""

from __future__ import annotations

import typing

from stevedore import ExtensionManager, driver
from stevedore import exception as sd_exc

from instanceha.fencing import exceptions
from instanceha.fencing.base import FenceDriver
from instanceha.fencing.model import BMCEntry

NAMESPACE = "instanceha.fencing.drivers"


def driver_names() -> list[str]:
    """The names of the installed drivers, sorted."""
    return sorted(ExtensionManager(NAMESPACE).names())


def load_driver_class(name: str) -> type[FenceDriver]:
    """The driver class registered under ``name``, or UnknownDriver."""
    try:
        manager: driver.DriverManager[type[FenceDriver]] = driver.DriverManager(
            NAMESPACE, name, invoke_on_load=False)
        return typing.cast(type[FenceDriver], manager.driver)
    except sd_exc.NoMatches:
        raise exceptions.UnknownDriver(driver=name, known=", ".join(driver_names()))


def build_driver(entry: BMCEntry) -> FenceDriver:
    """A driver for one inventory device (no I/O: drivers connect when used)."""
    return load_driver_class(entry.driver)(entry)
