"""IPMI sessions on real BMC emulators (OpenIPMI ipmi_sim, the pyghmi BMC):
every fence logs in afresh and logs out, so a BMC that dropped its sessions
between two fences is fenced at once.

Before the fix the driver kept the session of a fence for the next one; a
BMC drops a session that stayed silent (ipmi_sim after 30 s) or forgets all
of them when it restarts, and the next fence then spent 18-22 s retrying on
the dead session (measured: benchmarks/fencing_bench.py, re-fence cases).
The drop used here is a restart of the emulator (same port, same power
state), which drops the sessions for real and at once.
"""

import logging
import threading

import pytest
from harness.bmc import IpmiSimBMC, PyghmiBMC
from pyghmi.ipmi.private import session as pyghmi_session

from instanceha.fencing import PowerState, ipmi_session

pytestmark = pytest.mark.functional

EMULATORS = {"ipmi_sim": IpmiSimBMC, "pyghmi": PyghmiBMC}


@pytest.fixture(params=sorted(EMULATORS))
def bmc(request, tmp_path):
    b = EMULATORS[request.param](str(tmp_path), name=f"bmc-{request.param}").start()
    yield b
    b.stop()


def failed_calls(caplog) -> list[str]:
    """The BMC calls of a fence that failed and were retried (confirm's log)."""
    return [r.getMessage() for r in caplog.records
            if r.name == "instanceha.fencing.confirm" and "failed (" in r.getMessage()]


def fence(fencer, bmc, caplog):
    bmc.set_power(True)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="instanceha.fencing"):
        ev = fencer.power_off("compute1")
    assert ev.read_back is PowerState.OFF and bmc.powered_on() is False
    return ev


def test_refence_after_the_bmc_dropped_its_sessions(bmc, fencer_for, caplog):
    f = fencer_for({"compute1": bmc.entry()})
    first = fence(f, bmc, caplog)
    assert failed_calls(caplog) == [] and first.attempts == 1
    bmc.restart()  # every session the BMC knew is gone; the client is not told
    second = fence(f, bmc, caplog)
    # the first call of the re-fence is answered: it rode no dead session
    assert failed_calls(caplog) == [], failed_calls(caplog)
    assert second.attempts == 1
    assert ipmi_session.registered("127.0.0.1", bmc.port) == []  # logged out, forgotten


def test_fences_leave_no_session_on_the_bmc_nor_in_pyghmi(tmp_path, fencer_for, caplog):
    """Each fence logs out (the BMC's own session count, read by ipmitool, stays
    0) and leaves nothing behind in this process: no session in pyghmi's
    tables, no socket, no thread per fence."""
    bmc = IpmiSimBMC(str(tmp_path), name="bmc-count").start()
    try:
        f = fencer_for({"compute1": bmc.entry()})
        fence(f, bmc, caplog)  # pyghmi's I/O thread and socket exist from here on
        sockets, threads = len(pyghmi_session.iosockets), threading.active_count()
        for _ in range(12):  # more than the 10 sessions ipmi_sim grants the user
            fence(f, bmc, caplog)
            assert bmc.active_sessions() == 0
        assert failed_calls(caplog) == []
        assert ipmi_session.registered("127.0.0.1", bmc.port) == []
        assert not any(isinstance(s, ipmi_session.FreshSession)
                       for s in pyghmi_session.Session.keepalive_sessions)
        assert len(pyghmi_session.iosockets) == sockets
        assert threading.active_count() == threads
    finally:
        bmc.stop()


def test_twenty_bmcs_fenced_at_once_then_again_after_a_restart(tmp_path, fencer_for):
    bmcs = {f"compute{i}": IpmiSimBMC(str(tmp_path), name=f"bmc{i}").start()
            for i in range(20)}
    try:
        f = fencer_for({h: b.entry() for h, b in bmcs.items()})
        for round_ in ("first", "after restart"):
            for b in bmcs.values():
                b.set_power(True)
            results = f.power_off_many(list(bmcs))
            bad = {h: r for h, r in results.items()
                   if isinstance(r, Exception) or r.read_back is not PowerState.OFF
                   or r.attempts != 1}
            assert bad == {}, (round_, bad)
            assert not any(b.powered_on() for b in bmcs.values())
            assert all(ipmi_session.registered("127.0.0.1", b.port) == []
                       for b in bmcs.values())
            for b in bmcs.values():
                b.restart()
        assert sum(b.active_sessions() for b in bmcs.values()) == 0
    finally:
        for b in bmcs.values():
            b.stop()


def test_a_refused_login_beside_a_good_check_never_stalls_it(bmc, tmp_path, fencer_for):
    """pyghmi handles replies in whichever thread waits, and checks "still
    logging in?" before it sleeps without a lock: a good BMC's check run
    beside a wrong-password login on another BMC slept on pyghmi's keepalive
    deadline and was given up after 10 s (6 of 100 rounds before the fix), and
    the refused login sometimes ended in AttributeError 'errormsg' instead of
    its reason (3 of 300). 40 rounds, each a fresh Fencer as a CLI check is."""
    other = type(bmc)(str(tmp_path), name="bmc-other").start()
    try:
        outcomes = []
        for _ in range(40):
            f = fencer_for({"ok": bmc.entry(), "auth": dict(other.entry(), password="nope")})
            r = {x.host: x for x in f.check()}
            outcomes.append((r["ok"].error_type, r["ok"].power_state, r["auth"].error_type))
        assert set(outcomes) == {(None, "on", "AuthFailed")}, outcomes
        assert ipmi_session.registered("127.0.0.1", bmc.port) == []
        assert ipmi_session.registered("127.0.0.1", other.port) == []
    finally:
        other.stop()
