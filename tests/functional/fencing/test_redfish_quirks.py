"""Redfish specifics: 409 on ForceOff of an off system, TLS verification."""

import pytest
from harness.bmc import QuirkyRedfish, SushyEmulator

from instanceha.fencing import PowerState
from instanceha.fencing import exceptions as exc

pytestmark = pytest.mark.functional


@pytest.fixture(scope="module")
def sushy(tmp_path_factory):
    em = SushyEmulator(str(tmp_path_factory.mktemp("sushy-tls")), systems=["a"]).start()
    yield em
    em.stop()


@pytest.fixture
def quirky(tmp_path):
    made = []

    def make(**kw):
        q = QuirkyRedfish(str(tmp_path), **kw).start()
        made.append(q)
        return q

    yield make
    for q in made:
        q.stop()


def test_409_on_force_off_of_an_off_system_is_handled(quirky, fencer_for):
    # the host went off between our read (stale "On") and our ForceOff
    q = quirky(mode="conflict", power="Off", stale_reads=1)
    ev = fencer_for({"c": q.entry()}).power_off("c")
    assert q.conflicts == 1
    assert (ev.attempts, ev.read_back) == (1, PowerState.OFF)


def test_409_never_counts_as_off_without_the_read_back(quirky, fencer_for):
    # a BMC that says 409 but keeps reading On is not fenced
    q = quirky(mode="conflict", power="Off", stale_reads=10**6)
    with pytest.raises(exc.DeadlineExceeded):
        fencer_for({"c": dict(q.entry(), deadline=1.5)}).power_off("c")
    assert q.conflicts >= 1


def test_certificate_not_trusted_is_a_tls_failure(sushy, fencer_for):
    with pytest.raises(exc.TLSFailure) as e:
        fencer_for({"c": sushy.entry("a", verify=True)}).power_off("c")
    assert "verify" in str(e.value)
    assert sushy.power_state("a") == "On"


def test_certificate_of_another_ca_is_a_tls_failure(sushy, quirky, fencer_for):
    other_ca = quirky(mode="conflict").cert
    with pytest.raises(exc.TLSFailure):
        fencer_for({"c": sushy.entry("a", verify=other_ca)}).read_power("c")


def test_several_systems_need_a_system_id(sushy, fencer_for, tmp_path):
    em = SushyEmulator(str(tmp_path), systems=["x", "y"], name="two").start()
    try:
        entry = em.entry("x")
        del entry["system_id"]
        with pytest.raises(exc.InventoryError) as e:
            fencer_for({"c": entry}).read_power("c")
        assert "key system_id" in str(e.value) and "2 systems" in str(e.value)
    finally:
        em.stop()
