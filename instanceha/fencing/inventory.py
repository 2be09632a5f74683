"""The fencing inventory: host name -> how to reach its BMC.

A YAML file (path in ``[fencing] inventory_file``)::

    hosts:
      compute1:
        driver: ipmi                 # ipmi | redfish | fence_agent | fake (entry point)
        address: 10.0.0.11           # BMC host name or IP address
        port: 623                    # optional; ipmi 623, redfish 443
        username: admin
        password_file: /etc/instanceha/bmc/compute1   # or: password: ...
        timeout: 10                  # optional: seconds per BMC call
        deadline: 60                 # optional: seconds to confirm, overrides [fencing]
      compute2:
        driver: redfish
        address: 10.0.0.12
        username: admin
        password_file: /etc/instanceha/bmc/compute2
        verify: /etc/instanceha/bmc-ca.pem   # true (system CAs), false, or a CA bundle
        system_id: /redfish/v1/Systems/1     # optional when the BMC has one system
      compute3:                      # fencing levels: BMC first, then both PDU outlets
        levels:
          - devices:
              - driver: fence_agent  # any installed ClusterLabs fence agent
                agent: fence_ipmilan
                address: 10.0.0.13
                username: admin
                password_file: /etc/instanceha/bmc/compute3
                options: {lanplus: 1}  # extra key=value lines for the agent's stdin
          - devices:                 # all must read back off for this level to count
              - {driver: fence_agent, agent: fence_apc_snmp, address: pdu-a, plug: "3",
                 options: {community: private}}
              - {driver: fence_agent, agent: fence_apc_snmp, address: pdu-b, plug: "3",
                 options: {community: private}}

A host is either one device (the keys above) or ``levels:``, an ordered list
of levels, each ``devices:``, a list of one or more devices (``levels`` module:
the next level is tried only when the previous one could not confirm).

Everything is checked at load time, and every error names the file, the host
and the key. An inventory (or password file) that holds passwords and is
world-readable is REFUSED, not warned about: fix it with ``chmod o-rwx``.
Passwords are wrapped in ``Secret``: ``repr()``/``str()`` never show them.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import typing
from collections.abc import Iterable, Mapping

import yaml

from instanceha.fencing import agent_options, registry
from instanceha.fencing import exceptions as exc
from instanceha.fencing.model import BMCEntry, Level, Secret

DEFAULT_PORTS = {"ipmi": 623, "redfish": 443}
NEEDS_CREDENTIALS = {"ipmi", "redfish"}

_COMMON_KEYS = {"driver", "address", "port", "username", "password", "password_file",
                "timeout", "deadline"}
_KEYS_OF = {"fence_agent": _COMMON_KEYS | {"agent", "plug", "options"}}
_DEFAULT_KEYS = _COMMON_KEYS | {"verify", "system_id", "scheme"}
_KEYS = _DEFAULT_KEYS | _KEYS_OF["fence_agent"]


class Inventory:
    """host -> its fencing levels (``levels``); ``entries`` keeps each host's
    first device (a host without levels has one level of one device)."""

    def __init__(self, entries: Mapping[str, BMCEntry], source: str = "<memory>",
                 levels: Mapping[str, Iterable[Level]] | None = None) -> None:
        levels = dict(levels or {})
        self.levels = {h: tuple(tuple(lv) for lv in levels.get(h, ((e,),)))
                       for h, e in entries.items()}
        self.entries = {h: lv[0][0] for h, lv in self.levels.items()}
        self.source = source

    def __contains__(self, host: str) -> bool:
        return host in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"Inventory({self.source!r}, hosts={sorted(self.entries)!r})"

    def hosts(self) -> list[str]:
        return sorted(self.entries)

    def get(self, host: str) -> BMCEntry:
        try:
            return self.entries[host]
        except KeyError:
            raise exc.HostNotInInventory(host=host, file=self.source)

    def levels_of(self, host: str) -> tuple[Level, ...]:
        """The host's fencing levels, in order; HostNotInInventory if none."""
        self.get(host)
        return self.levels[host]

    def devices(self, host: str) -> list[BMCEntry]:
        return [d for level in self.levels_of(host) for d in level]


def _world_readable(path: str) -> int | None:
    mode = os.stat(path).st_mode
    return stat.S_IMODE(mode) if mode & stat.S_IROTH else None


