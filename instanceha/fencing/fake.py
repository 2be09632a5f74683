"""The ``fake`` driver: an in-memory BMC per address, for unit tests and devstack.

Nothing is powered: a ``FakeBMC`` keeps a power bit. A ``FakeRegistry`` maps
inventory addresses to fake BMCs (created ON on first use) and can make one
misbehave, so the behaviour suite and the controller's tests see the same
typed failures as with real BMCs::

    bmc = fake.REGISTRY.bmc("fake-bmc-compute1")
    bmc.power_delay = 5.0      # slow: changes apply 5 s after the request
    bmc.down = True            # unreachable
    bmc.password = "other"     # the inventory's password is now wrong
    bmc.garbage = True         # answers nonsense

Time comes from the registry's clock (injectable), so unit tests never sleep.
"""

from __future__ import annotations

import threading

from instanceha.clock import SYSTEM, Clock
from instanceha.fencing import exceptions as exc
from instanceha.fencing.base import FenceDriver, PowerState
from instanceha.fencing.model import BMCEntry


class FakeBMC:
    def __init__(self, address: str, clock: Clock) -> None:
        self.address = address
        self._clock = clock
        self._lock = threading.Lock()
        self._state = PowerState.ON
        self._pending: tuple[float, PowerState] | None = None
        self.password: str | None = None  # None: any password is accepted
        self.power_delay = 0.0
        self.down = False
        self.garbage = False
        self.requests: list[PowerState] = []
        self.conflicts = 0

    @property
    def state(self) -> PowerState:
        with self._lock:
            if self._pending and self._clock.monotonic() >= self._pending[0]:
                self._state, self._pending = self._pending[1], None
            return self._state

    def set_state(self, state: PowerState) -> None:
        """Change the power behind the BMC's back (a test's hand on the switch)."""
        with self._lock:
            self._state, self._pending = state, None

    def request(self, state: PowerState) -> bool:
        """Record a request; False when it asks for the state already there."""
        same = self.state is state and self._pending is None
        with self._lock:
            self.requests.append(state)
            if same:
                self.conflicts += 1
                return False
            if self.power_delay > 0:
                self._pending = (self._clock.monotonic() + self.power_delay, state)
            else:
                self._state, self._pending = state, None
            return True


class FakeRegistry:
    def __init__(self, clock: Clock = SYSTEM) -> None:
        self.clock = clock
        self._bmcs: dict[str, FakeBMC] = {}
        self._lock = threading.Lock()

    def bmc(self, address: str) -> FakeBMC:
        with self._lock:
            if address not in self._bmcs:
                self._bmcs[address] = FakeBMC(address, self.clock)
            return self._bmcs[address]

    def reset(self) -> None:
        with self._lock:
            self._bmcs.clear()


#: the process-wide registry used when a driver is built without one
REGISTRY = FakeRegistry()


class FakeDriver(FenceDriver):
    name = "fake"

    def __init__(self, entry: BMCEntry, registry: FakeRegistry | None = None) -> None:
        super().__init__(entry)
        self.registry = registry or REGISTRY

    def _bmc(self) -> FakeBMC:
        bmc = self.registry.bmc(self.entry.address)
        if bmc.down:
            raise exc.BMCUnreachable(**self.facts(reason="no answer (fake BMC is down)"))
        if bmc.garbage:
            raise exc.GarbageReply(**self.facts(reason="fake BMC answered nonsense"))
        given = self.entry.password.reveal() if self.entry.password else None
        if bmc.password is not None and given != bmc.password:
            raise exc.AuthFailed(**self.facts(username=self.entry.username,
                                              reason="fake BMC rejected the password"))
        return bmc

    def request_power(self, state: PowerState, timeout: float | None = None) -> None:
        # a request for the state already there is counted as a conflict and
        # accepted as a no-op, as the Redfish driver does with a 409
        self._bmc().request(state)

    def get_power_state(self, timeout: float | None = None) -> PowerState:
        return self._bmc().state
