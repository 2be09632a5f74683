"""instanceha-agent whose main loop raises once when a flag file appears.

The exception comes from inside the health probe, in the agent's main loop, as
a bug in a probe or a library would: the agent must end with an error status
(70) so that systemd restarts it, and the restarted process must resume the
session. The flag file is removed before the raise: the restarted agent (the
same command) runs normally. Used by the functional tests only.
"""

import os
import sys

from instanceha.agent import health
from instanceha.cmd import agent


class CrashingProbe(health.ProcessProbe):
    crash_file = ""

    def __call__(self):
        if os.path.exists(self.crash_file):
            os.unlink(self.crash_file)
            raise RuntimeError("injected by the test: a bug in the main loop")
        return super().__call__()


if __name__ == "__main__":
    CrashingProbe.crash_file = os.environ["INSTANCEHA_TEST_CRASH_FILE"]
    health.ProcessProbe = CrashingProbe
    sys.exit(agent.main())
