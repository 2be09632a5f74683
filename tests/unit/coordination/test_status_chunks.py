"""The leader's status in chunks that each fit in a ZooKeeper node."""

import json
import random
import zlib

import pytest

from instanceha.controller import status
from instanceha.coordination import zk_control
from instanceha.coordination import zk_layout as L
from instanceha.coordination.zk_codec import dumps, loads


def _doc(n, reason="alive"):
    return {"version": 1, "leader": "ctl-a", "token": 7, "published_at": 1.5,
            "guard": {"held": False}, "control": {}, "guests": None,
            "hosts": {f"compute{i:05d}": {"phase": "HEALTHY", "reason": reason, "i": i}
                      for i in range(n)}}


def test_split_then_join_gives_the_document_back():
    doc = _doc(500)
    summary, chunks = zk_control.split_status(doc, 4096)
    assert "hosts" not in summary and summary["leader"] == "ctl-a"
    assert len(chunks) > 1
    assert zk_control.join_status(summary, [loads(c) for c in chunks]) == doc


def test_every_chunk_is_within_the_budget_and_encoded_as_the_codec_does():
    doc = _doc(500)
    summary, chunks = zk_control.split_status(doc, 4096)
    assert all(len(c) <= 4096 for c in chunks)
    names = []
    for c in chunks:
        part = loads(c)["hosts"]
        assert c == dumps({"hosts": part})  # the one codec: sorted, compact
        names += list(part)
    assert names == sorted(doc["hosts"])  # in host order, each host once


def test_chunks_are_filled_before_a_new_one_starts():
    doc = _doc(500)
    _, chunks = zk_control.split_status(doc, 4096)
    entry = max(len(json.dumps(h)) + 1 + len(dumps(v)) for h, v in doc["hosts"].items())
    assert all(len(c) > 4096 - entry - 1 for c in chunks[:-1])


def test_a_host_larger_than_the_budget_gets_a_chunk_of_its_own():
    doc = _doc(3)
    doc["hosts"]["compute00001"]["reason"] = "x" * 5000
    _, chunks = zk_control.split_status(doc, 1024)
    assert [list(loads(c)["hosts"]) for c in chunks] == [
        ["compute00000"], ["compute00001"], ["compute00002"]]


def test_no_hosts_is_one_empty_chunk():
    summary, chunks = zk_control.split_status(_doc(0), 4096)
    assert [loads(c) for c in chunks] == [{"hosts": {}}]
    assert zk_control.join_status(summary, [loads(c) for c in chunks]) == _doc(0)


def test_a_default_chunk_compressed_stays_below_the_node_limit_even_for_noise():
    # the worst case: data zlib cannot shrink at all
    blob = random.Random(1).randbytes(zk_control.CHUNK_BYTES)
    assert len(zlib.compress(blob)) < 1_000_000


@pytest.mark.parametrize("parts, kind", [
    (("status",), "tree"),
    (("status", L.status_chunk("0a1b2c3d", 0)), "tree"),
    (("status", "hosts-0a1b2c3d-0012"), "tree"),
    (("status", "hosts-0A1B2C3D-0012"), None),
    (("status", "hosts-0a1b2c3d"), None),
    (("status", "other"), None),
    (("status", L.status_chunk("0a1b2c3d", 0), "below"), None),
])
def test_status_chunks_are_nodes_of_the_layout(parts, kind):
    assert L.kind_of(parts) == kind
    assert L.host_of(parts) is None


def test_a_long_reason_is_cut_in_the_status():
    assert status.bounded("short") == "short"
    cut = status.bounded("y" * 2000)
    assert len(cut) == status.REASON_CHARS and cut.endswith("...")


def test_a_status_without_hosts_is_all_summary():
    summary, chunks = zk_control.split_status({"leader": "me"}, 4096)
    assert summary == {"leader": "me"} and chunks == []
