"""The per-instance policy as a decision table: one row per case."""

import pytest

from instanceha.engine.instance_policy import (
    InstanceFacts,
    Recovery,
    RecoveryDecision,
    Source,
    decide,
)

E, N, I = Recovery.EVACUATE, Recovery.NOTIFY, Recovery.IGNORE  # noqa: E741
K = "instanceha:recovery"


def facts(server=None, flavor=None, image=None, aggregates=None):
    return InstanceFacts(server_metadata=server or {}, flavor_extra_specs=flavor or {},
                         image_properties=image or {}, aggregates=aggregates or {})


# precedence: server > flavor > image > aggregate > default
@pytest.mark.parametrize("server, flavor, image, aggregate, default, want, source", [
    # nothing set: the default decides
    (None, None, None, None, I, I, Source.DEFAULT),
    (None, None, None, None, E, E, Source.DEFAULT),
    (None, None, None, None, N, N, Source.DEFAULT),
    # each source alone beats the default
    ("evacuate", None, None, None, I, E, Source.SERVER),
    (None, "notify", None, None, I, N, Source.FLAVOR),
    (None, None, "evacuate", None, I, E, Source.IMAGE),
    (None, None, None, "evacuate", I, E, Source.AGGREGATE),
    ("ignore", None, None, None, E, I, Source.SERVER),
    # the server beats everything below it
    ("ignore", "evacuate", "evacuate", "evacuate", E, I, Source.SERVER),
    ("notify", "ignore", "evacuate", "evacuate", I, N, Source.SERVER),
    # the flavor beats image and aggregate
    (None, "ignore", "evacuate", "evacuate", E, I, Source.FLAVOR),
    (None, "evacuate", "ignore", "ignore", I, E, Source.FLAVOR),
    # the image beats the aggregate
    (None, None, "notify", "evacuate", I, N, Source.IMAGE),
    (None, None, "ignore", "evacuate", E, I, Source.IMAGE),
    # values are case-insensitive and trimmed
    (" EVACUATE ", None, None, None, I, E, Source.SERVER),
    (None, "Notify", None, None, I, N, Source.FLAVOR),
])
def test_precedence(server, flavor, image, aggregate, default, want, source):
    d = decide(facts(
        server={K: server} if server else None,
        flavor={K: flavor} if flavor else None,
        image={"instanceha_recovery": image} if image else None,
        aggregates={"agg1": {K: aggregate}} if aggregate else None,
    ), default)
    assert (d.recovery, d.source) == (want, source)
    assert d.notes == ()


# compatible aliases, per source
@pytest.mark.parametrize("where, key, value, want", [
    ("server", "HA_Enabled", "True", E),
    ("server", "HA_Enabled", "true", E),
    ("server", "HA_Enabled", "False", I),
    ("server", "HA_Enabled", "no", I),
    ("flavor", "evacuable", "true", E),
    ("flavor", "evacuable", "false", I),
    ("image", "evacuable", "True", E),
    ("image", "evacuable", "0", I),
    ("aggregate", "evacuable", "yes", E),
])
def test_aliases(where, key, value, want):
    kwargs = {where: {key: value}} if where != "aggregate" else {
        "aggregates": {"a": {key: value}}}
    d = decide(facts(**kwargs), Recovery.NOTIFY)
    assert d.recovery is want
    assert d.key == key and d.value == value


@pytest.mark.parametrize("server, want, key", [
    # the native key beats the alias in the same source
    ({K: "notify", "HA_Enabled": "True"}, N, K),
    ({K: "ignore", "HA_Enabled": "True"}, I, K),
    # an invalid native value falls back to the alias in the same source
    ({K: "maybe", "HA_Enabled": "True"}, E, "HA_Enabled"),
])
def test_native_key_before_alias(server, want, key):
    d = decide(facts(server=server), Recovery.IGNORE)
    assert (d.recovery, d.key) == (want, key)


@pytest.mark.parametrize("kwargs, want, source", [
    ({"server": {K: "sometimes"}}, I, Source.DEFAULT),
    ({"server": {K: "sometimes"}, "flavor": {K: "evacuate"}}, E, Source.FLAVOR),
    ({"server": {"HA_Enabled": "perhaps"}, "image": {"instanceha_recovery": "notify"}},
     N, Source.IMAGE),
    ({"flavor": {"evacuable": "maybe"}}, I, Source.DEFAULT),
    ({"aggregates": {"a": {K: "???"}}}, I, Source.DEFAULT),
])
def test_invalid_values_are_skipped_and_reported(kwargs, want, source):
    d = decide(facts(**kwargs), Recovery.IGNORE)
    assert (d.recovery, d.source) == (want, source)
    assert len(d.notes) == 1 and "ignored" in d.notes[0]
    assert "ignored" in d.reason


