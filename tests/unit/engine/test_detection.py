"""The failure detector's transition table, tested as a grid. No clock, no sleep."""

import dataclasses
import os
import re

import pytest

from instanceha.engine import detection
from instanceha.engine.detection import Signal, decide
from instanceha.engine.model import (
    ControllerObservation,
    DetectionPolicy,
    HostObservation,
    HostView,
    Phase,
    PolicyError,
    SecondSource,
    SessionState,
)

POLICY = DetectionPolicy(heartbeat_interval=0.5, heartbeat_stale_after=1.5, hung_after=2.0)
SETTLED = ControllerObservation(SessionState.CONNECTED, connected_for=60.0)
FRESH, STALE, HUNG = 0.3, 1.8, 2.5
UP = {"nova-compute": True, "libvirtd": True}
DOWN = {"nova-compute": False, "libvirtd": True}


def obs(member=True, age=FRESH, planned=False, services=UP, nova_up=None, inc=7, boot="b1"):
    return HostObservation(
        host="compute1",
        member=member,
        heartbeat_age=age,
        incarnation=inc if member else None,
        boot_id=boot,
        planned_stop=planned,
        services=services,
        nova_service_up=nova_up,
    )


# member, heartbeat age, planned stop, services, nova up  ->  phase, rule
GRID = [
    (True, FRESH, False, UP, None, Phase.HEALTHY, "alive"),
    (True, FRESH, False, UP, True, Phase.HEALTHY, "alive"),
    (True, FRESH, False, DOWN, None, Phase.DEGRADED, "service-down"),
    (True, FRESH, False, UP, False, Phase.DEGRADED, "service-down"),
    (True, FRESH, False, {}, None, Phase.HEALTHY, "alive"),
    (True, STALE, False, UP, None, Phase.SUSPECT, "heartbeat-stale"),
    (True, STALE, False, DOWN, None, Phase.SUSPECT, "heartbeat-stale"),
    (True, HUNG, False, UP, None, Phase.FAILED, "hung"),
    (True, HUNG, False, DOWN, False, Phase.FAILED, "hung"),
    (False, FRESH, False, UP, None, Phase.SUSPECT, "member-lost"),
    (False, STALE, False, UP, None, Phase.FAILED, "dead"),
    (False, HUNG, False, UP, None, Phase.FAILED, "dead"),
    (False, STALE, False, DOWN, False, Phase.FAILED, "dead"),
    (False, FRESH, True, UP, None, Phase.STOPPED, "planned-stop"),
    (False, HUNG, True, UP, None, Phase.STOPPED, "planned-stop"),
    # a planned-stop marker with a live member is stale: the agent rejoined
    (True, FRESH, True, UP, None, Phase.HEALTHY, "alive"),
    (True, HUNG, True, UP, None, Phase.FAILED, "hung"),
]


@pytest.mark.parametrize("member,age,planned,services,nova_up,phase,rule", GRID)
def test_grid(member, age, planned, services, nova_up, phase, rule):
    view = decide(None, obs(member, age, planned, services, nova_up), SETTLED, POLICY, now=100.0)
    assert (view.phase, view.rule) == (phase, rule)
    assert view.since == 100.0
    assert view.reason


@pytest.mark.parametrize(
    "ctl",
    [
        ControllerObservation(SessionState.SUSPENDED, connected_for=0.0),
        ControllerObservation(SessionState.LOST, connected_for=0.0),
        ControllerObservation(SessionState.CONNECTED, connected_for=0.0),
        ControllerObservation(SessionState.CONNECTED, connected_for=1.49),
    ],
    ids=["suspended", "lost", "just-connected", "not-settled"],
)
@pytest.mark.parametrize("member,age", [(False, STALE), (True, HUNG)], ids=["dead", "hung"])
def test_never_failed_while_controller_unsettled(ctl, member, age):
    view = decide(None, obs(member, age), ctl, POLICY, now=5.0)
    assert view.phase is Phase.SUSPECT
    assert view.rule == detection.HOLD_RULE
    assert "not trusted" in view.reason


def test_settles_after_stale_window_plus_grace():
    policy = DetectionPolicy(heartbeat_stale_after=1.5, hung_after=2.0, reconnect_grace=3.0)
    dead = obs(member=False, age=STALE)
    unsettled = ControllerObservation(SessionState.CONNECTED, connected_for=4.4)
    settled = ControllerObservation(SessionState.CONNECTED, connected_for=4.5)
    assert decide(None, dead, unsettled, policy, 1.0).phase is Phase.SUSPECT
    assert decide(None, dead, settled, policy, 1.0).phase is Phase.FAILED


