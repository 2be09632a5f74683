"""Event types are stable, every builder's payload matches its JSON Schema."""

import json
import os

import jsonschema
import pytest

from instanceha.notify import events
from tests.unit.notify import samples

# The public names. A failing assertion here means a consumer-visible rename:
# don't; add a new event type instead.
STABLE = [
    "instanceha.host.failed",
    "instanceha.host.fence.start",
    "instanceha.host.fence.end",
    "instanceha.host.fence.error",
    "instanceha.host.recovery.start",
    "instanceha.host.recovery.end",
    "instanceha.host.recovery.error",
    "instanceha.instance.evacuate.start",
    "instanceha.instance.evacuate.end",
    "instanceha.instance.evacuate.error",
    "instanceha.instance.recovery_required",
    "instanceha.host.restored",
    "instanceha.safety.hold",
    "instanceha.instance.failed",
    "instanceha.instance.evacuate.deferred",
    "instanceha.capacity.changed",
]


def test_event_type_names_are_stable():
    assert list(events.EVENT_TYPES) == STABLE


def test_one_schema_per_event_type_and_no_other():
    files = sorted(f[: -len(".schema.json")] for f in os.listdir(samples.SCHEMA_DIR)
                   if f.endswith(".schema.json"))
    assert files == sorted(STABLE)


@pytest.mark.parametrize("event_type", STABLE)
def test_schema_is_a_valid_schema_and_names_its_event(event_type):
    s = samples.schema(event_type)
    jsonschema.validators.validator_for(s).check_schema(s)
    assert s["title"] == event_type
    assert s["additionalProperties"] is False
    assert set(s["required"]) == set(s["properties"])
    assert events.PRIORITIES[event_type] in s["description"]


def test_the_lifecycle_covers_every_event_type():
    assert {e.event_type for e in samples.lifecycle()} == set(STABLE)


@pytest.mark.parametrize("event", samples.lifecycle(), ids=lambda e: e.event_type)
def test_every_payload_matches_its_schema(event):
    payload = event.payload_dict()
    samples.validate(event.event_type, payload)
    assert payload["version"] == events.PAYLOAD_VERSION
    assert event.priority == events.PRIORITIES[event.event_type]
    json.dumps(payload)  # JSON-ready as is


@pytest.mark.parametrize("event", [e for e in samples.lifecycle()
                                   if e.event_type.startswith("instanceha.instance.")],
                         ids=lambda e: e.event_type)
def test_instance_events_carry_what_routing_to_the_tenant_needs(event):
    p = event.payload
    assert p["project_id"] and p["instance_id"] and p["host"] == samples.HOST
    assert p["policy"] in ("evacuate", "notify", "restart")


def test_instance_failed_carries_the_hypervisor_detail_and_refuses_bad_facts():
    kw = dict(host="h", incident_id="i", instance_id="vm", project_id="p", policy="restart",
              reason="watchdog", detail={"event": "watchdog", "action": "none"},
              action="reboot", note="hard reboot (restart 1 of at most 3 within 3600 s)")
    payload = events.instance_failed(**kw).payload_dict()
    samples.validate(events.INSTANCE_FAILED, payload)
    assert payload["detail"] == {"event": "watchdog", "action": "none"}
    assert events.PRIORITIES[events.INSTANCE_FAILED] == "ERROR"
    for bad in ({"policy": "evacuate"}, {"reason": "exploded"}, {"action": "evacuate"},
                {"detail": {"nested": {"a": 1}}}, {"detail": "watchdog"}, {"note": ""},
                {"project_id": ""}):
        with pytest.raises(ValueError):
            events.instance_failed(**dict(kw, **bad))
    with pytest.raises(jsonschema.ValidationError):
        samples.validate(events.INSTANCE_FAILED, {**payload, "reason": "bored"})


def test_schemas_are_not_vacuous():
    good = events.recovery_required(host="h", incident_id="i", instance_id="vm",
                                    project_id="p").payload_dict()
    for broken in ({k: v for k, v in good.items() if k != "project_id"},
                   {**good, "surprise": 1},
                   {**good, "policy": "reboot"},
                   {**good, "version": "2.0"}):
        with pytest.raises(jsonschema.ValidationError):
            samples.validate(events.RECOVERY_REQUIRED, broken)


