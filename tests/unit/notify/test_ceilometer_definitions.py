"""etc/ceilometer: every event type instanceha emits has a Ceilometer event
definition whose traits name real payload fields, and the event pipeline
hands every one of them to Aodh.

A new event type (or a renamed field) without its definition fails here: a
tenant's Aodh alarm could not see it. The functional test
(tests/functional/compute/test_end_to_end.py) runs these very files in a real
Ceilometer and Aodh.
"""

import fnmatch
import os

import pytest
import yaml

from instanceha.notify import events
from tests.unit.notify import samples

ETC = os.path.join(samples.TOP, "etc", "ceilometer")
ROUTING = ("project_id", "instance_id", "host", "policy", "incident_id", "reason")
"""The traits a tenant's alarm filters on, wherever the payload has the field."""
TRAIT_TYPES = {"text", "int", "float", "datetime"}
ENVELOPE = {"publisher_id"}
"""Fields of the notification outside the payload a trait may read."""


def _load(name):
    with open(os.path.join(ETC, name)) as f:
        return yaml.safe_load(f)


def definitions():
    """event_type -> {trait: (field, type)}; each event type named once."""
    out = {}
    for d in _load("event_definitions.yaml"):
        types = d["event_type"] if isinstance(d["event_type"], list) else [d["event_type"]]
        traits = {name: (t["fields"], t.get("type", "text")) for name, t in d["traits"].items()}
        for et in types:
            assert et not in out, f"{et} has two definitions"
            out[et] = traits
    return out


def _schema_type(prop):
    t = prop["type"]
    return {t} if isinstance(t, str) else set(t)


def test_every_event_type_has_exactly_one_definition_named_exactly():
    defs = definitions()
    missing = sorted(set(events.EVENT_TYPES) - set(defs))
    assert not missing, (f"no Ceilometer event definition for {missing}: add one to "
                         "etc/ceilometer/event_definitions.yaml (a tenant's Aodh alarm "
                         "cannot see an event type without it)")
    assert sorted(defs) == sorted(events.EVENT_TYPES), "a definition of an unknown event type"
    assert not [et for et in defs if any(c in et for c in "*?[")], "no wildcards"


@pytest.mark.parametrize("event_type", events.EVENT_TYPES)
def test_traits_name_fields_of_the_payload_with_a_fitting_type(event_type):
    traits = definitions()[event_type]
    props = samples.schema(event_type)["properties"]
    for name, (field, ttype) in traits.items():
        assert isinstance(field, str), f"{event_type} trait {name}: one field, not a list"
        assert ttype in TRAIT_TYPES, f"{event_type} trait {name}: type {ttype}"
        if field in ENVELOPE:
            continue
        assert field.startswith("payload."), f"{event_type} trait {name}: {field}"
        key = field[len("payload."):]
        assert key in props, f"{event_type} trait {name}: the payload has no {key!r}"
        types = _schema_type(props[key]) - {"null"}
        assert types not in ({"array"}, {"object"}), f"{event_type} {key}: not a scalar"
        want = {"boolean": "int", "integer": "int", "number": "float", "string": "text"}
        assert ttype == want[types.pop()], f"{event_type} trait {name}: type {ttype}"


@pytest.mark.parametrize("event_type", events.EVENT_TYPES)
def test_routing_fields_are_traits_of_the_same_name(event_type):
    traits = definitions()[event_type]
    props = samples.schema(event_type)["properties"]
    for key in ROUTING:
        if key in props:
            assert traits.get(key, (None,))[0] == f"payload.{key}", (event_type, key)
        else:
            assert key not in traits, (event_type, key)


def _convert(definition, message):
    """What Ceilometer's converter makes of a notification (plain dotted paths,
    which is all the definitions use; None drops the trait)."""
    out = {}
    for name, (field, ttype) in definition.items():
        value = message
        for part in field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            continue
        out[name] = {"int": int, "float": float}.get(ttype, str)(value)
    return out


@pytest.mark.parametrize("event", samples.lifecycle(), ids=lambda e: e.event_type)
def test_only_instance_events_carry_a_project(event):
    """Aodh routes an event to the alarms of its project_id trait's project:
    instance events to their owner, the others (no project) to no tenant."""
    message = {"publisher_id": "instanceha-controller.ctl-1", "event_type": event.event_type,
               "payload": event.payload_dict()}
    traits = _convert(definitions()[event.event_type], message)
    if event.event_type.startswith("instanceha.instance."):
        assert traits["project_id"] == event.payload["project_id"]
        assert traits["instance_id"] == event.payload["instance_id"]
        assert traits["policy"] == event.payload["policy"]
    else:
        assert "project_id" not in traits and "tenant_id" not in traits
    assert traits.get("incident_id") == event.payload["incident_id"]  # None: no trait
    assert traits["dry_run"] == 0
    assert traits["service"] == "instanceha-controller.ctl-1"


def test_the_pipeline_hands_every_event_type_to_aodh():
    pipeline = _load("event_pipeline.yaml")
    sinks = {s["name"]: s["publishers"] for s in pipeline["sinks"]}
    for et in events.EVENT_TYPES:
        routed = [p for src in pipeline["sources"]
                  if any(fnmatch.fnmatch(et, pat) for pat in src["events"])
                  for sink in src["sinks"] for p in sinks[sink]]
        assert "notifier://?topic=alarm.all" in routed, et


def test_the_drop_in_adds_instancehas_exchange_and_the_definitions_file():
    """Multi-valued: one line per exchange; it must keep listening to Nova's
    and add the exchange instanceha notifies on (oslo.messaging's default)."""
    section, exchanges, values = None, [], {}
    with open(os.path.join(ETC, "ceilometer.conf.d", "instanceha.conf")) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            key, value = (x.strip() for x in line.split("=", 1))
            if (section, key) == ("notification", "notification_control_exchanges"):
                exchanges.append(value)
            else:
                values[(section, key)] = value
    assert {"openstack", "nova"} <= set(exchanges) and len(set(exchanges)) == len(exchanges)
    assert values == {("event", "definitions_cfg_file"): "/etc/ceilometer/event_definitions.yaml"}
