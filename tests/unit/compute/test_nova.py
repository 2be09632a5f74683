"""NovaClient with a recorded Nova: pinned microversions, bodies, typed errors."""

import json
import re

import pytest
from keystoneauth1 import exceptions as ks_exc

from instanceha.compute import exceptions as exc
from instanceha.compute.calls import ApiCalls
from instanceha.compute.nova import NovaClient
from instanceha.engine.marker import MarkerState
from instanceha.exceptions import Action
from tests.unit.clock import FakeClock

SERVICE = {"binary": "nova-compute", "host": "c1", "id": "svc-1", "zone": "nova",
           "status": "disabled", "state": "down", "updated_at": "2026-11-21T17:31:36.000000",
           "disabled_reason": "instanceha:v1:fenced;token=3", "forced_down": True}
SERVER = {"id": "s1", "name": "vm", "status": "SHUTOFF", "OS-EXT-STS:vm_state": "stopped",
          "OS-EXT-STS:task_state": None, "OS-EXT-SRV-ATTR:host": "c1", "tenant_id": "p",
          "locked": True, "metadata": {"instanceha:recovery": "evacuate"},
          "flavor": {"extra_specs": {"evacuable": "true"}}, "image": "",
          "OS-EXT-AZ:availability_zone": "nova"}


class Response:
    def __init__(self, status, body=None, text=None):
        self.status_code = status
        self._body = body
        self.text = text if text is not None else json.dumps(body)
        self.reason = "reason"

    def json(self):
        if self._body is None:
            raise ValueError("no json")
        return self._body


class Proxy:
    def __init__(self, answers):
        self.answers = list(answers)
        self.requests = []
        self.retries = []  # the transport retries each request was allowed

    def request(self, url, method, microversion=None, json=None, raise_exc=True, **kwargs):
        assert raise_exc is False  # errors are sorted by the adapter, once
        self.requests.append((method, url, microversion, json))
        self.retries.append((kwargs.get("connect_retries"), kwargs.get("status_code_retries")))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class Conn:
    def __init__(self, *answers, image=()):
        self.compute = Proxy(answers)
        self.image = Proxy(image)


def test_services_parse_state_and_marker():
    conn = Conn(Response(200, {"services": [SERVICE]}))
    (svc,) = NovaClient(conn).services()
    assert conn.compute.requests == [("GET", "/os-services?binary=nova-compute", "2.53", None)]
    assert (svc.id, svc.host, svc.up, svc.disabled, svc.forced_down) == (
        "svc-1", "c1", False, True, True)
    assert svc.marker.state is MarkerState.FENCED and svc.marker.token == 3
    assert svc.updated_at.tzinfo is not None


@pytest.mark.parametrize("method, args, body", [
    ("force_down", ("c1", "instanceha:v1:fenced"),
     {"forced_down": True, "status": "disabled", "disabled_reason": "instanceha:v1:fenced"}),
    ("force_down", ("c1",), {"forced_down": True}),
    ("disable", ("c1", "why"), {"status": "disabled", "disabled_reason": "why"}),
    ("enable", ("c1",), {"status": "enabled", "forced_down": False}),
    ("enable", ("c1", False), {"status": "enabled"}),
    ("unset_forced_down", ("c1",), {"forced_down": False}),
])
def test_service_updates_by_id_at_2_53(method, args, body):
    conn = Conn(Response(200, {"services": [SERVICE]}), Response(200, {"service": SERVICE}))
    getattr(NovaClient(conn), method)(*args)
    assert conn.compute.requests[1] == ("PUT", "/os-services/svc-1", "2.53", body)


def test_unknown_host_is_service_not_found():
    conn = Conn(Response(200, {"services": []}))
    with pytest.raises(exc.ServiceNotFound) as e:
        NovaClient(conn).force_down("c9")
    assert e.value.action is Action.ESCALATE and "c9" in str(e.value)


def test_server_fields_and_volume_backed():
    conn = Conn(Response(200, {"server": SERVER}))
    s = NovaClient(conn).server("s1")
    assert conn.compute.requests[0][2] == "2.73"
    assert (s.status, s.vm_state, s.host, s.locked, s.volume_backed) == (
        "SHUTOFF", "stopped", "c1", True, True)
    assert s.flavor_extra_specs == {"evacuable": "true"}


