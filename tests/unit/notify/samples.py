"""One sample of every event, in the order of the life of a failure, and the
schema checker the unit and functional tests share."""

import functools
import json
import os

import jsonschema

from instanceha.notify import events

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SCHEMA_DIR = os.path.join(TOP, "doc", "notifications")

INCIDENT = "5f0c3d52-4b7e-4d7c-9d43-0a4c1d8e2b11"
HOST = "compute1"


def lifecycle(instances=2, incident=INCIDENT, host=HOST):
    """Every event of one failure with ``instances`` evacuated and
    ``instances`` notify-only servers, in the order the controller emits them."""
    vm = [f"00000000-0000-4000-8000-{i:012d}" for i in range(2 * instances)]
    out = [
        events.host_failed(host=host, reason="membership lost and heartbeat stale",
                           incident_id=incident),
        events.fence_start(host=host, driver="ipmi", incident_id=incident),
        events.fence_error(host=host, driver="ipmi", incident_id=incident,
                           error="BMC 127.0.0.1:623 timed out", retrying=True),
        events.fence_start(host=host, driver="ipmi", incident_id=incident, attempt=2),
        events.fence_end(host=host, driver="fence_agent", incident_id=incident, duration=1.25,
                         level=2, devices=["fence_apc_snmp at pdu-a plug 3",
                                           "fence_apc_snmp at pdu-b plug 3"]),
        events.recovery_start(host=host, incident_id=incident, evacuate=instances,
                              notify=instances),
    ]
    for i in range(instances):
        out.append(events.recovery_required(host=host, incident_id=incident,
                                            instance_id=vm[instances + i],
                                            project_id="tenant-b"))
    for i in range(instances):
        kw = dict(host=host, incident_id=incident, instance_id=vm[i], project_id="tenant-a")
        out.append(events.evacuate_start(**kw))
        if i == 0:
            out.append(events.evacuate_error(**kw, error="No valid host", retrying=True))
            out.append(events.evacuate_start(**kw))
        out.append(events.evacuate_end(**kw, target_host="compute2", duration=3.5))
    out.append(events.evacuate_deferred(
        host=host, incident_id=incident, instance_id=vm[0], project_id="tenant-a",
        priority=200, reason="no room: needs 4096 MEMORY_MB, 2 VCPU; the most free on a host "
        "of zone az1: 1024 MEMORY_MB"))
    out += [
        events.recovery_end(host=host, incident_id=incident, evacuated=instances, failed=0,
                            notified=instances, duration=9.0),
        events.recovery_error(host=host, incident_id=incident, error="Nova API returned 503",
                              retrying=True),
        events.safety_hold(rule="max_failed_hosts", reason="3 of 4 hosts look failed",
                           hosts=["compute2", "compute3", "compute4"], limit=1, observed=3),
        events.host_restored(host=host, incident_id=incident,
                             reason="agent rejoined with a new boot id; nova-compute up"),
        events.instance_failed(host=host, incident_id=f"{host}-{vm[0][:8]}-7",
                               instance_id=vm[0], project_id="tenant-a", policy="restart",
                               reason="stopped_failed",
                               detail={"event": "lifecycle", "state": "stopped",
                                       "detail": "failed", "domain": "instance-00000001",
                                       "source": "event"},
                               action="reboot", note="hard reboot (restart 1 of at most 3 "
                               "within 3600 s)"),
        events.capacity_changed(
            covered=False, previous=True, tolerance="hosts", hosts=1,
            failures=[{"name": "host compute1", "without_room": 2,
                       "short": {"MEMORY_MB": 2048}}], uncovered=1,
            shortfall={"MEMORY_MB": 2048}, reason="host compute1: 2 server(s) without room",
            change_id="1765036800"),
    ]
    return out


@functools.cache
def schema(event_type):
    with open(os.path.join(SCHEMA_DIR, f"{event_type}.schema.json")) as f:
        return json.load(f)


def validate(event_type, payload):
    """Raise jsonschema.ValidationError unless ``payload`` matches its schema."""
    s = schema(event_type)
    jsonschema.validators.validator_for(s)(s, format_checker=jsonschema.FormatChecker()
                                           ).validate(payload)


ENVELOPE_KEYS = {"message_id", "publisher_id", "event_type", "priority", "payload", "timestamp"}
