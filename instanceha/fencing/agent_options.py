"""Inventory keys of a ``fence_agent`` device: the agent and its stdin options.

Checked at load time, each error naming the file, host and key:

* ``agent`` is a ClusterLabs fence agent's name (``fence_[a-z0-9_]+``), found
  in ``/usr/sbin`` (or ``$PATH``) when the driver runs it; a path is refused so
  that the inventory cannot name an arbitrary program;
* ``options`` is a mapping of the agent's own stdin option names
  (``lanplus``, ``cipher``, ``snmp_version``, ``ssl_insecure``, ...) to
  strings, numbers or booleans. A value holding a newline is refused (it
  would add a stdin line); the options the driver sets itself (``action``,
  ``ip``, ``ipport``, ``username``, ``password``, ``plug`` and the helper
  paths the driver points at its shims) are refused with the key to use
  instead. Values of secret options (``community``, ``*passw*``, ...) are
  wrapped in ``Secret``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from instanceha.fencing.model import Secret

AGENT_RE = re.compile(r"^fence_[a-z0-9_]+$")
OPTION_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
SECRET_RE = re.compile(r"passw|community|secret|token")

#: option -> the inventory key that sets it (the driver writes these lines)
RESERVED = {
    "action": None, "ip": "address", "ipaddr": "address", "ipport": "port",
    "username": "username", "login": "username", "password": "password or password_file",
    "passwd": "password or password_file", "plug": "plug", "port": "plug",
    "ipmitool_path": None, "snmpget_path": None, "snmpset_path": None,
    "snmpwalk_path": None,
}


def is_secret(name: object) -> bool:
    return bool(SECRET_RE.search(str(name).replace("-", "_")))


def agent_name(check, raw: Mapping) -> str:
    name = check.text(raw, "agent", required=True)
    if not AGENT_RE.match(name):
        raise check.fail("agent", f"{name!r} is not a fence agent's name (fence_...); name "
                         "the agent, not a path: it is looked up in /usr/sbin and $PATH")
    return name


def _value(check, key: str, value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return str(value)
    if not isinstance(value, str) or not value:
        raise check.fail(key, f"must be a non-empty string, a number or a boolean, not "
                         f"{type(value).__name__}")
    if "\n" in value or "\r" in value or "\0" in value:
        raise check.fail(key, "must be one line (a newline would add a line to the "
                         "agent's stdin)")
    return value


def options(check, raw: Mapping, agent: str) -> tuple:
    given = raw.get("options")
    if given is None:
        return ()
    if not isinstance(given, Mapping):
        raise check.fail("options", f"must be a mapping of {agent}'s option names to "
                         f"values, not {type(given).__name__}")
    out = []
    for name, value in given.items():
        key = f"options.{name}"
        if not isinstance(name, str) or not OPTION_RE.match(name):
            raise check.fail(key, "option names are lower-case words (as in the agent's "
                             "man page, without the leading --)")
        norm = name.replace("-", "_")
        if norm in RESERVED:
            use = RESERVED[norm]
            raise check.fail(key, f"set by the driver itself; use the device's {use!r} key"
                             if use else "set by the driver itself; remove it")
        text = _value(check, key, value)
        out.append((norm, Secret(text) if is_secret(norm) else text))
    return tuple(out)
