"""Start-up check of every option's value.

oslo.config checks a value's type and bounds only when the value is read, so
a wrong value in an option read late (or never, in this process) would pass
unnoticed at start. ``validate_values`` reads every instanceha option once.
"""

from __future__ import annotations

import re

from oslo_config import cfg

from instanceha import exceptions


def validate_values(conf: cfg.ConfigOpts, names=None) -> None:
    """Read every instanceha option once: oslo.config checks a value's type and
    bounds only when it is read, so a wrong value in an option read late (or
    never, in this process) would otherwise pass unnoticed. Raises
    ConfigError naming the group, option and file; a secret's value is never
    quoted. ``names``: only the option modules registered (``register_all``)."""
    from instanceha.conf import opts as ih_opts

    for group, options in ih_opts.list_opts(names):
        name = getattr(group, "name", group) or "DEFAULT"
        for opt in options:
            try:
                conf[opt.dest] if name == "DEFAULT" else conf[name][opt.dest]
            except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
                continue  # registered on demand (keystoneauth's plugin options)
            except (cfg.Error, ValueError) as e:
                text = str(e)
                found = re.search(r"detail='([^']*)'", text)
                reason = "invalid value (not shown: a secret)" if opt.secret else \
                    text.split(" is not valid: ")[-1]
                raise exceptions.ConfigError(
                    group=name, option=opt.name, reason=reason,
                    file=found.group(1) if found else "(see the configuration files)")