def test_default_grace_outlasts_an_agent_backing_off_after_a_coordinator_outage():
    # quorum comes back at t=0 and the controller reconnects at once (the worst
    # case); an agent whose session expired meanwhile may sleep up to
    # reconnect_max_delay x 1.2 before it reconnects, then re-joins within one
    # heartbeat interval: until then it is no member and its heartbeat is stale
    max_delay, interval = 5.0, 0.5
    back = max_delay * (1 + detection.RECONNECT_JITTER) + interval
    grace = detection.default_reconnect_grace(max_delay, interval)
    policy = DetectionPolicy(heartbeat_interval=interval, heartbeat_stale_after=1.5,
                             hung_after=2.0, reconnect_grace=grace)
    no_grace = DetectionPolicy(heartbeat_interval=interval, heartbeat_stale_after=1.5,
                               hung_after=2.0)
    seen_failed_without = False
    view = view0 = decide(None, obs(), SETTLED, POLICY, now=-1.0)
    for step in range(int(back * 10)):
        t = step / 10
        ctl = ControllerObservation(SessionState.CONNECTED, connected_for=t)
        for member in (True, False):  # session kept (hung rule) or expired (dead rule)
            view = decide(view0, obs(member=member, age=t), ctl, policy, now=t)
            assert view.phase is not Phase.FAILED, (t, member, view.reason)
            seen_failed_without |= decide(view0, obs(member=member, age=t), ctl, no_grace,
                                          now=t).phase is Phase.FAILED
    assert seen_failed_without  # what happened before the grace had this default
    assert grace == 6.5


def test_failed_is_kept_while_unsettled_but_alive_wins():
    failed = decide(None, obs(False, STALE), SETTLED, POLICY, now=10.0)
    assert failed.phase is Phase.FAILED
    unsettled = ControllerObservation(SessionState.SUSPENDED, 0.0)
    again = decide(failed, obs(False, HUNG), unsettled, POLICY, now=11.0)
    assert again.phase is Phase.FAILED and again.since == 10.0
    back = decide(failed, obs(True, FRESH, inc=8), unsettled, POLICY, now=12.0)
    assert back.phase is Phase.HEALTHY


def test_since_is_kept_while_phase_unchanged_and_reset_on_change():
    v1 = decide(None, obs(True, FRESH), SETTLED, POLICY, now=1.0)
    v2 = decide(v1, obs(True, FRESH), SETTLED, POLICY, now=2.0)
    v3 = decide(v2, obs(True, STALE), SETTLED, POLICY, now=3.0)
    v4 = decide(v3, obs(True, HUNG), SETTLED, POLICY, now=4.0)
    assert [v.since for v in (v1, v2, v3, v4)] == [1.0, 1.0, 3.0, 4.0]
    assert [v.phase for v in (v2, v3, v4)] == [Phase.HEALTHY, Phase.SUSPECT, Phase.FAILED]


@pytest.mark.parametrize(
    "new_inc,new_boot,rejoined,rebooted",
    [(7, "b1", False, False), (9, "b1", True, False), (9, "b2", True, True)],
    ids=["same", "agent-restarted", "host-rebooted"],
)
def test_new_incarnation_between_two_looks_is_seen(new_inc, new_boot, rejoined, rebooted):
    before = decide(None, obs(inc=7, boot="b1"), SETTLED, POLICY, now=1.0)
    after = decide(before, obs(inc=new_inc, boot=new_boot), SETTLED, POLICY, now=2.0)
    assert (after.rejoined, after.rebooted) == (rejoined, rebooted)
    assert after.incarnation == new_inc
    if rebooted:
        assert "rebooted" in after.reason


def test_incarnation_remembered_while_absent():
    before = decide(None, obs(inc=7), SETTLED, POLICY, now=1.0)
    gone = decide(before, obs(member=False, age=STALE), SETTLED, POLICY, now=2.0)
    assert gone.incarnation == 7
    back = decide(gone, obs(inc=11), SETTLED, POLICY, now=3.0)
    assert back.rejoined and back.phase is Phase.HEALTHY


def test_signals():
    s = detection.signals(obs(member=False, age=HUNG, planned=True, services=DOWN), POLICY)
    assert s == {Signal.MEMBER_LOST, Signal.HEARTBEAT_STALE, Signal.HEARTBEAT_HUNG,
                 Signal.PLANNED_STOP, Signal.HOST_SILENT}
    # SERVICE_DOWN only counts for a host whose agent is alive
    assert Signal.SERVICE_DOWN in detection.signals(obs(services=DOWN), POLICY)


