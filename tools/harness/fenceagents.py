"""ClusterLabs fence agents in the tests and benchmarks.

``fence_ipmilan(entry)`` / ``fence_redfish(entry)`` turn an emulator's
``ipmi`` / ``redfish`` inventory entry into a ``fence_agent`` device that
reaches the same emulator through the real agent (``harness.snmppdu.ApcPDU``
gives fence_apc_snmp devices itself).

Misbehaving agents, written on demand into a directory the tests put on
``PATH`` (the fence_agent driver finds agents there after /usr/sbin):

* ``fence_garbage``: reads its stdin, prints bytes that are no answer, exits 2
  for ``status`` (Pacemaker alone would call that OFF) and 0 for the rest;
* ``fence_hang``: reads its stdin and never ends (SIGTERM ignored, as a wedged
  agent stuck in an uninterruptible call would behave towards it); it forks a
  child that hangs too, to show the driver kills the whole process group.

Each agent appends its action and PID to ``<dir>/<agent>.log`` so a test can
see it was run and that nothing of it is left.
"""

from __future__ import annotations

import os

AGENTS = {
    "fence_garbage": r"""#!/bin/sh
action=$(sed -n 's/^action=//p')
echo "$action $$" >> "$(dirname "$0")/fence_garbage.log"
printf '\001\377 ##### Satus: OF \n%s\n' "$(head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n')"
[ "$action" = status ] && exit 2
exit 0
""",
    "fence_hang": r"""#!/bin/sh
trap '' TERM
action=$(sed -n 's/^action=//p')
sh -c 'trap "" TERM; while :; do sleep 1; done' &
echo "$action $$ $!" >> "$(dirname "$0")/fence_hang.log"
while :; do sleep 1; done
""",
}


# ipmi_sim offers cipher suite 3; ipmitool's default (17) costs ~10 s per call
# against it (it asks for the cipher suites first and waits)
IPMILAN_OPTIONS = {"lanplus": 1, "cipher": 3, "power_wait": 0}


def fence_ipmilan(e: dict) -> dict:
    """An ipmi inventory entry of the emulators as a fence_ipmilan device."""
    return {"driver": "fence_agent", "agent": "fence_ipmilan", "address": e["address"],
            "port": e["port"], "username": e["username"], "password": e["password"],
            "options": dict(IPMILAN_OPTIONS)}


def fence_redfish(e: dict) -> dict:
    """A redfish entry of sushy-emulator as a fence_redfish device. fence_redfish
    verifies TLS against the system CAs only: the emulator's self-signed
    certificate needs ssl_insecure."""
    system = e["system_id"]
    return {"driver": "fence_agent", "agent": "fence_redfish", "address": e["address"],
            "port": e["port"], "username": e["username"], "password": e["password"],
            "options": {"ssl": 1, "ssl_insecure": 1, "power_wait": 0,
                        "systems_uri": system if system.startswith("/") else
                        f"/redfish/v1/Systems/{system}"}}


def install(directory: str) -> str:
    """Write the agents into ``directory``; returns it (put it on PATH)."""
    os.makedirs(directory, exist_ok=True)
    for name, text in AGENTS.items():
        path = os.path.join(directory, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o755)
    return directory


def runs(directory: str, agent: str) -> list[list[str]]:
    """Each run of ``agent``: [action, pid, (child pid)]."""
    try:
        with open(os.path.join(directory, f"{agent}.log")) as f:
            return [line.split() for line in f if line.strip()]
    except FileNotFoundError:
        return []


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
