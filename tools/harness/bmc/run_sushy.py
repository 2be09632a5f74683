"""sushy-emulator launcher used by harness.bmc.sushy (run as a script).

``INSTANCEHA_SUSHY_POWER_DELAY=N`` makes the fake driver apply a power change
exactly N seconds after the request instead of upstream's random 1-11 s (only
the fakedriver module's view of ``random`` is replaced)."""

import os
import sys
import types

from sushy_tools.emulator.resources.systems import fakedriver

_delay = os.environ.get("INSTANCEHA_SUSHY_POWER_DELAY")
if _delay is not None:
    fakedriver.random = types.SimpleNamespace(randint=lambda a, b, _d=int(_delay): _d)

from sushy_tools.emulator.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