def test_servers_on_host_pages_and_filters():
    page1 = [dict(SERVER, id=f"s{i}") for i in range(1000)]
    elsewhere = dict(SERVER, id="x", **{"OS-EXT-SRV-ATTR:host": "c2"})  # moved meanwhile
    conn = Conn(Response(200, {"servers": page1}),
                Response(200, {"servers": [dict(SERVER, id="last"), elsewhere]}))
    got = NovaClient(conn).servers_on_host("c1")
    assert len(got) == 1001 and got[-1].id == "last"
    urls = [r[1] for r in conn.compute.requests]
    assert urls[0] == "/servers/detail?all_tenants=1&host=c1&limit=1000"
    assert urls[1].endswith("&limit=1000&marker=s999")


def test_evacuate_is_pinned_below_2_95():
    conn = Conn(Response(202, None, text=""), Response(202, None, text=""))
    NovaClient(conn).evacuate("s1")
    NovaClient(conn).evacuate("s1", host="spare")
    assert conn.compute.requests == [
        ("POST", "/servers/s1/action", "2.94", {"evacuate": {}}),
        ("POST", "/servers/s1/action", "2.94", {"evacuate": {"host": "spare"}}),
    ]


def test_reset_state_only_to_active_or_error():
    conn = Conn(Response(202, None, text=""))
    NovaClient(conn).reset_state("s1", "error")
    assert conn.compute.requests[0][3] == {"os-resetState": {"state": "error"}}
    with pytest.raises(ValueError):
        NovaClient(conn).reset_state("s1", "stopped")


def test_evacuations_newest_first_at_2_59():
    migs = [{"id": i, "instance_uuid": "s1", "status": st, "source_compute": "c1",
             "dest_compute": "c2", "migration_type": "evacuation"}
            for i, st in ((1, "error"), (3, "done"), (2, "failed"))]
    conn = Conn(Response(200, {"migrations": migs}))
    got = NovaClient(conn).evacuations("s1", source_host="c1")
    assert conn.compute.requests[0][1:3] == (
        "/os-migrations?migration_type=evacuation&instance_uuid=s1&source_compute=c1", "2.59")
    assert [m.id for m in got] == [3, 2, 1]
    assert got[0].succeeded and got[1].failed and got[2].failed


@pytest.mark.parametrize("status, body, error, action", [
    (500, {"computeFault": {"message": "boom"}}, exc.NovaServerError, Action.RETRY),
    (503, None, exc.NovaServerError, Action.RETRY),
    (409, {"conflictingRequest": {"message": "Compute service of c1 is still in use."}},
     exc.NovaConflict, Action.RETRY),
    (429, {"overLimit": {"message": "slow down"}}, exc.NovaConflict, Action.RETRY),
    (400, {"badRequest": {"message": "Invalid state"}}, exc.NovaBadRequest, Action.ESCALATE),
    (401, None, exc.NovaForbidden, Action.ESCALATE),
    (403, {"forbidden": {"message": "Policy doesn't allow"}}, exc.NovaForbidden,
     Action.ESCALATE),
    (404, {"itemNotFound": {"message": "Instance s1 could not be found."}}, exc.NovaNotFound,
     Action.ESCALATE),
])
def test_http_errors_are_typed(status, body, error, action):
    conn = Conn(Response(status, body, text="<html>oops</html>" if body is None else None))
    with pytest.raises(error) as e:
        NovaClient(conn).evacuate("s1")
    assert e.value.action is action and e.value.status == status
    assert "evacuate s1" in str(e.value)
    if body:
        assert next(iter(body.values()))["message"] in str(e.value)


@pytest.mark.parametrize("raised, error, action", [
    (ks_exc.ConnectFailure("refused"), exc.NovaUnavailable, Action.RETRY),
    (ks_exc.ConnectTimeout("slow"), exc.NovaUnavailable, Action.RETRY),
    (ks_exc.UnknownConnectionError("reset", None), exc.NovaUnavailable, Action.RETRY),
    (ks_exc.Unauthorized("bad password"), exc.NovaAuthError, Action.ESCALATE),
    (ks_exc.EndpointNotFound("no compute in RegionTwo"), exc.NovaConfigError, Action.ESCALATE),
    (ks_exc.InternalServerError("keystone down"), exc.NovaServerError, Action.RETRY),
    (ks_exc.Forbidden("no"), exc.NovaAuthError, Action.ESCALATE),
])
def test_transport_and_auth_failures_are_typed(raised, error, action):
    with pytest.raises(error) as e:
        NovaClient(Conn(raised)).services()
    assert e.value.action is action
    assert "bad password" not in str(e.value)