def _rendered_doc_table():
    """The table the documentation shows: the engine-table directive's output."""
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "..", "..", "doc", "source", "_ext",
                        "engine_tables.py")
    spec = importlib.util.spec_from_file_location("engine_tables", path)
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    return ext.rst_for("detection")


@pytest.mark.parametrize("text", [detection.__doc__, _rendered_doc_table()],
                         ids=["docstring", "architecture.rst"])
def test_documented_table_matches_rules(text):
    rows = re.findall(r"^(\S+)\s{2,}(\S.+?)\s{2,}(\w+)\s*$", text, re.M)
    rows = [r for r in rows if r[2] in {p.value for p in Phase} or r[0] == "rule"]
    table = [(n, s.strip(), p) for n, s, p in rows if n not in ("rule",) and not n.startswith("=")]
    expected = [
        (r.name, " + ".join(s.value for s in sorted(r.signals, key=_order)) or "(none)",
         r.phase.value)
        for r in detection.RULES
    ]
    assert table == expected


def _order(sig):
    return list(Signal).index(sig)


def test_every_phase_but_nothing_unreachable():
    phases = {r.phase for r in detection.RULES}
    assert phases == set(Phase)


def test_decide_all_drops_unobserved_hosts():
    prev = {"gone": HostView("gone", Phase.HEALTHY, 0.0, "x", "alive")}
    out = detection.decide_all(prev, [obs()], SETTLED, POLICY, now=1.0)
    assert list(out) == ["compute1"]


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(heartbeat_interval=0.5, heartbeat_stale_after=0.4), "heartbeat_stale_after"),
        (dict(heartbeat_interval=0.5, heartbeat_stale_after=0.5), "heartbeat_stale_after"),
        (dict(heartbeat_stale_after=1.5, hung_after=1.5), "hung_after"),
        (dict(heartbeat_interval=0.0), "heartbeat_interval"),
        (dict(reconnect_grace=-1.0), "reconnect_grace"),
    ],
)
def test_policy_rejects_contradictions(kwargs, field):
    with pytest.raises(PolicyError) as e:
        DetectionPolicy(**kwargs)
    assert e.value.field == field


# -- a leader cut off from the coordinator must notice before a host looks hung --

@pytest.mark.parametrize("hung_after, interval, session_timeout, refused", [
    (2.0, 0.5, 2.0, False),  # the defaults: 0.5 + 1.33 = 1.83 s
    (2.0, 0.5, 2.24, False),
    (2.0, 0.5, 2.25, True),  # 0.5 + 1.5 = 2.0: equal is refused
    (2.0, 0.5, 3.0, True),
    (1.9, 0.5, 2.0, False),
    (1.8, 0.5, 2.0, True),
    (2.0, 1.0, 2.0, True),   # a longer heartbeat interval eats the margin too
    (4.0, 1.0, 4.0, False),  # Debian's tickTime 2000 grants 4 s: hung_after must exceed 3.67
])
def test_hung_after_must_outlast_a_cut_off_leaders_notice(hung_after, interval,
                                                          session_timeout, refused):
    if not refused:
        detection.check_cut_off_leader(hung_after, interval, session_timeout)
        return
    with pytest.raises(PolicyError) as e:
        detection.check_cut_off_leader(hung_after, interval, session_timeout)
    assert (e.value.field, e.value.other) == ("hung_after", "session_timeout")
    window = detection.cut_off_window(session_timeout, interval)
    assert f"longer than {window:.3f} s" in str(e.value)


def test_the_refusal_says_which_session_timeout_would_do():
    with pytest.raises(PolicyError) as e:
        detection.check_cut_off_leader(2.0, 0.5, 3.0)
    assert "session_timeout shorter than 2.25 s" in e.value.reason
    with pytest.raises(PolicyError) as e:  # no session timeout helps: none suggested
        detection.check_cut_off_leader(0.5, 0.5, 1.0)
    assert "shorter than" not in e.value.reason



# -- the second source: an agent's death is not the host's death -----------------

A, S, ASK, NONE = (SecondSource.ANSWERS, SecondSource.SILENT, SecondSource.ASKING,
                   SecondSource.NONE)


def obs2(member=False, age=STALE, second=NONE, nova_up=None, planned=False):
    return dataclasses.replace(obs(member, age, planned=planned, nova_up=nova_up),
                               second_source=second)


