"""instanceha-agent whose main loop hangs while a flag file exists.

The hang happens inside the health probe, as a real hung /proc read or a
stuck service check would: kazoo's own thread keeps the session alive, so
only the data heartbeat can reveal it. Used by the functional tests only.
"""

import os
import sys
import time

from instanceha.agent import health
from instanceha.cmd import agent

HANG_FILE = os.environ["INSTANCEHA_TEST_HANG_FILE"]


class HangingProbe(health.ProcessProbe):
    def __call__(self):
        while os.path.exists(HANG_FILE):
            time.sleep(0.05)
        return super().__call__()


health.ProcessProbe = HangingProbe

if __name__ == "__main__":
    sys.exit(agent.main())
