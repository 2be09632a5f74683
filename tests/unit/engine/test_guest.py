"""The guest-failure decision (engine/guest.py) and its policy precedence."""

import pytest

from instanceha.engine import guest as g
from instanceha.engine.instance_policy import GuestPolicy, InstanceFacts, Source, decide_guest
from instanceha.engine.model import Phase

NOW = 10_000.0
S = g.GuestSettings(max_restarts=2, window=600, task_state_wait=60, coalesce=5)


def event(kind=g.GuestFailure.WATCHDOG, **detail):
    return g.GuestEvent("c1", "vm-1", kind, NOW - 1, detail or {"action": "none"})


def server(**kw):
    return g.ServerFacts(**dict(dict(host="c1", vm_state="active", task_state=None), **kw))


def decide(ev=None, policy=GuestPolicy.RESTART, srv="default", phase="HEALTHY", restarts=(),
           waited=0.0):
    return g.decide(ev or event(), policy, server() if srv == "default" else srv,
                    Phase(phase) if phase else None, restarts, S, NOW, waited)


def test_active_server_is_hard_rebooted_and_the_owner_told():
    step = decide()
    assert (step.action, step.outcome, step.notify) == (
        g.GuestAction.REBOOT, g.GuestOutcome.RESTARTED, True)
    assert "restart 1 of at most 2 within 600 s" in step.reason


def test_server_nova_already_stopped_is_started():
    assert decide(srv=server(vm_state="stopped")).action is g.GuestAction.START


def test_owner_stopped_server_is_left_alone():
    step = decide(srv=server(vm_state="stopped", owner_stopped=True))
    assert (step.action, step.outcome, step.notify) == (
        g.GuestAction.NONE, g.GuestOutcome.LEFT_ALONE, False)


def test_task_state_waits_then_gives_up_and_says_so():
    busy = server(task_state="rebooting_hard")
    assert decide(srv=busy, waited=59).action is g.GuestAction.WAIT
    step = decide(srv=busy, waited=61)
    assert (step.action, step.outcome, step.notify) == (
        g.GuestAction.NONE, g.GuestOutcome.GAVE_UP, True)


def test_at_most_max_restarts_within_the_window_then_gives_up():
    assert decide(restarts=[NOW - 700, NOW - 10]).action is g.GuestAction.REBOOT  # 1 in window
    step = decide(restarts=[NOW - 20, NOW - 10])
    assert (step.outcome, step.notify) == (g.GuestOutcome.GAVE_UP, True)
    assert "already restarted 2 time(s) within 600 s (max 2)" in step.reason


def test_a_restart_since_the_failure_is_not_repeated():
    step = decide(srv=server(restarted_since="reboot by admin at ..."))
    assert (step.action, step.outcome) == (g.GuestAction.NONE, g.GuestOutcome.ALREADY)


@pytest.mark.parametrize("phase,action,outcome", [
    ("FAILED", g.GuestAction.NONE, g.GuestOutcome.HOST_FAILING),
    ("SUSPECT", g.GuestAction.WAIT, g.GuestOutcome.WAITING),
    ("DEGRADED", g.GuestAction.REBOOT, g.GuestOutcome.RESTARTED),
    (None, g.GuestAction.REBOOT, g.GuestOutcome.RESTARTED),
])
def test_a_failing_host_is_left_to_the_host_recovery(phase, action, outcome):
    step = decide(phase=phase)
    assert (step.action, step.outcome) == (action, outcome)


def test_a_host_suspect_for_too_long_is_left_to_the_host_recovery():
    assert decide(phase="SUSPECT", waited=61).outcome is g.GuestOutcome.HOST_FAILING


def test_unknown_or_moved_servers_are_not_touched():
    assert decide(srv=None).outcome is g.GuestOutcome.NOT_AN_INSTANCE
    assert decide(srv=server(host="c2")).outcome is g.GuestOutcome.MOVED


