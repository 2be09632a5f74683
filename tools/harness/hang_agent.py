"""instanceha-agent whose main loop hangs while a flag file exists.

The hang happens inside the health probe, as a real hung /proc read or a
stuck service check would: kazoo's own thread keeps the session alive, so
only the data heartbeat can reveal it. Used by the functional tests and benchmarks only.
"""

import os
import sys
import time

from instanceha.agent import health
from instanceha.cmd import agent


class HangingProbe(health.ProcessProbe):
    hang_file = ""

    def __call__(self):
        while os.path.exists(self.hang_file):
            time.sleep(0.05)
        return super().__call__()


if __name__ == "__main__":
    HangingProbe.hang_file = os.environ["INSTANCEHA_TEST_HANG_FILE"]
    health.ProcessProbe = HangingProbe
    sys.exit(agent.main())
