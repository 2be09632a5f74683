"""The recovery stage table as a grid."""

import re

import pytest

from instanceha.engine import recovery
from instanceha.engine.marker import Marker, MarkerState
from instanceha.engine.model import Phase
from instanceha.engine.recovery import HostFacts, RecoveryPolicy, Stage, next_stage

P = RecoveryPolicy()
FENCED = Marker(MarkerState.FENCED, token=7)
RECOVERING = Marker(MarkerState.RECOVERING, token=7)
RECOVERED = Marker(MarkerState.RECOVERED, token=7)
HELD = Marker(MarkerState.HELD)
RESERVED = Marker(MarkerState.RESERVED)
GARBLED = Marker(MarkerState.UNKNOWN, raw="instanceha:zz")

GRID = [
    # phase, disabled, marker, nova_up, pending, failures -> stage
    (Phase.FAILED, False, None, False, 0, 1, Stage.FENCE),
    (Phase.FAILED, True, None, False, 0, 1, Stage.LEAVE_ALONE),  # operator's maintenance
    (Phase.HEALTHY, True, None, True, 0, 0, Stage.LEAVE_ALONE),
    (Phase.FAILED, True, FENCED, False, 0, 1, Stage.RECOVER),
    (Phase.FAILED, True, RECOVERING, False, 0, 1, Stage.RECOVER),
    (Phase.FAILED, True, RECOVERED, False, 0, 1, Stage.IDLE),
    (Phase.FAILED, True, HELD, False, 0, 1, Stage.IDLE),
    (Phase.FAILED, True, RESERVED, False, 0, 1, Stage.IDLE),
    (Phase.FAILED, True, GARBLED, False, 0, 1, Stage.HOLD),
    (Phase.HEALTHY, True, FENCED, True, 0, 1, Stage.HOLD),       # back mid-recovery
    (Phase.DEGRADED, True, RECOVERING, False, 0, 1, Stage.HOLD),
    (Phase.SUSPECT, True, FENCED, False, 0, 1, Stage.IDLE),      # wait for the detector
    (Phase.HEALTHY, True, RECOVERED, True, 0, 1, Stage.REENABLE),
    (Phase.HEALTHY, True, RECOVERED, False, 0, 1, Stage.IDLE),   # nova-compute not up yet
    (Phase.HEALTHY, True, RECOVERED, None, 0, 1, Stage.IDLE),
    (Phase.HEALTHY, True, RECOVERED, True, 2, 1, Stage.IDLE),    # clean-up pending
    (Phase.HEALTHY, True, RECOVERED, True, 0, 2, Stage.HOLD),    # flapping
    (Phase.DEGRADED, True, RECOVERED, True, 0, 1, Stage.IDLE),
    (Phase.STOPPED, True, RECOVERED, True, 0, 1, Stage.IDLE),
    (Phase.HEALTHY, False, None, True, 0, 0, Stage.IDLE),
    (Phase.SUSPECT, False, None, True, 0, 0, Stage.IDLE),
]


@pytest.mark.parametrize("phase,disabled,marker,nova_up,pending,failures,stage", GRID)
def test_grid(phase, disabled, marker, nova_up, pending, failures, stage):
    facts = HostFacts(phase=phase, disabled=disabled, marker=marker, nova_up=nova_up,
                      pending_migrations=pending, recent_failures=failures)
    d = next_stage(facts, P)
    assert d.stage is stage
    assert d.reason


def test_reenable_off_holds_a_repaired_host():
    facts = HostFacts(Phase.HEALTHY, True, RECOVERED, True, 0, 1)
    d = next_stage(facts, RecoveryPolicy(reenable=False))
    assert d.stage is Stage.HOLD and "re-enable is off" in d.reason


def test_every_stage_is_reachable():
    assert {row[-1] for row in GRID} | {Stage.HOLD} == set(Stage)


def test_docstring_names_every_stage():
    stages = set(re.findall(r"\s([A-Z_]{4,})\s*$", recovery.__doc__, re.M))
    assert {s.name for s in Stage} <= stages


@pytest.mark.parametrize("kwargs", [dict(flap_failures=0), dict(flap_window=-1)])
def test_policy_bounds(kwargs):
    with pytest.raises(ValueError):
        RecoveryPolicy(**kwargs)


def test_a_recovered_host_not_healthy_yet_says_what_it_waits_for():
    from instanceha.engine.marker import decode, encode

    m = decode(encode(MarkerState.RECOVERED, token=3))
    d = next_stage(HostFacts(Phase.DEGRADED, disabled=True, marker=m, nova_up=False),
                   RecoveryPolicy())
    assert d.stage is Stage.IDLE and "recovered, host DEGRADED" in d.reason