class _Checker:
    def __init__(self, source: str, host: str, known: set[str], prefix: str = "") -> None:
        self.source, self.host, self.known, self.prefix = source, host, known, prefix

    def fail(self, key: str, reason: str) -> exc.InventoryError:
        return exc.InventoryError(file=self.source, host=self.host, key=self.prefix + key,
                                  reason=reason)

    @typing.overload
    def text(self, raw: Mapping, key: str, required: typing.Literal[True]) -> str: ...

    @typing.overload
    def text(self, raw: Mapping, key: str, required: bool) -> str | None: ...

    def text(self, raw: Mapping, key: str, required: bool) -> str | None:
        value = raw.get(key)
        if value is None:
            if required:
                raise self.fail(key, "missing (required)")
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"must be a non-empty string, not {type(value).__name__}")
        return value.strip()

    def number(self, raw: Mapping, key: str, low: float, high: float, integer=False):
        value = raw.get(key)
        if value is None:
            return None
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            kind = "an integer" if integer else "a number of seconds"
            raise self.fail(key, f"must be {kind}, not {type(value).__name__} {value!r}")
        if not low <= value <= high:
            raise self.fail(key, f"must be between {low} and {high}, not {value}")
        return value

    def password(self, raw: Mapping, driver: str) -> Secret | None:
        inline, path = raw.get("password"), raw.get("password_file")
        if inline is not None and path is not None:
            raise self.fail("password", "give password or password_file, not both")
        if inline is not None:
            if not isinstance(inline, (str, int)) or isinstance(inline, bool):
                raise self.fail("password", f"must be a string, not {type(inline).__name__}")
            return Secret(str(inline))
        if path is not None:
            return self._password_file(path)
        if driver in NEEDS_CREDENTIALS:
            raise self.fail("password", f"missing: driver {driver} needs password or "
                            "password_file")
        return None

    def _password_file(self, path) -> Secret:
        if not isinstance(path, str) or not path:
            raise self.fail("password_file", "must be a file path")
        if not os.path.isabs(path):
            path = os.path.join(os.path.dirname(os.path.abspath(self.source)), path)
        try:
            mode = _world_readable(path)
            with open(path, encoding="utf-8") as f:
                value = f.read().rstrip("\r\n")
        except OSError as e:
            raise self.fail("password_file", f"cannot read {path}: {e.strerror}")
        if mode is not None:
            raise self.fail("password_file", f"{path} is world-readable (mode {mode:04o}): "
                            f"refusing to use it; run chmod o-rwx {path}")
        if not value:
            raise self.fail("password_file", f"{path} is empty")
        return Secret(value)

    def verify(self, raw: Mapping) -> bool | str:
        value = raw.get("verify", True)
        if isinstance(value, bool):
            return value
        if not isinstance(value, str) or not value:
            raise self.fail("verify", "must be true, false or the path of a CA bundle")
        if not os.path.exists(value):
            raise self.fail("verify", f"CA bundle {value} does not exist")
        return value

    def entry(self, raw) -> BMCEntry:
        if not isinstance(raw, Mapping):
            raise self.fail("-", f"must be a mapping of keys to values, not {type(raw).__name__}")
        unknown = sorted(set(map(str, raw)) - _KEYS)
        if unknown:
            raise self.fail(unknown[0], f"unknown key; known keys: {', '.join(sorted(_KEYS))}")
        driver = self.text(raw, "driver", required=True)
        if self.known and driver not in self.known:
            raise self.fail("driver", f"unknown driver {driver!r}; known: "
                            f"{', '.join(sorted(self.known))}")
        allowed = _KEYS_OF.get(driver, _DEFAULT_KEYS)
        misplaced = sorted(set(map(str, raw)) - allowed)
        if misplaced:
            raise self.fail(misplaced[0], f"not a key of driver {driver}; its keys: "
                            f"{', '.join(sorted(allowed))}")
        agent = plug = None
        options: tuple = ()
        if driver == "fence_agent":
            agent = agent_options.agent_name(self, raw)
            plug = self.text(raw, "plug", required=False) if not isinstance(
                raw.get("plug"), int) else str(raw["plug"])
            options = agent_options.options(self, raw, agent)
        scheme = self.text(raw, "scheme", required=False) or "https"
        if scheme not in ("https", "http"):
            raise self.fail("scheme", f"must be https or http, not {scheme!r}")
        return BMCEntry(
            host=self.host,
            driver=driver,
            address=self.text(raw, "address", required=True),
            port=self.number(raw, "port", 1, 65535, integer=True),
            username=self.text(raw, "username", required=driver in NEEDS_CREDENTIALS),
            password=self.password(raw, driver),
            verify=self.verify(raw),
            system_id=self.text(raw, "system_id", required=False),
            scheme=scheme,
            timeout=self.number(raw, "timeout", 0.1, 300),
            deadline=self.number(raw, "deadline", 1, 3600),
            source=self.source,
            agent=agent,
            plug=plug,
            options=options,
        )

    def host_levels(self, raw) -> list[Level]:
        """``levels:`` of a host, or its single device as one level."""
        if not isinstance(raw, Mapping) or "levels" not in raw:
            return [(self.entry(raw),)]
        extra = sorted(set(map(str, raw)) - {"levels"})
        if extra:
            raise self.fail(extra[0], "a host with 'levels' has no other key: put the "
                            "device keys under levels[N].devices")
        levels = raw["levels"]
        if not isinstance(levels, list) or not levels:
            raise self.fail("levels", "must be a non-empty list of levels, each "
                            "{devices: [device, ...]}")
        out = []
        for n, level in enumerate(levels, 1):
            devices = level.get("devices") if isinstance(level, Mapping) else None
            if not isinstance(devices, list) or not devices or set(map(str, level)) - {
                    "devices", "name"}:
                raise self.fail(f"levels[{n}]", "must be a mapping with 'devices:', a "
                                "non-empty list of devices (and optionally 'name')")
            built = []
            for i, raw_dev in enumerate(devices, 1):
                sub = _Checker(self.source, self.host, self.known, f"levels[{n}].devices[{i}].")
                built.append(dataclasses.replace(sub.entry(raw_dev), level=n, device=i,
                                                 key_prefix=sub.prefix))
            out.append(tuple(built))
        return out


