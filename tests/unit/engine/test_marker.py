import datetime

import pytest

from instanceha.engine import marker
from instanceha.engine.marker import Marker, MarkerState

UTC = datetime.timezone.utc
T = datetime.datetime(2026, 11, 21, 17, 30, 5, 123456, tzinfo=UTC)
T0 = T.replace(microsecond=0)


@pytest.mark.parametrize("state", [s for s in MarkerState if s is not MarkerState.UNKNOWN])
@pytest.mark.parametrize("token", [None, 0, 42, 2**40])
@pytest.mark.parametrize("note", ["", "spare for rack-3"])
def test_round_trip(state, token, note):
    text = marker.encode(state, at=T, token=token, note=note)
    assert len(text) <= marker.MAX_LENGTH
    m = marker.decode(text)
    assert (m.state, m.token, m.at, m.note, m.version) == (state, token, T0, note, 1)
    assert m.known
    assert m.raw == text


def test_encoded_form_is_stable():
    # operators grep for this; changing it needs a new version number
    assert (marker.encode(MarkerState.FENCED, at=T, token=42)
            == "instanceha:v1:fenced;token=42;at=2026-11-21T17:30:05Z")
    assert marker.encode(MarkerState.RESERVED) == "instanceha:v1:reserved"


def test_time_is_converted_to_utc():
    cet = datetime.timezone(datetime.timedelta(hours=1))
    text = marker.encode(MarkerState.HELD, at=datetime.datetime(2026, 1, 1, 1, 0, tzinfo=cet))
    assert "at=2026-01-01T00:00:00Z" in text


@pytest.mark.parametrize("reason", [
    None, "", "   ", "maintenance: disk swap, ticket 1234", "Instanceha fenced",
    "disabled by instanceha", "INSTANCEHA:v1:fenced", "instanceha fenced",
])
def test_reason_not_ours_decodes_to_none(reason):
    assert marker.decode(reason) is None
    assert not marker.is_ours(reason)


@pytest.mark.parametrize("reason, state, token, at", [
    # garbled or newer markers are still ours
    ("instanceha:", MarkerState.UNKNOWN, None, None),
    ("instanceha:garbage", MarkerState.UNKNOWN, None, None),
    ("instanceha:v1:exploded;token=3", MarkerState.UNKNOWN, 3, None),
    ("instanceha:v2:fenced;token=7;at=2026-11-21T17:30:05Z;new=field",
     MarkerState.FENCED, 7, T0),
    # bad fields are dropped, the rest survives
    ("instanceha:v1:fenced;token=abc;at=yesterday", MarkerState.FENCED, None, None),
    ("instanceha:v1:fenced;token=-1", MarkerState.FENCED, None, None),
    ("instanceha:v1:FENCED ; TOKEN=5 ; at=2026-11-21T17:30:05", MarkerState.FENCED, 5, T0),
    ("  instanceha:v1:recovering;at=2026-11-21T17:30:05+00:00  ", MarkerState.RECOVERING,
     None, T0),
    ("instanceha:v1:held;;;token=9;token=10", MarkerState.HELD, 9, None),
])
def test_tolerant_decoding(reason, state, token, at):
    m = marker.decode(reason)
    assert isinstance(m, Marker)
    assert (m.state, m.token, m.at) == (state, token, at)
    assert m.known == (state is not MarkerState.UNKNOWN)


def test_newer_version_is_reported():
    assert marker.decode("instanceha:v2:fenced").version == 2


def test_note_is_sanitised_and_trimmed():
    text = marker.encode(MarkerState.HELD, at=T, token=1, note="a;b\nc" + "x" * 400)
    assert len(text) == marker.MAX_LENGTH
    m = marker.decode(text)
    assert m.state is MarkerState.HELD and m.token == 1
    assert m.note.startswith("a b c") and ";" not in m.note


@pytest.mark.parametrize("kwargs", [
    {"state": MarkerState.UNKNOWN},
    {"state": MarkerState.FENCED, "token": -1},
    {"state": MarkerState.FENCED, "token": True},
    {"state": MarkerState.FENCED, "token": "4"},
    {"state": MarkerState.FENCED, "at": datetime.datetime(2026, 1, 1)},  # naive
])
def test_encode_refuses_bad_input(kwargs):
    with pytest.raises(ValueError):
        marker.encode(**kwargs)


def test_spares_round_trip_and_stay_before_the_note():
    text = marker.encode(MarkerState.RECOVERING, at=T, token=42, note="x", spares=["c3", "c4"])
    assert text == "instanceha:v1:recovering;token=42;at=2026-11-21T17:30:05Z;spares=c3,c4;note=x"
    m = marker.decode(text)
    assert (m.state, m.token, m.spares, m.note) == (MarkerState.RECOVERING, 42, ("c3", "c4"), "x")
    assert marker.decode(marker.encode(MarkerState.FENCED, token=1)).spares == ()


@pytest.mark.parametrize("bad", ["a;b", "a,b", "a=b", "a b", ""])
def test_spares_must_be_plain_host_names(bad):
    with pytest.raises(ValueError):
        marker.encode(MarkerState.RECOVERING, spares=[bad])


def test_too_many_spares_keep_the_newest_within_255():
    spares = [f"compute-{i:03d}.rack-{i:03d}.example.com" for i in range(20)]
    text = marker.encode(MarkerState.RECOVERING, at=T, token=42, note="n" * 300, spares=spares)
    assert len(text) <= marker.MAX_LENGTH
    m = marker.decode(text)
    assert m.spares and m.spares[-1] == spares[-1] and m.spares == tuple(spares[-len(m.spares):])


def test_garbled_spares_are_dropped_not_fatal():
    m = marker.decode("instanceha:v1:recovering;token=3;spares=c3,,bad host,c4")
    assert (m.state, m.token, m.spares) == (MarkerState.RECOVERING, 3, ("c3", "c4"))


@pytest.mark.parametrize("waiting", [0, 1, 12])
def test_servers_waiting_for_room_round_trip(waiting):
    text = marker.encode(MarkerState.RECOVERING, token=3, waiting=waiting, spares=("c7",),
                     note="2 evacuated")
    m = marker.decode(text)
    assert (m.state, m.waiting, m.spares, m.note) == (MarkerState.RECOVERING, waiting,
                                                      ("c7",), "2 evacuated")
    assert ("waiting=" in text) is bool(waiting)


def test_a_bad_waiting_count_is_refused_and_a_garbled_one_read_as_none():
    with pytest.raises(ValueError):
        marker.encode(MarkerState.RECOVERING, waiting=-1)
    assert marker.decode("instanceha:v1:recovering;waiting=x").waiting == 0
