"""The facade the controller uses: ``Fencer(inventory, policy)``."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Iterable

from instanceha.clock import SYSTEM, Clock
from instanceha.fencing import exceptions as exc
from instanceha.fencing import levels as fence_levels
from instanceha.fencing import registry
from instanceha.fencing.base import FenceDriver, PowerState
from instanceha.fencing.confirm import FenceEvidence, FencePolicy
from instanceha.fencing.inventory import Inventory
from instanceha.fencing.model import BMCEntry

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One BMC's health as seen by ``Fencer.check`` (nothing was powered)."""

    host: str
    driver: str | None
    address: str | None
    reachable: bool
    authenticated: bool | None  # None: not known (the BMC did not get that far)
    power_state: str | None
    latency: float  # seconds for the read
    error: str | None = None
    error_type: str | None = None
    action: str | None = None
    level: int = 1  # the fencing level of the device checked

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "ok": self.ok}


def _stamp(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class Fencer:
    """Power actions on the hosts of an inventory, each proved by a read-back.

    Thread-safe: one driver per device of a host's fencing levels, a host's
    devices used by one action at a time.
    """

    def __init__(self, inventory: Inventory, policy: FencePolicy | None = None,
                 driver_factory: Callable[[BMCEntry], FenceDriver] | None = None,
                 clock: Clock = SYSTEM) -> None:
        self.inventory = inventory
        self.policy = policy or FencePolicy()
        self._factory = driver_factory or registry.build_driver
        self._clock = clock
        self._drivers: dict[str, list[list[FenceDriver]]] = {}  # host -> levels
        self._host_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._watched: tuple[str, tuple | None, Callable[[str], Inventory]] | None = None

    def watch(self, path: str, load: Callable[[str], Inventory]) -> Fencer:
        """Re-read the inventory file when it changes (checked before each action):
        a fixed BMC password or address is used by the next retry, no restart.
        A file that no longer loads is refused, logged, and the last good one kept."""
        self._watched = (path, _stamp(path), load)
        return self

    def inventory_stamp(self) -> tuple | None:
        """The watched inventory file as it is now (modification time, size,
        inode; None when not watched or unreadable): it changes when the file
        does, so a caller can retry a failed fence at once instead of waiting
        for its back-off. Reading it reloads nothing (the next action does)."""
        return _stamp(self._watched[0]) if self._watched is not None else None

    def _reload_if_changed(self) -> None:
        if self._watched is None:
            return
        path, seen, load = self._watched
        stamp = _stamp(path)
        if stamp == seen:
            return
        with self._lock:
            if self._watched[1] == stamp:
                return  # another thread reloaded it
            self._watched = (path, stamp, load)
            try:
                fresh = load(path)
            except exc.FencingError as e:
                LOG.error("fencing inventory %s changed but is refused: %s; keeping the "
                          "previous one", path, e)
                return
            hosts = set(fresh.hosts())
            stale = [(self._drivers.pop(h), self._host_locks[h]) for h, lv in
                     list(self._drivers.items())
                     if h not in hosts or fresh.levels_of(h) != _entries(lv)]
            self.inventory = fresh
        LOG.warning("fencing inventory %s re-read: %d host(s), %d host(s) with BMC "
                    "connections renewed", path, len(hosts), len(stale))
        for levels, lock in stale:  # the host's lock is kept: an action in flight ends first
            with lock:
                for d in _flat(levels):
                    d.close()

    def driver(self, host: str) -> FenceDriver:
        """The driver of host's first device (built once); HostNotInInventory if none."""
        return self._driver(host)[0]

    def drivers(self, host: str) -> list[list[FenceDriver]]:
        """The drivers of host's devices, level by level (built once, renewed when
        a re-read inventory changes the host's devices); HostNotInInventory if none."""
        return self._levels(host)[0]

    def driver_name(self, host: str) -> str:
        """The inventory's driver name for host's first device; HostNotInInventory if none."""
        return self.inventory.get(host).driver

    def _levels(self, host: str) -> tuple[list[list[FenceDriver]], threading.Lock]:
        self._reload_if_changed()
        levels = self.inventory.levels_of(host)  # HostNotInInventory
        with self._lock:
            if host not in self._drivers:
                self._drivers[host] = [[self._factory(e) for e in lv] for lv in levels]
                self._host_locks[host] = threading.Lock()
            return self._drivers[host], self._host_locks[host]

    def _driver(self, host: str) -> tuple[FenceDriver, threading.Lock]:
        levels, lock = self._levels(host)
        return levels[0][0], lock

    @staticmethod
    def _end_session(driver: FenceDriver) -> None:
        """Every action and read logs in afresh: a session kept between fences
        is one the BMC may have dropped meanwhile (see fencing/ipmi_session)."""
        try:
            driver.end_session()
        except Exception:  # a driver bug must not turn a proved fence into a failure
            LOG.exception("ending the BMC session of %s failed", driver.host)

    def _act(self, host: str, state: PowerState) -> FenceEvidence:
        levels, lock = self._levels(host)
        with lock:
            try:
                ev = fence_levels.run(host, levels, state, self.policy, self._clock)
            except exc.FencingError as e:
                LOG.warning("power %s of %s NOT confirmed: %s [%s: %s]", state, host, e,
                            type(e).__name__, e.action.name)
                raise
            finally:
                for driver in _flat(levels):  # only the devices used hold a session
                    self._end_session(driver)
        LOG.info("power %s of %s confirmed by read-back %s after %d request(s), %.2f s "
                 "(level %d of %d: %s)", state, host, ev.read_back, ev.attempts, ev.duration,
                 ev.level, ev.levels, ", ".join(ev.devices))
        return ev

    def power_off(self, host: str) -> FenceEvidence:
        """Hard power off, proved by a read-back of OFF; raises a FencingError otherwise."""
        return self._act(host, PowerState.OFF)

    def power_on(self, host: str) -> FenceEvidence:
        return self._act(host, PowerState.ON)

    def read_power(self, host: str) -> PowerState:
        driver, lock = self._driver(host)
        with lock:
            try:
                return driver.get_power_state()
            finally:
                self._end_session(driver)

    def _pool(self, n: int) -> concurrent.futures.ThreadPoolExecutor:
        return concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, min(self.policy.max_concurrent, n)),
            thread_name_prefix="fence")

    def power_off_many(self, hosts: Iterable[str]) -> dict[str, object]:
        """Fence hosts concurrently: host -> FenceEvidence, or the exception raised."""
        hosts = list(dict.fromkeys(hosts))
        results: dict[str, object] = {}
        if not hosts:
            return results
        with self._pool(len(hosts)) as pool:
            futures = {pool.submit(self.power_off, h): h for h in hosts}
            for f in concurrent.futures.as_completed(futures):
                try:
                    results[futures[f]] = f.result()
                except Exception as e:  # handed back, typed, per host
                    results[futures[f]] = e
        return {h: results[h] for h in hosts}

    def check_one(self, host: str) -> list[CheckResult]:
        """Every device of every level of host (a host without levels: its BMC)."""
        try:
            levels, lock = self._levels(host)
        except exc.FencingError as e:
            return [CheckResult(host, None, None, False, None, None, 0.0, str(e),
                                type(e).__name__, e.action.name)]
        with lock:
            return [self._check_device(host, d, n) for n, level in enumerate(levels, 1)
                    for d in level]

    def _check_device(self, host: str, driver: FenceDriver, level: int) -> CheckResult:
        start = self._clock.monotonic()
        facts = driver.facts()
        name, address = facts["driver"], facts["address"]
        try:
            try:
                state = driver.monitor()
            finally:
                self._end_session(driver)
        except exc.FencingError as e:
            reachable = not isinstance(e, (exc.BMCUnreachable, exc.AgentTimeout))
            auth = False if isinstance(e, exc.AuthFailed) else None
            return CheckResult(host, name, address, reachable, auth, None,
                               self._clock.monotonic() - start, str(e), type(e).__name__,
                               e.action.name, level)
        return CheckResult(host, name, address, True, True, state.value,
                           self._clock.monotonic() - start, level=level)

    def check(self, hosts: Iterable[str] | None = None) -> list[CheckResult]:
        """Check each device of each host (all by default): the device answers and
        takes the credentials (``monitor``) and its power state reads ON or OFF.
        Never powers anything."""
        hosts = list(dict.fromkeys(hosts if hosts is not None else self.inventory.hosts()))
        if not hosts:
            return []
        with self._pool(len(hosts)) as pool:
            return [r for results in pool.map(self.check_one, hosts) for r in results]

    def close(self) -> None:
        with self._lock:
            hosts, self._drivers = list(self._drivers.values()), {}
        for levels in hosts:
            for d in _flat(levels):
                d.close()


def _flat(levels: list[list[FenceDriver]]) -> list[FenceDriver]:
    return [d for level in levels for d in level]


def _entries(levels: list[list[FenceDriver]]) -> tuple:
    return tuple(tuple(d.entry for d in level) for level in levels)
