"""Fencing: prove that a host is powered off before anything is evacuated.

Drivers are stevedore entry points in the ``instanceha.fencing.drivers``
namespace (``ipmi``, ``redfish``, ``fence_agent``, ``fake``); each supplies
two primitives (``base.FenceDriver``). ``confirm.confirm`` is the one
request-then-read-back loop, ``levels.run`` tries a host's fencing levels
through it; ``Fencer`` is the facade the controller uses::

    fencer = Fencer(inventory.load(path), FencePolicy(deadline=60))
    evidence = fencer.power_off("compute1")   # or a typed FencingError
"""

from __future__ import annotations

from stevedore import ExtensionManager, driver
from stevedore import exception as sd_exc

from instanceha.fencing import exceptions
from instanceha.fencing.base import FenceDriver, PowerState
from instanceha.fencing.confirm import FenceEvidence, FencePolicy
from instanceha.fencing.fencer import CheckResult, Fencer
from instanceha.fencing.inventory import BMCEntry, Inventory, Secret

NAMESPACE = "instanceha.fencing.drivers"

__all__ = [
    "BMCEntry", "CheckResult", "FenceDriver", "FenceEvidence", "FencePolicy", "Fencer",
    "Inventory", "PowerState", "Secret", "build_driver", "driver_names",
    "exceptions", "load_driver_class",
]


def driver_names() -> list[str]:
    return sorted(ExtensionManager(NAMESPACE).names())


def load_driver_class(name: str) -> type[FenceDriver]:
    """The driver class registered under ``name``, or UnknownDriver."""
    try:
        return driver.DriverManager(NAMESPACE, name, invoke_on_load=False).driver
    except sd_exc.NoMatches:
        raise exceptions.UnknownDriver(driver=name, known=", ".join(driver_names()))


def build_driver(entry: BMCEntry) -> FenceDriver:
    return load_driver_class(entry.driver)(entry)
