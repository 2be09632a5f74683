"""The explicit list of instanceha's options for oslo-config-generator.

Published on the ``oslo.config.opts`` entry point as
``instanceha = instanceha.conf.opts:list_opts``. A new option group is a new
module in this package, named in ``_MODULES`` below.
"""

import importlib

# one module per option group, in the order the sample file shows them
_MODULES = (
    "default",
    "coordination",
    "agent",
    "detection",
    "nova",
    "nova_notifications",
    "controller",
    "recovery",
    "capacity",
    "fencing",
    "telemetry",
    "notifications",
    "guest",
)


def modules(names=None):
    """The option modules (``names``: only these, e.g. the groups a daemon reads:
    a module not imported costs nothing at start)."""
    return [importlib.import_module(f"instanceha.conf.{name}") for name in _MODULES
            if names is None or name in names]


def list_opts(names=None):
    """Return [(group, [opts])] for every group, as oslo-config-generator wants."""
    result: dict[str, list] = {}
    for module in modules(names):
        for group, opts in module.list_opts().items():
            result.setdefault(group, []).extend(opts)
    return [(group, opts) for group, opts in result.items()]
