"""Fencing: prove that a host is powered off before anything is evacuated.

Drivers are stevedore entry points in the ``instanceha.fencing.drivers``
namespace (``ipmi``, ``redfish``, ``fence_agent``, ``fake``); each supplies
two primitives (``base.FenceDriver``). ``confirm.confirm`` is the one
request-then-read-back loop, ``levels.run`` tries a host's fencing levels
through it; ``Fencer`` is the facade the controller uses::

    fencer = Fencer(inventory.load(path), FencePolicy(deadline=60))
    evidence = fencer.power_off("compute1")   # or a typed FencingError

Layers, top to bottom (an import-linter contract in ``.importlinter``): the
facade ``fencer``; ``levels``; the loop ``confirm`` beside the loader
``inventory``; the driver ``registry``; the drivers; their helpers
(``agent_protocol``, ``agent_options``, ``ipmi_session``); the driver contract
``base``; the data ``model``; ``exceptions``. No module imports one above it.
"""

from __future__ import annotations

from instanceha.fencing import exceptions
from instanceha.fencing.base import FenceDriver, PowerState
from instanceha.fencing.confirm import FenceEvidence, FencePolicy
from instanceha.fencing.fencer import CheckResult, Fencer
from instanceha.fencing.inventory import Inventory
from instanceha.fencing.model import BMCEntry, Level, Secret
from instanceha.fencing.registry import NAMESPACE, build_driver, driver_names, load_driver_class

__all__ = [
    "NAMESPACE", "BMCEntry", "CheckResult", "FenceDriver", "FenceEvidence", "FencePolicy",
    "Fencer", "Inventory", "Level", "PowerState", "Secret", "build_driver", "driver_names",
    "exceptions", "load_driver_class",
]
