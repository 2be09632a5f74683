"""The Nova adapter against a real Nova: reads, service state, typed errors."""

import datetime

import pytest
from harness import daemons, procs
from oslo_config import cfg

from instanceha.compute import exceptions as exc
from instanceha.conf import nova as nova_conf
from instanceha.engine import marker
from instanceha.engine.instance_policy import Recovery, Source, decide
from instanceha.exceptions import Action

pytestmark = pytest.mark.functional
NOW = datetime.datetime(2026, 11, 21, 17, 0, tzinfo=datetime.timezone.utc)


def test_services_report_every_compute(nova, minicloud, healthy_cloud):
    services = {s.host: s for s in nova.services()}
    assert set(services) == set(minicloud.hosts)
    for s in services.values():
        assert (s.state, s.status, s.forced_down, s.marker) == ("up", "enabled", False, None)
        assert s.updated_at is not None and s.updated_at.tzinfo is not None


def test_disable_with_marker_and_enable(nova, healthy_cloud):
    host = healthy_cloud.hosts[-1]
    reason = marker.encode(marker.MarkerState.RESERVED, at=NOW, note="spare")
    svc = nova.disable(host, reason)
    assert (svc.status, svc.forced_down) == ("disabled", False)
    got = nova.service(host)
    assert got.disabled_reason == reason
    assert got.marker.state is marker.MarkerState.RESERVED and got.marker.note == "spare"

    # an operator's maintenance reason is not ours
    nova.disable(host, "maintenance: DIMM swap, ticket 4711")
    assert nova.service(host).marker is None

    svc = nova.enable(host)
    assert (svc.status, svc.forced_down) == ("enabled", False)


def test_force_down_and_unset(nova, healthy_cloud):
    host = healthy_cloud.hosts[-1]
    reason = marker.encode(marker.MarkerState.FENCED, at=NOW, token=7)
    svc = nova.force_down(host, reason)
    assert (svc.forced_down, svc.status, svc.state) == (True, "disabled", "down")
    assert nova.service(host).marker.token == 7
    svc = nova.unset_forced_down(host)
    assert svc.forced_down is False and svc.status == "disabled"  # still disabled
    svc = nova.enable(host)
    assert (svc.forced_down, svc.status) == (False, "enabled")


def test_servers_on_host_carry_what_the_policy_reads(nova, admin, servers, healthy_cloud):
    host = healthy_cloud.hosts[0]
    flavor = servers.flavor("ih.test.notify", extra_specs={"instanceha:recovery": "notify"})
    agg = admin.compute.create_aggregate(name="ih-test-agg")
    try:
        admin.compute.add_host_to_aggregate(agg, host)
        admin.compute.set_aggregate_metadata(agg, {"instanceha:recovery": "evacuate"})
        a = servers.boot("policy-a", host, metadata={"instanceha:recovery": "ignore"},
                         flavor=flavor)
        b = servers.boot("policy-b", host, flavor=flavor)
        c = servers.boot("policy-c", host)
        for s in (a, b, c):
            servers.wait_status(s.id, "ACTIVE")
        found = {s.id: s for s in nova.servers_on_host(host)}
        assert {a.id, b.id, c.id} <= set(found)
        assert found[a.id].metadata == {"instanceha:recovery": "ignore"}
        assert found[b.id].flavor_extra_specs == {"instanceha:recovery": "notify"}
        assert found[c.id].image_id and not found[c.id].volume_backed
        assert found[a.id].host == host and found[a.id].vm_state == "active"

        facts = nova.instance_facts([found[a.id], found[b.id], found[c.id]], host)
        got = {sid: decide(f, Recovery.IGNORE) for sid, f in facts.items()}
        assert (got[a.id].recovery, got[a.id].source) == (Recovery.IGNORE, Source.SERVER)
        assert (got[b.id].recovery, got[b.id].source) == (Recovery.NOTIFY, Source.FLAVOR)
        assert (got[c.id].recovery, got[c.id].source) == (Recovery.EVACUATE, Source.AGGREGATE)
        assert facts[c.id].image_properties["disk_format"] == "raw"
    finally:
        admin.compute.remove_host_from_aggregate(agg, host)
        admin.compute.delete_aggregate(agg)


@pytest.mark.parametrize("call, error", [
    (lambda n: n.server("00000000-0000-4000-8000-000000000000"), exc.NovaNotFound),
    (lambda n: n.evacuate("00000000-0000-4000-8000-000000000000"), exc.NovaNotFound),
    (lambda n: n.service("no-such-host"), exc.ServiceNotFound),
])
def test_errors_are_typed_and_say_escalate(nova, call, error):
    with pytest.raises(error) as e:
        call(nova)
    assert e.value.action is Action.ESCALATE


def client_with(minicloud, tmp_path, **overrides):
    path = daemons.write_conf(str(tmp_path / "c.conf"),
                              {"nova": dict(minicloud.nova_options(), **overrides)})
    conf = cfg.ConfigOpts()
    nova_conf.register_opts(conf)
    conf([], default_config_files=[path])
    return nova_conf.nova_client(conf)


def test_unreachable_nova_says_retry(minicloud, tmp_path):
    nobody = f"http://127.0.0.1:{procs.free_port()}/v3"
    client = client_with(minicloud, tmp_path, timeout=5, connect_retries=0, auth_url=nobody)
    with pytest.raises(exc.NovaUnavailable) as e:
        client.services()
    assert e.value.action is Action.RETRY
    assert "admin" not in str(e.value)  # no credentials in messages


def test_wrong_password_escalates(minicloud, tmp_path):
    client = client_with(minicloud, tmp_path, password="not-the-password")
    with pytest.raises(exc.NovaAuthError) as e:
        client.services()
    assert e.value.action is Action.ESCALATE
    assert "not-the-password" not in str(e.value)
