"""A BMC built on pyghmi's server-side ``Bmc`` class (IPMI 2.0 lanplus, cipher
suite 3). One process = one BMC = one UDP port. Run as a script::

    python pyghmi_bmc_main.py --port P --state-file F [--power-delay S]
                              [--user U] (password from env BMC_PASSWORD)

The power bit lives in the state file ("on"/"off"), read at every request, so
a test can change it behind the BMC's back. ``--power-delay`` applies power
changes that many seconds after the request (a slow BMC).
"""

import argparse
import os
import sys
import threading

import pyghmi.ipmi.bmc as bmc
import pyghmi.ipmi.private.serversession as serversession

# pyghmi's server implements only cipher suite 3 (RAKP-HMAC-SHA1) but accepts
# any RMCP+ open-session proposal, and pyghmi's client then crashes on its
# SHA-256 proposal ("struct.error: pack expected 32 items"). Refuse non-SHA1
# proposals with status 0x11 so clients fall back to suite 3.
_orig_open_rsp = serversession.ServerSession.create_open_session_response


def _open_rsp(self, request):
    if request[12] & 0x3F not in (0, 1):
        return bytearray([request[0], 0x11, 0, 0]) + request[4:8]
    return _orig_open_rsp(self, request)


serversession.ServerSession.create_open_session_response = _open_rsp


class FileBmc(bmc.Bmc):
    def __init__(self, args, password):
        super().__init__({args.user: password}, port=args.port, address="127.0.0.1")
        self.state_file = args.state_file
        self.delay = args.power_delay

    def get_power_state(self):
        with open(self.state_file) as f:
            return f.read().strip()

    def _set(self, state):
        def write():
            with open(self.state_file, "w") as f:
                f.write(state + "\n")

        if self.delay > 0:
            threading.Timer(self.delay, write).start()
        else:
            write()

    def power_off(self):
        self._set("off")

    def power_shutdown(self):
        self._set("off")

    def power_on(self):
        self._set("on")

    def power_cycle(self):
        if self.get_power_state() == "off":
            return 0xD5
        self._set("on")

    def power_reset(self):
        if self.get_power_state() == "off":
            return 0xD5

    def get_boot_device(self):
        return "default"

    def set_boot_device(self, bootdevice):
        return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", default="admin")
    p.add_argument("--state-file", required=True)
    p.add_argument("--power-delay", type=float, default=0.0)
    args = p.parse_args()
    FileBmc(args, os.environ.get("BMC_PASSWORD", "password")).listen()


if __name__ == "__main__":
    sys.exit(main())
