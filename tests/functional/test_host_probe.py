"""The second source of liveness on real sockets: a probe of loopback addresses
(127.X.Y.N, one per simulated host), a host killed on the network by an
iptables DROP of its address (tools/harness/hostnet.py)."""

import os
import socket
import time

import pytest
from harness import hostnet, procs

from instanceha.controller.host_probe import AddressProbe, ProbeSettings
from instanceha.engine.model import SecondSource

pytestmark = pytest.mark.functional

NET = f"127.{200 + os.getpid() % 50}.{os.getpid() % 250}"


def addr(n):
    return f"{NET}.{n}"


@pytest.fixture
def probe_of():
    made = []

    def make(addresses, **kw):
        settings = dict(port=procs.free_port(), timeout=0.5, interval=0.3)
        settings.update(kw)
        p = AddressProbe(addresses.get, ProbeSettings(**settings))
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def answer(probe, host, want, timeout=5.0):
    return procs.wait_for(lambda: probe.answer(host) is want, timeout,
                          f"{host} to be {want.value} (now {probe.answer(host).value})",
                          interval=0.02)


def test_refused_and_accepted_both_prove_the_host_answers(probe_of):
    listener = socket.socket()
    listener.bind((addr(2), 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    try:
        # compute1: nothing listens, its kernel resets; compute2: a listener accepts
        probe = probe_of({"compute1": addr(1), "compute2": addr(2)}, port=port)
        assert probe.want("compute1") is SecondSource.ASKING
        assert probe.want("compute2") is SecondSource.ASKING
        answer(probe, "compute1", SecondSource.ANSWERS)
        answer(probe, "compute2", SecondSource.ANSWERS)
        assert probe.changed() == {"compute1", "compute2"}
        assert probe.counters["silent"] == 0
    finally:
        listener.close()


def test_a_silenced_address_is_silent_then_answers_again(probe_of):
    probe = probe_of({"compute3": addr(3)})
    with hostnet.silenced(addr(3)):
        asked = time.monotonic()
        probe.want("compute3")
        answer(probe, "compute3", SecondSource.SILENT)
        took = time.monotonic() - asked
        assert probe.changed() == {"compute3"}
        assert probe.counters["connects"] >= 3  # three attempts: one lost SYN is no verdict
    answer(probe, "compute3", SecondSource.ANSWERS)  # asked again every interval
    assert probe.changed() == {"compute3"}
    print(f"silent after {took:.2f} s (timeout 0.5 s)")


def test_no_address_no_second_source_and_a_drop_forgets(probe_of):
    probe = probe_of({"compute1": addr(1), "named": "compute1.example.com"})
    assert probe.want("unknown") is SecondSource.NONE
    assert probe.want("named") is SecondSource.NONE  # a name would need a lookup: refused
    probe.want("compute1")
    answer(probe, "compute1", SecondSource.ANSWERS)
    probe.drop("compute1")
    assert probe.answer("compute1") is SecondSource.NONE
    assert probe.want("compute1") is SecondSource.ASKING  # asked anew


def test_connections_in_flight_are_bounded(probe_of):
    hosts = {f"h{i}": addr(10 + i) for i in range(6)}
    for a in hosts.values():
        hostnet.silence(a)
    try:
        probe = probe_of(hosts, max_in_flight=2, timeout=0.3, interval=5.0)
        for h in hosts:
            probe.want(h)
        for h in hosts:
            answer(probe, h, SecondSource.SILENT, timeout=10)
        assert probe.counters["max_in_flight"] == 2
    finally:
        for a in hosts.values():
            hostnet.restore(a)