@pytest.mark.parametrize("build", [
    lambda: events.host_failed(host="", reason="r", incident_id="i"),
    lambda: events.host_failed(host="h", reason="r", incident_id=None),
    lambda: events.fence_start(host="h", driver="ipmi", incident_id="i", attempt=0),
    lambda: events.fence_end(host="h", driver="ipmi", incident_id="i", duration=-1),
    lambda: events.fence_end(host="h", driver="ipmi", incident_id="i", level=0),
    lambda: events.fence_end(host="h", driver="ipmi", incident_id="i", devices=[""]),
    lambda: events.fence_error(host="h", driver="d", incident_id="i", error="e", retrying="no"),
    lambda: events.recovery_start(host="h", incident_id="i", evacuate=-1, notify=0),
    lambda: events.recovery_end(host="h", incident_id="i", evacuated=True, failed=0, notified=0),
    lambda: events.recovery_required(host="h", incident_id="i", instance_id="vm",
                                     project_id="p", policy="ignore"),
    lambda: events.evacuate_end(host="h", incident_id="i", instance_id="vm", project_id="",
                                target_host="t"),
    lambda: events.safety_hold(rule="r", reason="x", hosts=[""], limit=1, observed=2),
    lambda: events.safety_hold(rule="r", reason="x", hosts=[], limit="1", observed=2),
    lambda: events.Event("instanceha.host.exploded", "INFO", {}),
], ids=range(14))
def test_builders_refuse_bad_facts(build):
    with pytest.raises(ValueError):
        build()


def test_events_are_immutable():
    e = events.host_failed(host="h", reason="r", incident_id="i")
    with pytest.raises(TypeError):
        e.payload["host"] = "other"
    d = e.payload_dict()
    d["host"] = "other"
    assert e.payload["host"] == "h"


def test_safety_hold_without_incident_is_valid():
    e = events.safety_hold(rule="max_failed_hosts", reason="r", hosts=("a", "b"), limit=1,
                           observed=2.0)
    samples.validate(e.event_type, e.payload_dict())
    assert e.payload_dict()["hosts"] == ["a", "b"] and e.payload["incident_id"] is None


def test_every_step_has_one_idempotency_key_and_a_copy_has_the_same():
    kw = dict(host="compute1", incident_id="compute1-7")
    failed = events.host_failed(reason="dead", **kw).payload["idempotency_key"]
    assert failed == "compute1-7/host.failed"
    assert events.host_failed(reason="other words", **kw).payload["idempotency_key"] == failed
    starts = [events.fence_start(driver="ipmi", attempt=n, **kw).payload["idempotency_key"]
              for n in (1, 2)]
    assert starts == ["compute1-7/host.fence.start#1", "compute1-7/host.fence.start#2"]
    error = events.fence_error(driver="ipmi", error="x", retrying=True, attempt=2, **kw)
    assert (error.payload["idempotency_key"], error.payload["attempt"]) == (
        "compute1-7/host.fence.error#2", 2)
    batches = [events.recovery_start(evacuate=1, notify=0, batch=n, **kw)
               .payload["idempotency_key"] for n in (1, 2)]
    assert batches == ["compute1-7/host.recovery.start", "compute1-7/host.recovery.start#2"]
    per_instance = {events.evacuate_end(instance_id=vm, project_id="p", target_host="c2", **kw)
                    .payload["idempotency_key"] for vm in ("vm-a", "vm-b")}
    assert per_instance == {"compute1-7/instance.evacuate.end/vm-a",
                            "compute1-7/instance.evacuate.end/vm-b"}
    other = events.host_failed(reason="dead", host="compute1", incident_id="compute1-9")
    assert other.payload["idempotency_key"] != failed  # another incident, another step


def test_a_safety_hold_is_keyed_by_the_hold():
    kw = dict(rule="max_failed_hosts", reason="r", hosts=["c1", "c2"], limit=1, observed=2)
    a, b = (events.safety_hold(hold_id=h, **kw).payload["idempotency_key"]
            for h in ("1700000000.000", "1700000600.000"))
    assert a == "safety/safety.hold#1700000000.000" and a != b
    same = {events.safety_hold(**kw).payload["idempotency_key"] for _ in range(2)}
    assert len(same) == 1