def from_data(data, source: str = "<memory>", drivers: Iterable[str] | None = None) -> Inventory:
    """Validate parsed YAML (``{"hosts": {host: {...}}}``) into an Inventory."""
    known = set(drivers if drivers is not None else registry.driver_names())
    top = _Checker(source, "-", known)
    if not isinstance(data, Mapping) or not isinstance(data.get("hosts"), Mapping):
        raise top.fail("hosts", "the file must be a mapping with a 'hosts:' mapping of "
                       "host name -> BMC entry")
    extra = sorted(set(map(str, data)) - {"hosts"})
    if extra:
        raise top.fail(extra[0], "unknown top-level key; only 'hosts' is allowed")
    levels = {}
    for host, raw in data["hosts"].items():
        if not isinstance(host, str) or not host:
            raise _Checker(source, repr(host), known).fail("-", "host names must be strings")
        levels[host] = _Checker(source, host, known).host_levels(raw)
    return Inventory({h: lv[0][0] for h, lv in levels.items()}, source, levels)


def _holds_secrets(raw) -> bool:
    """An inline password (or secret agent option) anywhere in a host's entry."""
    if isinstance(raw, Mapping):
        if "password" in raw:
            return True
        options = raw.get("options")
        if isinstance(options, Mapping) and any(map(agent_options.is_secret, options)):
            return True
        return any(_holds_secrets(v) for v in raw.values() if isinstance(v, (list, Mapping)))
    if isinstance(raw, list):
        return any(_holds_secrets(v) for v in raw)
    return False


def load(path: str, drivers: Iterable[str] | None = None) -> Inventory:
    """Read and validate the inventory file, or raise InventoryError naming what is wrong."""
    top = _Checker(path, "-", set())
    try:
        mode = _world_readable(path)
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise top.fail("-", f"cannot read the file: {e.strerror}")
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise top.fail("-", f"not valid YAML{where}")
    inventory = from_data(data, path, drivers)
    if mode is not None:
        holders = sorted(h for h in inventory.entries if _holds_secrets(data["hosts"][h]))
        if holders:
            raise exc.InventoryError(
                file=path, host=holders[0], key="password",
                reason=f"the file holds passwords and is world-readable (mode {mode:04o}): "
                       f"refusing it; run chmod o-rwx {path}, or move the passwords to "
                       "password_file entries")
    return inventory
