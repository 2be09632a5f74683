"""The ClusterLabs fence agents' stdin protocol, both ways. Pure: no I/O.

An agent run with no argument reads ``name=value`` lines on stdin
(``action=status``, ``ip=...``, ``password=...``) and answers with its exit
code and output. ``request_lines`` builds the lines; ``read_status`` and
``failure`` read the answer the way Pacemaker does, and stricter:

* ``status``: exit 0 is ON, exit 2 is OFF (Pacemaker's rule), and only when
  the agent also printed ``Status: ON`` / ``Status: OFF`` (what every agent
  built on fencing.py prints). Any other exit code or output is not a power
  state: a garbage answer never counts as off;
* ``on``/``off``/``monitor``: exit 0 is accepted; anything else is a failure,
  typed from the agent's fixed error messages (fencing.py's ``fail()``).

Secrets never reach the agent's argv (there is none) and are redacted from
any agent text quoted in an error (``redact``). Agents that hand the password
to a helper's command line (fence_ipmilan -> ``ipmitool -P``, the SNMP agents
-> ``snmpget -c``) get a placeholder instead, and the helper is run through
``shims/secretshim``, which takes the secret from the environment
(``secret_plan``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import urllib.parse

from instanceha.fencing import exceptions as exc
from instanceha.fencing.base import PowerState
from instanceha.fencing.model import BMCEntry, Secret

PLACEHOLDER = "instanceha-secret-from-environment"

#: agents that run ipmitool with ``-P password`` (fence_ipmilan and its aliases)
IPMITOOL_AGENTS = frozenset({"fence_ipmilan", "fence_ipmilanplus", "fence_idrac",
                             "fence_ilo3", "fence_ilo4", "fence_ilo5", "fence_imm"})
#: agents built on fencing_snmp (net-snmp's snmpget/snmpset/snmpwalk with -c/-A/-X)
SNMP_AGENTS = frozenset({"fence_apc_snmp", "fence_cisco_mds", "fence_eaton_snmp",
                         "fence_emerson", "fence_ibmblade", "fence_ifmib",
                         "fence_intelmodular", "fence_ipdu", "fence_lindypdu",
                         "fence_tripplite_snmp"})

STATUS_LINE = re.compile(r"^Status: (ON|OFF)\s*$", re.MULTILINE)
UNKNOWN_OPTION = re.compile(r"Parse error: Ignoring unknown option '([^=']*)")


@dataclasses.dataclass(frozen=True)
class Answer:
    """What an agent run gave back."""

    rc: int
    stdout: str
    stderr: str


@dataclasses.dataclass(frozen=True)
class SecretPlan:
    """How the secrets reach the agent: stdin lines, environment, net-snmp config."""

    stdin: dict  # option -> str | Secret (the lines of the agent's stdin)
    env: dict  # extra environment (values may be Secret)
    snmp_conf: dict  # net-snmp snmp.conf directives (values Secret), empty if none
    shim: bool  # helper paths point at the shim


def secret_plan(entry: BMCEntry, shim: str) -> SecretPlan:
    """The stdin options (no action) and where each secret goes for ``entry``."""
    opts: dict = {"ip": entry.address}
    if entry.port:
        opts["ipport"] = str(entry.port)
    if entry.username:
        opts["username"] = entry.username
    if entry.plug:
        opts["plug"] = entry.plug
    opts.update(dict(entry.options))
    if entry.password is not None:
        opts["password"] = entry.password
    env: dict = {}
    snmp: dict = {}
    helper = None
    if entry.agent in IPMITOOL_AGENTS and "password" in opts:
        env["IPMI_PASSWORD"] = opts["password"]
        opts["password"] = PLACEHOLDER
        opts["ipmitool_path"] = os.path.join(shim, "ipmitool")
        helper = True
    elif entry.agent in SNMP_AGENTS:
        for key, directive in (("community", "defCommunity"),
                               ("snmp_priv_passwd", "defPrivPassphrase"),
                               ("password", "defAuthPassphrase")):
            if isinstance(opts.get(key), Secret):
                snmp[directive] = opts[key]
                opts[key] = PLACEHOLDER
        if snmp:
            for tool in ("snmpget", "snmpset", "snmpwalk"):
                opts[f"{tool}_path"] = os.path.join(shim, tool)
            helper = True
    return SecretPlan(opts, env, snmp, bool(helper))


def request_lines(action: str, opts: dict) -> str:
    """The agent's stdin: ``action=...`` then one ``name=value`` line per option."""
    lines = [f"action={action}"]
    for name, value in opts.items():
        lines.append(f"{name}={value.reveal() if isinstance(value, Secret) else value}")
    return "\n".join(lines) + "\n"