@pytest.mark.parametrize("aggregates, want, conflict", [
    ({"a": {K: "ignore"}, "b": {K: "ignore"}}, I, False),
    ({"a": {K: "ignore"}, "b": {K: "notify"}}, N, True),
    ({"a": {K: "notify"}, "b": {K: "evacuate"}, "c": {K: "ignore"}}, E, True),
    ({"a": {}, "b": {K: "notify"}}, N, False),
    ({"a": {"evacuable": "false"}, "b": {K: "evacuate"}}, E, True),
])
def test_aggregates_disagreeing(aggregates, want, conflict):
    d = decide(facts(aggregates=aggregates), Recovery.IGNORE)
    assert (d.recovery, d.source) == (want, Source.AGGREGATE)
    assert any("disagree" in n for n in d.notes) == conflict


def test_keys_of_other_sources_are_not_read():
    # the glance-style key is only an image key; a flavor uses the colon form
    d = decide(facts(flavor={"instanceha_recovery": "evacuate"},
                     image={K: "evacuate"}), Recovery.IGNORE)
    assert d.source is Source.DEFAULT


def test_reason_names_the_source():
    d = decide(facts(flavor={K: "notify"}), Recovery.IGNORE)
    assert d == RecoveryDecision(N, Source.FLAVOR, K, "notify")
    assert d.reason == "notify: flavor extra spec instanceha:recovery=notify"
    assert decide(facts(), Recovery.EVACUATE).reason == "evacuate: cloud-wide default"


@pytest.mark.parametrize("value, want", [
    ("evacuate", E), ("NOTIFY", N), (Recovery.IGNORE, I), ("", None), ("x", None),
])
def test_parse(value, want):
    assert Recovery.parse(value) is want


# -- restart priority: the same sources, the same precedence ----------------------

PK = "instanceha:priority"


@pytest.mark.parametrize("server, flavor, image, aggregate, want, source", [
    (None, None, None, None, 300, Source.DEFAULT),
    ("high", None, None, None, 400, Source.SERVER),
    (None, "highest", None, None, 500, Source.FLAVOR),
    (None, None, "low", None, 200, Source.IMAGE),
    (None, None, None, "lowest", 100, Source.AGGREGATE),
    # the server beats everything below it, the flavor the image, the image the aggregate
    ("low", "high", "high", "high", 200, Source.SERVER),
    (None, "10", "900", "900", 10, Source.FLAVOR),
    (None, None, "250", "900", 250, Source.IMAGE),
    # names are case-insensitive; numbers 0..1000
    (" HIGH ", None, None, None, 400, Source.SERVER),
    ("0", None, None, None, 0, Source.SERVER),
    ("1000", None, None, None, 1000, Source.SERVER),
    # not understood: skipped with a note, the next source decides
    ("urgent", "low", None, None, 200, Source.FLAVOR),
    ("1001", None, None, None, 300, Source.DEFAULT),
    ("-1", None, None, None, 300, Source.DEFAULT),
])
def test_priority_precedence(server, flavor, image, aggregate, want, source):
    from instanceha.engine.instance_policy import decide_priority

    d = decide_priority(facts(
        server={PK: server} if server else None,
        flavor={PK: flavor} if flavor else None,
        image={"instanceha_priority": image} if image else None,
        aggregates={"agg1": {PK: aggregate}} if aggregate else None,
    ), 300)
    assert (d.priority, d.source) == (want, source)
    assert bool(d.notes) is (server in ("urgent", "1001", "-1"))


def test_priority_aggregates_that_disagree_the_highest_wins():
    from instanceha.engine.instance_policy import decide_priority

    d = decide_priority(facts(aggregates={"a": {PK: "low"}, "b": {PK: "high"},
                                          "c": {PK: "medium"}}), 100)
    assert (d.priority, d.source) == (400, Source.AGGREGATE)
    assert "aggregates disagree" in d.notes[0]
    assert d.reason.startswith("priority high: host aggregate metadata instanceha:priority=high")


@pytest.mark.parametrize("value, name", [(100, "lowest"), (300, "medium"), (500, "highest"),
                                         (250, "250")])
def test_priority_names(value, name):
    from instanceha.engine.instance_policy import priority_name

    assert priority_name(value) == name
