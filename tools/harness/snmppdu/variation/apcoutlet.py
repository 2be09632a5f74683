# snmpsim variation module (loaded by snmpsim-command-responder, not imported):
# the outlets of an APC switched rack PDU (PowerNet-MIB rPDUOutlet*), with a power
# bit per outlet kept in a file, so that a SET really switches the outlet and the
# test can read (and set) the outlet behind the PDU's back.
#
# Module options (--variation-module-options=apcoutlet:state=DIR,delay=SECONDS):
#   state  directory of the outlet files: outlet<N> holds 1 (on) or 0 (off);
#          outlet<N>.requests gets one line per accepted SET (1 on, 0 off, r reboot);
#          outlet<N>.changes one line "<bit> <epoch seconds>" per real change
#   delay  seconds a power change takes to apply (a slow PDU); 0 by default
# Record value (in the .snmprec file): kind=control|status,outlet=N
#   control = rPDUOutletControlOutletCommand: GET immediateOn(1)/immediateOff(2),
#             SET immediateOn(1), immediateOff(2), immediateReboot(3)
#   status  = rPDUOutletStatusOutletState: outletStatusOn(1)/outletStatusOff(2)
#
# snmpsim executes this file with the globals moduleContext and recordContext
# defined (they are not importable names):
# ruff: noqa: F821
import os
import threading
import time

from pysnmp.smi import error
from snmpsim.grammar.snmprec import SnmprecGrammar
from snmpsim.utils import split

ON, OFF, REBOOT = 1, 2, 3


def init(**context):
    settings = {"delay": "0"}
    if context["options"]:
        settings.update(dict(split(x, "=") for x in split(context["options"], ",")))
    if "state" not in settings:
        raise ValueError("apcoutlet: the 'state' option (a directory) is required")
    moduleContext["state"] = settings["state"]
    moduleContext["delay"] = float(settings["delay"])
    moduleContext["lock"] = threading.Lock()


def _path(outlet, suffix=""):
    return os.path.join(moduleContext["state"], f"outlet{outlet}{suffix}")


def _read(outlet):
    try:
        with open(_path(outlet)) as f:
            return f.read().strip() == "1"
    except FileNotFoundError:
        return True  # an outlet nobody configured is on, as on a real PDU


def _append(outlet, suffix, line):
    with open(_path(outlet, suffix), "a") as f:
        f.write(line + "\n")


def _apply(outlet, on):
    with moduleContext["lock"]:
        if _read(outlet) != on:
            with open(_path(outlet), "w") as f:
                f.write("1\n" if on else "0\n")
            _append(outlet, ".changes", f"{int(on)} {time.time():.6f}")


def _switch(outlet, command):
    _append(outlet, ".requests", {ON: "1", OFF: "0", REBOOT: "r"}[command])
    delay = moduleContext["delay"]

    def work():
        if command == REBOOT:
            _apply(outlet, False)
            time.sleep(max(delay, 0.5))
            _apply(outlet, True)
        else:
            _apply(outlet, command == ON)

    if delay > 0 or command == REBOOT:
        threading.Timer(delay if command != REBOOT else 0, work).start()
    else:
        work()


def variate(oid, tag, value, **context):
    if not context["nextFlag"] and not context["exactMatch"]:
        return context["origOid"], tag, context["errorStatus"]
    if "settings" not in recordContext:
        recordContext["settings"] = dict(split(x, "=") for x in split(value, ","))
    kind = recordContext["settings"]["kind"]
    outlet = int(recordContext["settings"]["outlet"])
    if context["setFlag"]:
        idx = max(0, context["varsTotal"] - context["varsRemaining"] - 1)
        if kind != "control":
            raise error.NotWritableError(name=oid, idx=idx)
        try:
            command = int(context["origValue"])
        except (TypeError, ValueError):
            raise error.WrongTypeError(name=oid, idx=idx)
        if command not in (ON, OFF, REBOOT):
            raise error.WrongValueError(name=oid, idx=idx)
        _switch(outlet, command)
        return oid, tag, context["origValue"]
    state = ON if _read(outlet) else OFF
    return oid, tag, SnmprecGrammar.TAG_MAP[tag](state)


def shutdown(**context):
    pass