def secrets_of(opts: dict, env: dict, snmp: dict) -> list[str]:
    return [v.reveal() for d in (opts, env, snmp) for v in d.values() if isinstance(v, Secret)]


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with every secret (also URL-encoded) and any URL userinfo masked."""
    for s in secrets:
        if s:
            for form in {s, urllib.parse.quote(s, safe=""), urllib.parse.quote_plus(s)}:
                text = text.replace(form, "******")
    return re.sub(r"//[^/@\s]+@", "//******@", text)


def _errors(stderr: str) -> list[str]:
    """The agent's own error lines (fencing.py logs ``... ERROR: <message>``)."""
    out = []
    for line in stderr.splitlines():
        m = re.search(r"ERROR:(?:root:)?\s*(.*\S)", line)
        if m and m.group(1) not in out and not m.group(1).startswith("Please use '-h'"):
            out.append(m.group(1))
    return out


def unknown_options(answer: Answer) -> list[str]:
    """Options the agent said it ignored (it never fails for them)."""
    return sorted(set(UNKNOWN_OPTION.findall(answer.stderr)))


def read_status(answer: Answer, facts: dict, secrets: list[str],
                username: str | None = None) -> PowerState:
    """The power state in a ``status`` answer, or a typed error (never OFF by default)."""
    printed = STATUS_LINE.findall(answer.stdout)
    if answer.rc in (0, 2):
        expected = "ON" if answer.rc == 0 else "OFF"
        if printed == [expected]:
            return PowerState.ON if expected == "ON" else PowerState.OFF
        said = f"printed {', '.join('Status: ' + p for p in printed)}" if printed else \
            "printed no 'Status: ON|OFF' line"
        raise exc.GarbageReply(**facts, reason=f"'status' exited {answer.rc} (Pacemaker: "
                               f"{expected}) but {said}; taken as unknown, not {expected}")
    raise failure("status", answer, facts, secrets, username)


_KNOWN = (
    ("Connection timed out", exc.BMCUnreachable, "the agent's connection timed out"),
    ("Connection lost", exc.BMCUnreachable, "the agent lost the connection"),
    ("NewConnectionError", exc.BMCUnreachable, "the agent could not connect"),
    ("Connection refused", exc.BMCUnreachable, "the connection was refused"),
    ("Timeout: No Response from", exc.BMCUnreachable,
     "no SNMP answer (the device is unreachable, or the community is wrong: an SNMP agent "
     "does not answer a community it does not know)"),
    ("Unable to connect/login to fencing device", exc.AgentLoginFailed,
     "Unable to connect/login to fencing device"),
    ("The user does not have the correct privileges", exc.AuthFailed,
     "the user does not have the privileges for the action"),
)


def failure(action: str, answer: Answer, facts: dict, secrets: list[str],
            username: str | None = None) -> exc.FencingError:
    """The typed error for a failed agent run (exit code not the expected one)."""
    errors = [redact(e, secrets)[:200] for e in _errors(answer.stderr)]
    text = "; ".join(errors)
    for phrase, cls, reason in _KNOWN:
        if phrase in text:
            extra = {"username": username} if cls is exc.AuthFailed else \
                {"what": action} if cls is exc.AgentLoginFailed else {}
            return cls(**facts, **extra, reason=reason)
    if "Traceback (most recent call last)" in answer.stderr:
        text = "the agent crashed (Python traceback on stderr)" + (f": {text}" if text else "")
    elif "Unable to obtain correct plug status" in text:
        text += (" (fence_ipmilan says this for a wrong password or username too; "
                 "check them, the plug and the device's address)")
    elif not text:
        text = "it printed no error message"
    return exc.AgentFailed(**facts, what=action, rc=answer.rc, reason=text)
