"""One behaviour suite, run against every fencing driver on real emulators.

ipmi -> OpenIPMI ipmi_sim and a pyghmi BMC (UDP, loopback); redfish ->
sushy-emulator (fake driver, TLS with a certificate made at test time, bcrypt
basic auth); fake -> the in-memory BMC. Every case: off, already off, on,
wrong password, BMC down, slow BMC past the deadline, garbage reply.
"""

import logging

import pytest
from harness import procs
from harness.bmc import GarbageUDP, IpmiSimBMC, PyghmiBMC, QuirkyRedfish, SushyEmulator

from instanceha.fencing import FencePolicy, Fencer, PowerState, fake
from instanceha.fencing import exceptions as exc
from instanceha.fencing.inventory import from_data

pytestmark = pytest.mark.functional
POLICY = FencePolicy(deadline=15.0, poll_interval=0.2, retry_backoff=0.5, retry_backoff_max=2.0)
SECRET = "s3cr3t-Pa55"


class Rig:
    """One emulated BMC behind one driver, with a back door to its chassis."""

    def __init__(self, kind, tmp_path, delay=0):
        self.kind = kind
        if kind in ("ipmi_sim", "pyghmi"):
            cls = IpmiSimBMC if kind == "ipmi_sim" else PyghmiBMC
            self.bmc = cls(str(tmp_path), name=kind, password=SECRET, power_delay=delay).start()
            self.entry = self.bmc.entry(timeout=3)
            self.is_on = self.bmc.powered_on
            self.set_on = self.bmc.set_power
        elif kind == "redfish":
            # several systems behind one BMC: fencing one must leave the others on
            self.bmc = SushyEmulator(str(tmp_path), systems=("compute1", "compute2"),
                                     password=SECRET, power_delay=delay).start()
            self.entry = self.bmc.entry("compute1", timeout=5)
            self.is_on = lambda: self.bmc.power_state("compute1") == "On"
            self.set_on = None
        else:
            self.registry = fake.REGISTRY
            address = f"fake-{tmp_path.name}"
            bmc = self.registry.bmc(address)
            bmc.password = SECRET
            bmc.power_delay = delay
            self.bmc = None
            self.entry = {"driver": "fake", "address": address, "username": "admin",
                          "password": SECRET}
            self.is_on = lambda: bmc.state is PowerState.ON
            self.set_on = lambda on: bmc.set_state(PowerState.ON if on else PowerState.OFF)

    def fencer(self, **overrides):
        entry = dict(self.entry, **overrides)
        return Fencer(from_data({"hosts": {"compute1": entry}}), POLICY)

    def stop(self):
        if self.bmc is not None:
            self.bmc.stop()


KINDS = ["ipmi_sim", "pyghmi", "redfish", "fake"]


@pytest.fixture(params=KINDS)
def rig(request, tmp_path):
    r = Rig(request.param, tmp_path)
    yield r
    r.stop()


def test_power_off_is_proven_by_a_read_back(rig, caplog):
    caplog.set_level(logging.DEBUG)
    assert rig.is_on()
    ev = rig.fencer().power_off("compute1")
    assert ev.read_back is PowerState.OFF and ev.requested is PowerState.OFF
    assert ev.attempts >= 1 and ev.reads >= 1 and ev.finished_at >= ev.started_at
    assert not rig.is_on()
    assert SECRET not in caplog.text and SECRET not in repr(ev.as_dict())
    if rig.kind == "redfish":
        assert rig.bmc.power_state("compute2") == "On"


def test_already_off_is_success_without_a_request(rig):
    f = rig.fencer()
    f.power_off("compute1")
    ev = f.power_off("compute1")
    assert ev.already and ev.read_back is PowerState.OFF


def test_power_on(rig):
    f = rig.fencer()
    f.power_off("compute1")
    ev = f.power_on("compute1")
    assert ev.read_back is PowerState.ON and rig.is_on()


def test_wrong_password_is_auth_failed_never_off(rig):
    with pytest.raises((exc.AuthFailed, exc.BMCUnreachable)) as e:
        rig.fencer(password="wrong-password").power_off("compute1")
    assert rig.is_on()
    assert "wrong-password" not in str(e.value)
    if rig.kind != "ipmi_sim":  # ipmi_sim drops a bad RAKP silently: unreachable
        assert isinstance(e.value, exc.AuthFailed)
        assert e.value.action.name == "ESCALATE"


def test_bmc_down_is_unreachable(rig):
    if rig.kind == "fake":
        rig.registry.bmc(rig.entry["address"]).down = True
        f = rig.fencer()
    else:
        port = procs.free_port()
        f = rig.fencer(port=port, deadline=3)
    with pytest.raises(exc.BMCUnreachable) as e:
        f.power_off("compute1")
    assert e.value.action.name == "RETRY"
    assert "compute1" in str(e.value) and SECRET not in str(e.value)


@pytest.mark.parametrize("kind", ["ipmi_sim", "pyghmi", "redfish", "fake"])
def test_slow_bmc_past_the_deadline_is_not_fenced(kind, tmp_path):
    r = Rig(kind, tmp_path, delay=8)
    try:
        with pytest.raises(exc.DeadlineExceeded) as e:
            r.fencer(deadline=2).power_off("compute1")
        assert "NOT fenced" in str(e.value)
    finally:
        r.stop()


def test_garbage_ipmi_reply(tmp_path):
    g = GarbageUDP().start()
    try:
        f = Fencer(from_data({"hosts": {"compute1": g.entry(timeout=2, deadline=3)}}), POLICY)
        with pytest.raises((exc.GarbageReply, exc.BMCUnreachable)):
            f.power_off("compute1")
        assert g.received > 0
    finally:
        g.stop()


def test_garbage_redfish_reply(tmp_path):
    q = QuirkyRedfish(str(tmp_path), "garbage", power="On").start()
    try:
        f = Fencer(from_data({"hosts": {"compute1": q.entry(timeout=2, deadline=3)}}), POLICY)
        with pytest.raises(exc.GarbageReply) as e:
            f.power_off("compute1")
        assert e.value.action.name == "ESCALATE"
    finally:
        q.stop()


def test_redfish_409_on_an_off_system_is_accepted(tmp_path):
    q = QuirkyRedfish(str(tmp_path), "conflict", power="On").start()
    try:
        f = Fencer(from_data({"hosts": {"compute1": q.entry(timeout=2)}}), POLICY)
        ev = f.power_off("compute1")
        assert ev.read_back is PowerState.OFF
    finally:
        q.stop()


def test_redfish_untrusted_certificate_is_a_tls_failure(tmp_path):
    r = Rig("redfish", tmp_path)
    try:
        with pytest.raises(exc.TLSFailure):
            r.fencer(verify=True, deadline=3).power_off("compute1")
        assert r.is_on()
    finally:
        r.stop()