def test_policy_facts_share_one_image_read():
    servers = [dict(SERVER, id=f"s{i}", image={"id": "img"}) for i in range(3)]
    conn = Conn(Response(200, {"servers": servers}),
                Response(200, {"aggregates": [
                    {"name": "ha", "hosts": ["c1"], "metadata": {"instanceha:recovery": "notify"}},
                    {"name": "other", "hosts": ["c2"], "metadata": {"x": "y"}}]}),
                image=[Response(200, {"id": "img", "instanceha_recovery": "evacuate"})])
    nova = NovaClient(conn)
    facts = nova.instance_facts(nova.servers_on_host("c1"), "c1")
    assert len(facts) == 3 and len(conn.image.requests) == 1
    f = facts["s0"]
    assert f.image_properties["instanceha_recovery"] == "evacuate"
    assert f.aggregates == {"ha": {"instanceha:recovery": "notify"}}
    assert f.server_metadata == {"instanceha:recovery": "evacuate"}


def test_deleted_image_has_no_properties():
    conn = Conn(image=[Response(404, {"message": "gone"})])
    assert NovaClient(conn).image_properties("img") == {}


def _connection_made(tmp_path, monkeypatch, options: str) -> dict:
    """The keyword arguments nova_client() builds openstack's Connection with,
    from a [nova] section with ``options`` added."""
    from openstack import connection
    from oslo_config import cfg

    from instanceha.conf import nova as nova_conf

    made: dict = {}
    monkeypatch.setattr(connection, "Connection", lambda **kw: made.update(kw) or object())
    path = tmp_path / "nova.conf"
    path.write_text("[nova]\nauth_type = password\nauth_url = http://192.0.2.1:5000/v3\n"
                    "username = u\npassword = p\nproject_name = p\n" + options)
    conf = cfg.ConfigOpts()
    nova_conf.register_opts(conf)
    conf([], default_config_files=[str(path)])
    nova_conf.nova_client(conf)
    return made


def test_endpoint_override_bypasses_the_catalog(tmp_path, monkeypatch):
    """[nova] endpoint_override (keystoneauth's adapter option) reaches the
    compute proxy: the chaos suite points the controller at a fault proxy so."""
    from instanceha.conf import nova as nova_conf

    made = _connection_made(tmp_path, monkeypatch,
                            "endpoint_override = http://127.0.0.1:8999/v2.1\n")
    assert made["compute_endpoint_override"] == "http://127.0.0.1:8999/v2.1"
    assert "endpoint_override" in {o.dest for o in nova_conf.keystoneauth_opts()}


def test_the_connection_pool_holds_every_evacuation_in_flight(tmp_path, monkeypatch):
    """requests keeps 10 connections per endpoint by default; 32 concurrent
    evacuations discarded the rest ("Connection pool is full")."""
    from instanceha.conf import nova as nova_conf

    made = _connection_made(tmp_path, monkeypatch, "evacuation_concurrency = 32\n")
    for scheme in ("http://", "https://"):
        adapter = made["session"].session.get_adapter(scheme + "nova.example")
        assert adapter.poolmanager.connection_pool_kw["maxsize"] == 32 + nova_conf.POOL_SPARE


def test_host_aggregates_one_read_at_2_41_per_host():
    conn = Conn(Response(200, {"aggregates": [
        {"name": "rack1", "hosts": ["c1", "c2"], "metadata": {}},
        {"name": "gpu", "hosts": ["c2"], "metadata": {}},
        {"name": "empty", "hosts": None, "metadata": {}}]}))
    assert NovaClient(conn).host_aggregates() == {"c1": frozenset({"rack1"}),
                                                  "c2": frozenset({"rack1", "gpu"})}
    assert conn.compute.requests == [("GET", "/os-aggregates", "2.41", None)]


# -- writes: never re-sent by the transport; our own retry reads back first -------

