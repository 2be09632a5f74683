"""A simulated host's management address, and its death on the network.

Each compute of the mini-cloud has its own loopback address (127.X.Y.N, see
tools/minicloud: nova-compute's ``my_ip``, Nova's hypervisor ``host_ip``),
which the controllers' second source of liveness probes. A host that dies
(power loss, kernel panic, cut off) stops answering: ``silence(address)``
drops every packet sent to it (an iptables rule in OUTPUT, which loopback
traffic crosses), ``restore(address)`` removes the rule. Needs root and
Debian's ``iptables`` (tools/install.sh installs it).

    with silenced("127.82.8.1"):
        ...                     # the address does not answer (no RST either)
"""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import subprocess

COMMENT = "instanceha-test-silenced-host"


class HostNetError(RuntimeError):
    pass


def _rule(address: str) -> list[str]:
    ip = ipaddress.ip_address(address)
    if not ip.is_loopback:
        raise HostNetError(f"{address}: only loopback addresses are silenced by the tests")
    return ["OUTPUT", "-d", f"{ip}/32", "-j", "DROP", "-m", "comment", "--comment", COMMENT]


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    exe = shutil.which("iptables") or "/usr/sbin/iptables"
    try:
        r = subprocess.run([exe, "-w", "5", *args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise HostNetError("iptables is missing: apt-get install iptables (tools/install.sh "
                           "does), and run the tests as root") from None
    if check and r.returncode != 0:
        raise HostNetError(f"iptables {' '.join(args)} failed ({r.returncode}): "
                           f"{r.stderr.strip()} (the tests that kill a host need root)")
    return r


def is_silenced(address: str) -> bool:
    return _iptables("-C", *_rule(address), check=False).returncode == 0


def silence(address: str) -> None:
    """Every packet to ``address`` is dropped from now on (idempotent)."""
    if not is_silenced(address):
        _iptables("-I", *_rule(address))


def restore(address: str) -> None:
    """``address`` answers again (idempotent)."""
    while is_silenced(address):
        _iptables("-D", *_rule(address))


@contextlib.contextmanager
def silenced(address: str):
    silence(address)
    try:
        yield
    finally:
        restore(address)
