"""One behaviour suite, run against every driver on real BMC emulators:
fake (in-memory), ipmi against OpenIPMI ipmi_sim and against a pyghmi BMC,
redfish against sushy-emulator with TLS and basic auth, and the fence_agent
driver with ClusterLabs' fence_ipmilan (ipmi_sim), fence_redfish
(sushy-emulator) and fence_apc_snmp (an snmpsim APC PDU)."""

import pytest

from instanceha.exceptions import Action
from instanceha.fencing import PowerState
from instanceha.fencing import exceptions as exc

from .conftest import SHORT
from .labs import SLOW_DELAY, secret_in_any_cmdline

pytestmark = pytest.mark.functional


def test_power_off_is_confirmed_by_a_read_back(lab, fencer_for):
    entry, powered_on = lab.bmc(on=True)
    ev = fencer_for({"compute1": entry}).power_off("compute1")
    assert (ev.requested, ev.read_back, ev.attempts) == (PowerState.OFF, PowerState.OFF, 1)
    assert ev.driver == lab.driver and ev.host == "compute1"
    assert ev.started_at <= ev.finished_at and ev.duration > 0
    assert powered_on() is False  # the emulator agrees, not just the driver
    if lab.driver == "redfish":  # one emulator, several systems: only this one went off
        assert lab.others_on()


def test_already_off_is_success_without_a_request(lab, fencer_for):
    entry, powered_on = lab.bmc(on=False)
    ev = fencer_for({"compute1": entry}).power_off("compute1")
    assert ev.read_back is PowerState.OFF and ev.attempts == 0 and ev.already
    assert powered_on() is False


def test_power_on(lab, fencer_for):
    entry, powered_on = lab.bmc(on=False)
    f = fencer_for({"compute1": entry})
    ev = f.power_on("compute1")
    assert ev.read_back is PowerState.ON and powered_on() is True
    assert f.read_power("compute1") is PowerState.ON


def test_wrong_password_is_auth_failed_and_nothing_is_powered(lab, fencer_for, caplog):
    entry, powered_on = lab.bmc(on=True)
    wrong = "Wr0ng-Pa55-for-the-test"
    with pytest.raises(lab.auth_errors) as e:
        fencer_for({"compute1": lab.wrong_password(entry, wrong)}).power_off("compute1")
    assert "compute1" in str(e.value)
    if isinstance(e.value, exc.AuthFailed):
        assert e.value.action is Action.ESCALATE
    assert wrong not in str(e.value) and wrong not in caplog.text
    assert powered_on() is True


def test_bmc_down_is_unreachable(lab, fencer_for):
    with pytest.raises(lab.down_errors) as e:
        fencer_for({"compute1": dict(lab.down(), deadline=SHORT)}).power_off("compute1")
    assert e.value.action is Action.RETRY and "compute1" in str(e.value)


def test_slow_bmc_past_the_deadline_is_not_fenced(lab, fencer_for):
    assert SHORT < SLOW_DELAY
    entry, powered_on = lab.bmc(on=True, slow=True)
    with pytest.raises(exc.DeadlineExceeded) as e:
        fencer_for({"compute1": dict(entry, deadline=SHORT)}).power_off("compute1")
    assert "last read-back was ON" in str(e.value)
    assert powered_on() is True  # still on when we said "not fenced"


def test_garbage_reply_is_never_off(lab, fencer_for):
    with pytest.raises(lab.garbage_errors) as e:
        fencer_for({"compute1": dict(lab.garbage(), deadline=SHORT)}).power_off("compute1")
    assert e.value.action is Action.ESCALATE


def test_many_hosts_at_once(lab, fencer_for):
    bmcs = {f"compute{i}": lab.bmc(on=True) for i in range(4)}
    f = fencer_for({h: e for h, (e, _) in bmcs.items()})
    results = f.power_off_many(list(bmcs))
    assert all(r.read_back is PowerState.OFF for r in results.values()), results
    assert not any(powered() for _, powered in bmcs.values())


def test_check_reads_without_powering(lab, fencer_for):
    entry, powered_on = lab.bmc(on=True)
    # the wrong-password probe goes to a BMC of its own: the pyghmi emulator serves
    # one session at a time, and check() reads every host at once
    other, _ = lab.bmc(on=True)
    f = fencer_for({"ok": entry, "auth": lab.wrong_password(other, "nope"),
                    "down": dict(lab.down(), timeout=1.0)})
    results = {r.host: r for r in f.check()}
    assert results["ok"].ok and results["ok"].power_state == "on"
    assert results["auth"].error_type in {c.__name__ for c in lab.auth_errors}
    assert results["auth"].authenticated is not True
    if lab.auth_errors == (exc.AuthFailed,):
        assert results["auth"].authenticated is False
    assert results["down"].error_type in {c.__name__ for c in lab.down_errors}
    assert not results["down"].reachable
    assert powered_on() is True


def test_the_password_is_on_no_command_line(lab, fencer_for):
    secret = "Cmdline-Secret-4711"
    entry, _ = lab.bmc(on=True)
    f = fencer_for({"compute1": lab.wrong_password(entry, secret)})
    with pytest.raises(lab.auth_errors):
        f.power_off("compute1")
    assert secret_in_any_cmdline(secret) == []