def test_writes_have_no_transport_retries_reads_keep_theirs():
    conn = Conn(Response(200, {"services": [SERVICE]}), Response(200, {"service": SERVICE}),
                Response(202, None, text=""))
    nova = NovaClient(conn)
    nova.force_down("c1", "instanceha:v1:fenced")
    nova.evacuate("s1")
    assert [r[0] for r in conn.compute.requests] == ["GET", "PUT", "POST"]
    assert conn.compute.retries == [(None, None), (0, 0), (0, 0)]


def test_service_id_of_the_last_list_spares_a_read():
    conn = Conn(Response(200, {"services": [SERVICE]}), Response(200, {"service": SERVICE}),
                Response(200, {"service": SERVICE}))
    nova = NovaClient(conn)
    nova.services()
    nova.force_down("c1", "r1")
    nova.disable("c1", "r2")
    assert [r[0] for r in conn.compute.requests] == ["GET", "PUT", "PUT"]


def test_a_lost_answer_to_an_applied_write_is_not_sent_again():
    applied = dict(SERVICE, disabled_reason="r1", forced_down=True, status="disabled")
    conn = Conn(Response(200, {"services": [SERVICE]}), ks_exc.ConnectTimeout("read timed out"),
                Response(200, {"services": [applied]}))
    clock = FakeClock()
    nova = NovaClient(conn, clock=clock)
    nova.services()
    svc = nova.force_down("c1", "r1")
    assert clock.waits == [], "must not wait"
    assert svc.disabled_reason == "r1"
    assert [r[0] for r in conn.compute.requests] == ["GET", "PUT", "GET"]


def test_a_write_that_was_not_applied_is_sent_again_after_a_back_off():
    clock = FakeClock()
    conn = Conn(Response(200, {"services": [SERVICE]}), ks_exc.ConnectFailure("refused"),
                Response(200, {"services": [SERVICE]}), Response(200, {"service": SERVICE}))
    nova = NovaClient(conn, clock=clock)
    nova.services()
    nova.disable("c1", "new reason")
    assert [r[0] for r in conn.compute.requests] == ["GET", "PUT", "GET", "PUT"]
    assert clock.waits == [0.5]


def test_a_write_that_keeps_failing_is_raised_after_three_tries():
    conn = Conn(Response(200, {"services": [SERVICE]}),
                *[x for _ in range(2) for x in (ks_exc.ConnectTimeout("t"),
                                                 Response(200, {"services": [SERVICE]}))],
                ks_exc.ConnectTimeout("t"))
    nova = NovaClient(conn, clock=FakeClock())
    nova.services()
    with pytest.raises(exc.NovaUnavailable) as e:
        nova.disable("c1", "new reason")
    assert e.value.action is Action.RETRY
    assert [r[0] for r in conn.compute.requests].count("PUT") == 3


def test_a_recreated_service_is_looked_up_again():
    moved = dict(SERVICE, id="svc-2")
    conn = Conn(Response(200, {"services": [SERVICE]}),
                Response(404, {"itemNotFound": {"message": "Service svc-1 not found."}}),
                Response(200, {"services": [moved]}), Response(200, {"service": moved}))
    nova = NovaClient(conn)
    nova.services()
    nova.force_down("c1", "r")
    assert conn.compute.requests[-1][:2] == ("PUT", "/os-services/svc-2")


def test_bulk_records_of_a_host_since_the_failure():
    import datetime

    conn = Conn(Response(200, {"migrations": []}))
    since = datetime.datetime(2026, 11, 21, 17, 0, 5, 123, tzinfo=datetime.timezone.utc)
    NovaClient(conn).evacuations(source_host="c1", changes_since=since)
    assert conn.compute.requests[0][1] == ("/os-migrations?migration_type=evacuation"
                                           "&source_compute=c1"
                                           "&changes-since=2026-11-21T17:00:05")


def test_aggregates_and_images_are_cached_for_cache_ttl():
    clock = FakeClock(now=0.0)
    aggregates = Response(200, {"aggregates": [{"name": "ha", "hosts": ["c1"],
                                                "metadata": {}}]})
    conn = Conn(aggregates, aggregates, image=[Response(200, {"id": "img"})] * 2)
    nova = NovaClient(conn, cache_ttl=30, clock=clock)
    for _ in range(3):
        nova.aggregates_of("c1")
        nova.image_properties("img")
    assert len(conn.compute.requests) == 1 and len(conn.image.requests) == 1
    clock.now = 31.0
    nova.aggregates_of("c1")
    nova.image_properties("img")
    assert len(conn.compute.requests) == 2 and len(conn.image.requests) == 2


