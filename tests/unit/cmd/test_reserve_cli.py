"""``instanceha host reserve|unreserve`` on a fake Nova."""


import pytest

from instanceha.cmd import cli, reserve_cli
from instanceha.compute.model import ComputeService
from instanceha.engine import marker as mk
from tests.unit.compute.fakes import server
from tests.unit.nova import FakeNova


def svc(reason=None, up=True, forced=False):
    return ComputeService(id="1", host="c3", state="up" if up else "down",
                          status="disabled" if reason else "enabled", forced_down=forced,
                          disabled_reason=reason, zone="nova", updated_at=None)


@pytest.fixture
def nova(monkeypatch):
    holder = {}

    def use(service, servers=()):  # servers: on the host (c3)
        holder["nova"] = FakeNova([service], servers, record_keywords=True)
        monkeypatch.setattr(reserve_cli, "nova_client", lambda conf: holder["nova"])
        return holder["nova"]

    return use


def run(*argv):
    return cli.main(["--config-file", "/dev/null", "host", *argv])


def test_reserve_writes_the_marker(nova, capsys):
    n = nova(svc())
    assert run("reserve", "c3", "--note", "rack 3 spare") == 0
    (call,) = n.calls
    m = mk.decode(call[2])
    assert call[:2] == ("disable", "c3") and m.state is mk.MarkerState.RESERVED
    assert m.note == "rack 3 spare" and m.at is not None
    assert "c3 reserved" in capsys.readouterr().out


@pytest.mark.parametrize("service, force, words", [
    (svc(mk.encode(mk.MarkerState.FENCED, token=3)), False, "in instanceha's recovery"),
    (svc(mk.encode(mk.MarkerState.FENCED, token=3)), True, "in instanceha's recovery"),
    (svc("maintenance"), False, "--force"),
    (svc(None, forced=True), False, "forced down"),
])
def test_reserve_refuses(nova, capsys, service, force, words):
    n = nova(service)
    assert run("reserve", "c3", *(["--force"] if force else [])) == 2
    assert n.calls == [] and words in capsys.readouterr().err


def test_reserve_a_host_disabled_by_an_operator_with_force_and_warn_about_servers(nova, capsys):
    n = nova(svc("maintenance", up=False), servers=[server("s1", "c3")])
    assert run("reserve", "c3", "--force") == 0
    assert n.calls[0][0] == "disable"
    err = capsys.readouterr().err
    assert "1 server(s) still run" in err and "down" in err


def test_unreserve_enables_only_a_reserved_host(nova, capsys):
    n = nova(svc(mk.encode(mk.MarkerState.RESERVED)))
    assert run("unreserve", "c3") == 0
    assert n.calls == [("enable", "c3", False)]
    n = nova(svc("maintenance"))
    assert run("unreserve", "c3") == 2 and n.calls == []
    assert "not reserved" in capsys.readouterr().err