@pytest.mark.parametrize("policy,action,outcome,notify", [
    (GuestPolicy.NOTIFY, g.GuestAction.NOTIFY, g.GuestOutcome.NOTIFIED, True),
    (GuestPolicy.IGNORE, g.GuestAction.NONE, g.GuestOutcome.IGNORED, False),
])
def test_notify_and_ignore_never_touch_nova(policy, action, outcome, notify):
    step = decide(policy=policy, srv=server(task_state="spawning"))
    assert (step.action, step.outcome, step.notify) == (action, outcome, notify)


@pytest.mark.parametrize("kind,detail", [(g.GuestFailure.WATCHDOG, {"action": "reset"}),
                                         (g.GuestFailure.IO_ERROR, {"action": "report"})])
def test_no_restart_when_the_hypervisor_or_the_guest_copes(kind, detail):
    step = decide(ev=event(kind, **detail))
    assert (step.action, step.outcome, step.notify) == (
        g.GuestAction.NONE, g.GuestOutcome.NOT_NEEDED, True)


@pytest.mark.parametrize("vm_state", ["shelved_offloaded", "deleted", "rescued", "building"])
def test_states_a_restart_does_not_apply_to(vm_state):
    assert decide(srv=server(vm_state=vm_state)).outcome is g.GuestOutcome.LEFT_ALONE


def test_event_records_are_checked():
    ok = {"host": "c1", "instance_id": "vm", "kind": "crashed", "at": 1.0,
          "detail": {"event": "lifecycle"}}
    assert g.GuestEvent.from_record(ok).detail == {"event": "lifecycle"}
    for bad in ({"host": ""}, {"instance_id": None}, {"kind": "bored"}, {"at": True}):
        with pytest.raises(ValueError):
            g.GuestEvent.from_record({**ok, **bad})


def test_settings_are_checked():
    with pytest.raises(ValueError):
        g.GuestSettings(max_restarts=0)


# -- the policy's precedence (the same places as the host policy) -----------------------

def test_guest_policy_precedence_server_flavor_image_aggregate_default():
    full = InstanceFacts(server_metadata={"instanceha:guest": "notify"},
                         flavor_extra_specs={"instanceha:guest": "restart"},
                         image_properties={"instanceha_guest": "ignore"},
                         aggregates={"a": {"instanceha:guest": "restart"}})
    assert decide_guest(full, GuestPolicy.IGNORE).source is Source.SERVER
    no_server = InstanceFacts(**{**full.__dict__, "server_metadata": {}})
    assert decide_guest(no_server, GuestPolicy.IGNORE).policy is GuestPolicy.RESTART
    only_image = InstanceFacts(image_properties={"instanceha_guest": "Notify"},
                               aggregates={"a": {"instanceha:guest": "restart"}})
    d = decide_guest(only_image, GuestPolicy.IGNORE)
    assert (d.policy, d.source) == (GuestPolicy.NOTIFY, Source.IMAGE)
    d = decide_guest(InstanceFacts(), GuestPolicy.NOTIFY)
    assert (d.policy, d.source, d.reason) == (GuestPolicy.NOTIFY, Source.DEFAULT,
                                              "notify: cloud-wide default")


def test_guest_and_host_policies_are_independent_keys():
    facts = InstanceFacts(server_metadata={"instanceha:recovery": "evacuate"})
    assert decide_guest(facts, GuestPolicy.IGNORE).source is Source.DEFAULT


def test_masakari_switch_covers_guest_failures_and_invalid_values_are_skipped():
    d = decide_guest(InstanceFacts(server_metadata={"instanceha:guest": "sometimes",
                                                    "HA_Enabled": "True"}), GuestPolicy.IGNORE)
    assert d.policy is GuestPolicy.RESTART
    assert "invalid server metadata instanceha:guest='sometimes' ignored" in d.reason


def test_disagreeing_aggregates_the_strongest_wins():
    d = decide_guest(InstanceFacts(aggregates={"a": {"instanceha:guest": "notify"},
                                               "b": {"instanceha:guest": "restart"}}),
                     GuestPolicy.IGNORE)
    assert d.policy is GuestPolicy.RESTART and "aggregates disagree" in d.reason