def test_every_call_is_recorded_by_path_template_and_scope():
    calls = ApiCalls(clock=FakeClock(now=0.0))
    conn = Conn(Response(200, {"services": [SERVICE]}), ks_exc.ConnectFailure("x"),
                Response(202, {}))
    nova = NovaClient(conn, recorder=calls)
    nova.services()
    with calls.scope("c1"):
        with pytest.raises(exc.NovaUnavailable):
            nova.services()
        nova.evacuate("5f1c2a3e-0000-4000-8000-00000000abcd")
    totals, _ = calls.snapshot()
    assert totals == {("compute", "GET", "/os-services", "200"): 1,
                      ("compute", "GET", "/os-services", "none"): 1,
                      ("compute", "POST", "/servers/{id}/action", "202"): 1}
    assert calls.count("c1") == 2 and calls.in_flight() == []


def test_a_failing_recorder_never_fails_the_call():
    class Broken:
        def begin(self, *a):
            raise RuntimeError("bug")

    nova = NovaClient(Conn(Response(200, {"services": [SERVICE]})), recorder=Broken())
    assert len(nova.services()) == 1


def test_a_refused_connection_is_unsent_a_timeout_is_not():
    nova = NovaClient(Conn(
        ks_exc.ConnectFailure("Unable to establish connection to http://nova: "
                              "[Errno 111] Connection refused"),
        ks_exc.ConnectTimeout("Request to http://nova timed out")))
    with pytest.raises(exc.NovaUnavailable) as refused:
        nova.evacuate("s1")
    with pytest.raises(exc.NovaUnavailable) as timed_out:
        nova.evacuate("s1")
    assert refused.value.unsent and not timed_out.value.unsent


def test_image_and_aggregates_are_not_read_for_servers_their_own_facts_decide():
    from instanceha.engine.instance_policy import Recovery as R
    from instanceha.engine.instance_policy import decide, decided_by_server_or_flavor

    decided = dict(SERVER, id="own", image={"id": "img1"})  # metadata: evacuate
    open_ = dict(SERVER, id="open", metadata={}, flavor={"extra_specs": {}},
                 image={"id": "img2"})
    conn = Conn(Response(200, {"servers": [decided]}),
                Response(200, {"servers": [decided, open_]}),
                Response(200, {"aggregates": []}),
                image=[Response(200, {"id": "img2", "instanceha_recovery": "notify"})])
    nova = NovaClient(conn)
    facts = nova.instance_facts(nova.servers_on_host("c1"), "c1",
                                enough=decided_by_server_or_flavor)
    assert conn.image.requests == [] and len(conn.compute.requests) == 1  # no aggregates
    assert decide(facts["own"], R.IGNORE).recovery is R.EVACUATE
    facts = nova.instance_facts(nova.servers_on_host("c1"), "c1",
                                enough=decided_by_server_or_flavor)
    assert len(conn.image.requests) == 1  # only the image of the undecided server
    assert decide(facts["open"], R.IGNORE).recovery is R.NOTIFY


def test_every_method_that_writes_to_nova_is_marked_mutating():
    import inspect

    from instanceha.compute import nova as nova_mod
    from instanceha.controller.stages.context import Guarded

    writes = re.compile(r'self\._(action|update_service)\(|"(POST|PUT|DELETE|PATCH)"')
    writing = {name for name, fn in inspect.getmembers(NovaClient, inspect.isfunction)
               if not name.startswith("_") and writes.search(inspect.getsource(fn))}
    assert writing == nova_mod.mutating_methods(NovaClient) == Guarded.MUTATING
    assert {"reboot", "start", "evacuate", "force_down"} <= writing


def test_guarded_verifies_leadership_before_each_mutating_call_only():
    from instanceha.controller.stages.context import Guarded

    calls = []

    class Nova:
        def __getattr__(self, name):
            return lambda *a, **k: calls.append(name)

    g = Guarded(Nova(), lambda: calls.append("verify"))
    g.reboot("s1")
    g.start("s1")
    g.server("s1")
    assert calls == ["verify", "reboot", "verify", "start", "server"]
