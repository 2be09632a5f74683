"""Choosing a reserved spare host: pure rules, no Nova."""

import pytest

from instanceha.engine.marker import Marker, MarkerState
from instanceha.engine.model import Phase
from instanceha.engine.reserved import HostInfo, Match, choose_spare, resume_spare

RESERVED = Marker(MarkerState.RESERVED)
FENCED = Marker(MarkerState.FENCED, token=7)


def spare(host, zone="az1", aggregates=(), up=True, phase=None, forced=False,
          marker=RESERVED, disabled=True):
    return HostInfo(host=host, zone=zone, aggregates=frozenset(aggregates), disabled=disabled,
                    marker=marker, nova_up=up, forced_down=forced, phase=phase)


FAILED = HostInfo("c1", zone="az1", aggregates=frozenset({"rack1", "ssd"}), disabled=True,
                  marker=FENCED, forced_down=True)


def test_no_host_reserved():
    hosts = [FAILED, spare("c2", marker=None, disabled=False)]
    choice = choose_spare(FAILED, hosts, Match.NONE)
    assert choice.host is None and "no host is reserved" in choice.reason


@pytest.mark.parametrize("other, why", [
    (dict(up=False), "nova-compute down"),
    (dict(forced=True), "nova-compute down"),
    (dict(phase=Phase.FAILED), "agent FAILED"),
    (dict(phase=Phase.SUSPECT), "agent SUSPECT"),
    (dict(phase=Phase.DEGRADED), "agent DEGRADED"),
    (dict(marker=Marker(MarkerState.HELD)), "no host is reserved"),
    (dict(marker=None), "no host is reserved"),  # disabled by an operator: not ours
    (dict(disabled=False), "no host is reserved"),  # enabled: already in service
])
def test_unusable_spares_are_never_chosen_and_the_reason_says_why(other, why):
    choice = choose_spare(FAILED, [FAILED, spare("c3", **other)], Match.NONE)
    assert choice.host is None and why in choice.reason


def test_a_healthy_or_unmonitored_spare_is_chosen_and_must_be_enabled():
    for phase in (None, Phase.HEALTHY):
        choice = choose_spare(FAILED, [FAILED, spare("c3", phase=phase)], Match.NONE)
        assert (choice.host, choice.enable) == ("c3", True)


@pytest.mark.parametrize("match, want", [
    (Match.NONE, "a"),  # closest first: same zone, most shared aggregates
    (Match.AVAILABILITY_ZONE, "a"),
    (Match.AGGREGATE, "a"),
])
def test_the_closest_spare_wins(match, want):
    hosts = [FAILED,
             spare("z", zone="az2", aggregates=["rack1", "ssd"]),
             spare("b", zone="az1", aggregates=["rack1"]),
             spare("a", zone="az1", aggregates=["rack1", "ssd"]),
             spare("c", zone="az1")]
    assert choose_spare(FAILED, hosts, match).host == want


def test_zone_match_rejects_other_zones():
    hosts = [FAILED, spare("x", zone="az2", aggregates=["rack1"])]
    choice = choose_spare(FAILED, hosts, Match.AVAILABILITY_ZONE)
    assert choice.host is None and "zone az2, not az1: x" in choice.reason
    assert choose_spare(FAILED, hosts, Match.AGGREGATE).host == "x"
    assert choose_spare(FAILED, hosts, Match.NONE).host == "x"


def test_aggregate_match_needs_a_shared_aggregate():
    hosts = [FAILED, spare("x", aggregates=["rack2"]), spare("y")]
    choice = choose_spare(FAILED, hosts, Match.AGGREGATE)
    assert choice.host is None and "no shared aggregate: x, y" in choice.reason
    hosts.append(spare("z", zone="az9", aggregates=["ssd"]))
    assert choose_spare(FAILED, hosts, Match.AGGREGATE).host == "z"


def test_a_failed_host_without_a_zone_matches_no_zone():
    failed = HostInfo("c1", zone=None)
    assert choose_spare(failed, [spare("x", zone=None)], Match.AVAILABILITY_ZONE).host is None


def test_taken_spares_are_skipped_and_the_choice_is_deterministic():
    hosts = [FAILED, spare("b"), spare("a"), spare("c")]
    assert choose_spare(FAILED, hosts, Match.NONE).host == "a"
    assert choose_spare(FAILED, hosts, Match.NONE, taken=["a"]).host == "b"
    choice = choose_spare(FAILED, hosts, Match.NONE, taken=["a", "b", "c"])
    assert choice.host is None and "already used: a, b, c" in choice.reason


def test_the_failed_host_itself_is_never_its_own_spare():
    me = HostInfo("c1", zone="az1", disabled=True, marker=RESERVED, nova_up=True)
    assert choose_spare(me, [me], Match.NONE).host is None


def test_resume_with_the_last_recorded_spare():
    recovering = Marker(MarkerState.RECOVERING, token=7, spares=("a", "b"))
    enabled_b = spare("b", marker=None, disabled=False)
    assert resume_spare(recovering, [enabled_b, spare("a")]).host == "b"
    assert resume_spare(recovering, [enabled_b]).enable is False
    # recorded, then the leader died before enabling it: enable it now
    choice = resume_spare(recovering, [spare("b")])
    assert (choice.host, choice.enable) == ("b", True)


@pytest.mark.parametrize("b", [
    None,  # gone from Nova
    spare("b", marker=None, disabled=False, up=False),  # down since
    spare("b", marker=None, disabled=True),  # an operator disabled it since
    spare("b", marker=None, disabled=False, phase=Phase.FAILED),
])
def test_resume_chooses_again_when_the_spare_cannot_take_more(b):
    recovering = Marker(MarkerState.RECOVERING, token=7, spares=("b",))
    assert resume_spare(recovering, [h for h in [b] if h is not None]) is None


def test_nothing_to_resume_without_recorded_spares():
    assert resume_spare(None, [spare("a")]) is None
    assert resume_spare(FENCED, [spare("a")]) is None
