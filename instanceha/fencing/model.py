"""The facts of fencing, as data: a host's devices, their secrets, its levels.

No I/O and no import of the rest of the package: the loader (``inventory``),
the driver contract (``base``) and the drivers all build on these types.
"""

from __future__ import annotations

import dataclasses

from instanceha.secret import Secret  # noqa: F401  (one secret type in the project)


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
    # fence_agent: the agent, its plug (outlet, VM name, ...) and extra stdin
    # options (name, value) with secret-bearing values wrapped in Secret
    agent: str | None = None
    plug: str | None = None
    options: tuple = dataclasses.field(default=(), repr=False)
    # where the device sits in the host's fencing levels (1-based)
    level: int = 1
    device: int = 1
    key_prefix: str = ""  # "levels[N].devices[M]." for a device of a levelled host

    def describe(self) -> str:
        """The device as an operator knows it (no secret): for the journal and errors."""
        what = self.agent or self.driver
        where = f"{self.address}:{self.port}" if self.port else self.address
        return f"{what} at {where}" + (f" plug {self.plug}" if self.plug else "")


#: the devices of one fencing level: all must read back the requested state
Level = tuple[BMCEntry, ...]
