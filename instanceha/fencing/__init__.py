"""Fencing: prove a host is powered off before anything of it is recovered.

Drivers are stevedore entry points in ``instanceha.fencing.drivers`` (``ipmi``,
``redfish``, ``fake``), loaded by ``load_driver_class``. The ``Fencer`` is the
one facade the controller uses: it builds a driver per inventory entry and
runs the one confirm loop (``confirm.confirm``) for every power action.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from collections.abc import Iterable

from stevedore import driver as sd_driver
from stevedore import exception as sd_exc

from instanceha.fencing import exceptions as exc
from instanceha.fencing.base import FenceDriver, PowerState
from instanceha.fencing.confirm import FenceEvidence, FencePolicy, confirm
from instanceha.fencing.inventory import Inventory

NAMESPACE = "instanceha.fencing.drivers"

__all__ = ["CheckResult", "FenceEvidence", "FencePolicy", "Fencer", "PowerState",
           "load_driver_class"]


def load_driver_class(name: str) -> type[FenceDriver]:
    try:
        return sd_driver.DriverManager(NAMESPACE, name, invoke_on_load=False).driver
    except sd_exc.NoMatches:
        from instanceha.fencing.inventory import known_drivers

        raise exc.UnknownDriver(driver=name, known=", ".join(sorted(known_drivers())))


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """What ``instanceha fencing check`` reports for one host (nothing is powered)."""

    host: str
    driver: str
    address: str
    ok: bool
    power: str | None
    latency: float
    error: str | None = None
    action: str | None = None


class Fencer:
    def __init__(self, inventory: Inventory, policy: FencePolicy | None = None,
                 clock=time.monotonic, wall=time.time, sleep=time.sleep) -> None:
        self.inventory = inventory
        self.policy = policy or FencePolicy()
        self.clock, self.wall, self.sleep = clock, wall, sleep
        self._drivers: dict[str, FenceDriver] = {}

    def driver(self, host: str) -> FenceDriver:
        d = self._drivers.get(host)
        if d is None:
            entry = self.inventory.get(host)  # HostNotInInventory for an unknown host
            d = self._drivers[host] = load_driver_class(entry.driver)(entry)
        return d

    def driver_name(self, host: str) -> str:
        return self.inventory.get(host).driver

    def _confirm(self, host: str, state: PowerState) -> FenceEvidence:
        d = self.driver(host)
        return confirm(d, state, self.policy, deadline=d.entry.deadline, clock=self.clock,
                       wall=self.wall, sleep=self.sleep)

    def power_off(self, host: str) -> FenceEvidence:
        """Hard power-off, proven by a read-back of OFF; raises a typed error otherwise."""
        return self._confirm(host, PowerState.OFF)

    def power_on(self, host: str) -> FenceEvidence:
        return self._confirm(host, PowerState.ON)

    def read_power(self, host: str) -> PowerState:
        return self.driver(host).get_power_state()

    def power_off_many(self, hosts: Iterable[str]) -> dict[str, FenceEvidence | Exception]:
        """Fence many hosts at once; one slow BMC never serialises the others."""
        hosts = list(hosts)
        if not hosts:
            return {}
        workers = min(self.policy.max_concurrent, len(hosts))
        with concurrent.futures.ThreadPoolExecutor(workers, "fence") as pool:
            futures = {h: pool.submit(self.power_off, h) for h in hosts}
            out: dict[str, FenceEvidence | Exception] = {}
            for h, f in futures.items():
                try:
                    out[h] = f.result()
                except exc.FencingError as e:
                    out[h] = e
            return out

    def check(self, hosts: Iterable[str] | None = None) -> list[CheckResult]:
        """Read every BMC's power state: reachability, auth, latency. Powers nothing."""
        hosts = list(hosts) if hosts else self.inventory.hosts()

        def one(host: str) -> CheckResult:
            t0 = self.clock()
            try:
                d = self.driver(host)
                state = d.get_power_state()
                return CheckResult(host, d.name, d.address, True, state.value,
                                   self.clock() - t0)
            except exc.FencingError as e:
                entry = self.inventory.entries.get(host)
                return CheckResult(host, entry.driver if entry else "-",
                                   entry.address if entry else "-", False, None,
                                   self.clock() - t0, str(e), e.action.value)

        workers = max(1, min(self.policy.max_concurrent, len(hosts)))
        with concurrent.futures.ThreadPoolExecutor(workers, "fence-check") as pool:
            return list(pool.map(one, hosts))

    def close(self) -> None:
        for d in self._drivers.values():
            d.close()
        self._drivers.clear()
