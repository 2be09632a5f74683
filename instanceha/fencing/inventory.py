"""The fencing inventory: host name -> how to reach its BMC.

A YAML file (path in ``[fencing] inventory_file``)::

    hosts:
      compute1:
        driver: ipmi                 # ipmi | redfish | fake (entry point name)
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

Everything is checked at load time, and every error names the file, the host
and the key. An inventory (or password file) that holds passwords and is
world-readable is REFUSED, not warned about: fix it with ``chmod o-rwx``.
Passwords are wrapped in ``Secret``: ``repr()``/``str()`` never show them.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterable, Mapping

import yaml

from instanceha.fencing import exceptions as exc

DEFAULT_PORTS = {"ipmi": 623, "redfish": 443}
NEEDS_CREDENTIALS = {"ipmi", "redfish"}

_KEYS = {
    "driver", "address", "port", "username", "password", "password_file", "verify",
    "system_id", "scheme", "timeout", "deadline",
}


class Secret:
    """A string that does not show itself in repr(), str(), logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('******')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self):  # never pickled into a queue or a cache by accident
        raise TypeError("a Secret cannot be pickled")


@dataclasses.dataclass(frozen=True)
class BMCEntry:
    host: str
    driver: str
    address: str
    port: int | None = None
    username: str | None = None
    password: Secret | None = dataclasses.field(default=None, repr=False)
    verify: bool | str = True
    system_id: str | None = None
    scheme: str = "https"
    timeout: float | None = None
    deadline: float | None = None
    source: str = "<memory>"


class Inventory:
    def __init__(self, entries: Mapping[str, BMCEntry], source: str = "<memory>") -> None:
        self.entries = dict(entries)
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


def _world_readable(path: str) -> int | None:
    mode = os.stat(path).st_mode
    return stat.S_IMODE(mode) if mode & stat.S_IROTH else None


class _Checker:
    def __init__(self, source: str, host: str, known: set[str]) -> None:
        self.source, self.host, self.known = source, host, known

    def fail(self, key: str, reason: str) -> exc.InventoryError:
        return exc.InventoryError(file=self.source, host=self.host, key=key, reason=reason)

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
        )


def known_drivers() -> set[str]:
    from stevedore import ExtensionManager

    return set(ExtensionManager("instanceha.fencing.drivers").names())


def from_data(data, source: str = "<memory>", drivers: Iterable[str] | None = None) -> Inventory:
    """Validate parsed YAML (``{"hosts": {host: {...}}}``) into an Inventory."""
    known = set(drivers) if drivers is not None else known_drivers()
    top = _Checker(source, "-", known)
    if not isinstance(data, Mapping) or not isinstance(data.get("hosts"), Mapping):
        raise top.fail("hosts", "the file must be a mapping with a 'hosts:' mapping of "
                       "host name -> BMC entry")
    extra = sorted(set(map(str, data)) - {"hosts"})
    if extra:
        raise top.fail(extra[0], "unknown top-level key; only 'hosts' is allowed")
    entries = {}
    for host, raw in data["hosts"].items():
        if not isinstance(host, str) or not host:
            raise _Checker(source, repr(host), known).fail("-", "host names must be strings")
        entries[host] = _Checker(source, host, known).entry(raw)
    return Inventory(entries, source)


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
        holders = sorted(h for h, e in inventory.entries.items() if
                         isinstance(data["hosts"][h], Mapping) and "password" in data["hosts"][h])
        if holders:
            raise exc.InventoryError(
                file=path, host=holders[0], key="password",
                reason=f"the file holds passwords and is world-readable (mode {mode:04o}): "
                       f"refusing it; run chmod o-rwx {path}, or move the passwords to "
                       "password_file entries")
    return inventory