# member, age, second source, Nova's view  ->  phase, rule
SECOND_GRID = [
    (False, STALE, ASK, None, Phase.SUSPECT, "asking"),
    (False, HUNG, ASK, None, Phase.SUSPECT, "asking"),
    (False, STALE, A, None, Phase.AGENT_DOWN, "agent-dead"),
    (False, HUNG, A, True, Phase.AGENT_DOWN, "agent-dead"),
    (False, STALE, S, None, Phase.FAILED, "dead"),
    (False, STALE, NONE, None, Phase.FAILED, "dead"),  # no second source: as before
    (False, STALE, A, False, Phase.FAILED, "dead-nova-down"),  # the kernel answers only
    (False, STALE, ASK, False, Phase.FAILED, "dead-nova-down"),  # no need to wait
    (False, FRESH, ASK, None, Phase.SUSPECT, "member-lost"),
    (True, STALE, ASK, None, Phase.SUSPECT, "heartbeat-stale"),
    (True, STALE, A, None, Phase.SUSPECT, "heartbeat-stale"),
    (True, HUNG, ASK, None, Phase.SUSPECT, "asking-hung"),
    (True, HUNG, A, None, Phase.AGENT_DOWN, "agent-hung"),
    (True, HUNG, S, None, Phase.FAILED, "hung"),
    (True, HUNG, A, False, Phase.FAILED, "hung-nova-down"),
    (True, FRESH, A, None, Phase.HEALTHY, "alive"),
]


@pytest.mark.parametrize("member,age,second,nova_up,phase,rule", SECOND_GRID)
def test_second_source_grid(member, age, second, nova_up, phase, rule):
    view = decide(None, obs2(member, age, second, nova_up), SETTLED, POLICY, now=100.0)
    assert (view.phase, view.rule) == (phase, rule)


def test_agent_down_reads_agent_dead_host_alive():
    view = decide(None, obs2(second=A), SETTLED, POLICY, now=1.0)
    assert view.reason.startswith("agent dead, host alive") and "not fenced" in view.reason
    silent = decide(None, obs2(second=S), SETTLED, POLICY, now=1.0)
    assert "does not answer the second source either" in silent.reason


def test_a_failed_host_stays_failed_whatever_the_second_source_says_later():
    failed = decide(None, obs2(second=S), SETTLED, POLICY, now=1.0)
    for second in (A, ASK):
        again = decide(failed, obs2(second=second), SETTLED, POLICY, now=2.0)
        assert (again.phase, again.since) == (Phase.FAILED, 1.0)
    back = decide(failed, obs(True, FRESH, inc=8), SETTLED, POLICY, now=3.0)
    assert back.phase is Phase.HEALTHY


def test_agent_down_becomes_failed_when_the_host_falls_silent_or_nova_says_down():
    held = decide(None, obs2(second=A), SETTLED, POLICY, now=1.0)
    assert decide(held, obs2(second=S), SETTLED, POLICY, now=9.0).phase is Phase.FAILED
    assert decide(held, obs2(second=A, nova_up=False), SETTLED, POLICY,
                  now=9.0).phase is Phase.FAILED
    assert decide(held, obs(True, FRESH, inc=8), SETTLED, POLICY, now=9.0).phase \
        is Phase.HEALTHY


def test_never_failed_while_unsettled_even_when_silent():
    unsettled = ControllerObservation(SessionState.CONNECTED, connected_for=0.1)
    view = decide(None, obs2(second=S), unsettled, POLICY, now=1.0)
    assert (view.phase, view.rule) == (Phase.SUSPECT, detection.HOLD_RULE)


@pytest.mark.parametrize("o,previous,asks", [
    (obs(), None, False),                                   # healthy
    (obs(True, STALE), None, True),                         # stall reported
    (obs(False, FRESH), None, True),                        # membership lost
    (obs(False, STALE), None, True),
    (obs(False, STALE, planned=True), None, False),         # planned stop
    (obs(True, FRESH, services=DOWN), None, False),         # DEGRADED: agent alive
    (obs(False, STALE), HostView("compute1", Phase.FAILED, 0.0, "x", "dead"), False),
])
def test_which_hosts_ask_the_second_source(o, previous, asks):
    assert detection.asks_second_source(o, POLICY, previous) is asks


def test_lost_since_counts_from_the_first_dead_look():
    asking = decide(None, obs2(second=ASK), SETTLED, POLICY, now=10.0)
    failed = decide(asking, obs2(second=S), SETTLED, POLICY, now=10.5)
    assert (failed.since, failed.lost_since) == (10.5, 10.0)
    held = decide(asking, obs2(second=A), SETTLED, POLICY, now=10.5)
    assert held.lost_since is None  # AGENT_DOWN: alive by the second source
    again = decide(held, obs2(second=S), SETTLED, POLICY, now=20.0)
    assert again.lost_since == 20.0
    assert decide(again, obs(), SETTLED, POLICY, now=21.0).lost_since is None
