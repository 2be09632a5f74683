"""API call accounting: path templates, scopes carried into pool threads,
what is in flight."""

import concurrent.futures

from instanceha.compute.calls import ApiCalls, submit, template
from tests.unit.clock import FakeClock


def test_path_templates_drop_the_query_and_object_ids():
    assert template("/servers/5f1c2a3e-0000-4000-8000-00000000abcd/action") == \
        "/servers/{id}/action"
    assert template("/os-migrations?migration_type=evacuation&source_compute=c1") == \
        "/os-migrations"
    assert template("/os-services/42") == "/os-services/{id}"
    assert template("/servers/detail?all_tenants=1&host=compute1&limit=1000") == \
        "/servers/detail"


def test_scope_follows_work_submitted_to_a_pool_and_restarts_per_incident():
    calls = ApiCalls(FakeClock(now=100.0))

    def request(path):
        calls.end(calls.begin("compute", "GET", path), 200)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        with calls.scope("c1"):
            request("/os-services")
            submit(pool, request, "/servers/detail").result()
            pool.submit(request, "/os-aggregates").result()  # plain submit: no scope
        request("/os-services")  # outside any scope
    assert calls.count("c1") == 2
    totals, _ = calls.snapshot()
    assert sum(totals.values()) == 4
    calls.restart("c1")
    assert calls.count("c1") == 0


def test_waiting_on_names_the_oldest_slow_request_of_the_scope():
    clock = FakeClock(now=100.0)
    calls = ApiCalls(clock)
    with calls.scope("c1"):
        slow = calls.begin("compute", "GET", "/os-migrations?source_compute=c1")
        clock.now += 0.5
        calls.begin("compute", "POST", "/servers/5f1c2a3e-0000-4000-8000-00000000abcd/action")
    with calls.scope("c2"):
        calls.begin("compute", "GET", "/servers/detail")
    assert calls.waiting_on("c1") is None  # not slow yet
    clock.now += 4.0
    assert calls.waiting_on("c1") == "compute GET /os-migrations for 4.5 s"
    calls.end(slow, None)
    assert calls.waiting_on("c1") == "compute POST /servers/{id}/action for 4.0 s"
    totals, seconds = calls.snapshot()
    assert totals == {("compute", "GET", "/os-migrations", "none"): 1}
    assert seconds == {("compute", "GET", "/os-migrations"): 4.5}
