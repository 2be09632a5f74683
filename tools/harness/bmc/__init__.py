"""BMC emulators on loopback for the fencing tests and benchmark.

* ``IpmiSimBMC``: OpenIPMI ``ipmi_sim`` (IPMI 2.0 lanplus), one process per BMC.
* ``PyghmiBMC``: a BMC built on pyghmi's server-side ``Bmc`` class.
* ``SushyEmulator``: Redfish (sushy-tools fake driver), TLS + basic auth.
* ``GarbageUDP`` / ``QuirkyRedfish``: BMCs that answer nonsense, or 409.

Every class picks free loopback ports, keeps its state in the directory it is
given, and has ``start()``/``stop()`` plus ``entry()``, the fencing-inventory
entry (a dict) that reaches it.
"""

from harness.bmc.ipmisim import IpmiSimBMC  # noqa: F401
from harness.bmc.pyghmibmc import PyghmiBMC  # noqa: F401
from harness.bmc.quirky import GarbageUDP, QuirkyRedfish  # noqa: F401
from harness.bmc.sushy import SushyEmulator  # noqa: F401
