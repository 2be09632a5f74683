"""Configuration of instanceha (oslo.config).

One module per option group, each with ``register_opts(conf)`` and
``list_opts()``. ``register_all()`` registers every group on a ConfigOpts;
``instanceha.conf.opts.list_opts`` is what oslo-config-generator reads.

Only the edges (``instanceha.cmd`` and the services' set-up) read a
ConfigOpts. They turn it into frozen policy objects (see
``instanceha.conf.policy``) that the rest of the code receives.
"""

from oslo_config import cfg

from instanceha.conf import opts as _opts

CONF = cfg.CONF


def register_all(conf=CONF, names=None):
    """Register every option group (``names``: only these modules' groups)."""
    for module in _opts.modules(names):
        module.register_opts(conf)
    return conf
