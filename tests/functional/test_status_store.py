"""The leader's status on a real ZooKeeper (TLS, digest auth, ACLs): a summary
and chunks, one publication whole, whatever its size.

A ZooKeeper node (and any request) holds less than 1 MB; the status grows
with the cloud (2 MB compressed at 50,000 hosts, see
``benchmarks/status_bench.py``). The documents here are made larger than a
node on purpose with little CPU: random text per host, which zlib cannot
shrink much.
"""

from __future__ import annotations

import base64
import random
import zlib

import pytest
from kazoo import exceptions as kz_exc

from instanceha.coordination import zk_audit, zk_control
from instanceha.coordination import zk_layout as L
from instanceha.coordination.zk_codec import dumps

pytestmark = pytest.mark.functional
NODE_LIMIT = 1_048_575  # ZooKeeper's default jute.maxbuffer


def _doc(n: int, gen: int, noise: int = 600, seed: int = 1) -> dict:
    rng = random.Random(seed)
    return {"version": 1, "leader": "ctl-a", "token": 7, "gen": gen, "guard": {"held": False},
            "control": {}, "guests": None,
            "hosts": {f"compute{i:05d}": {"phase": "HEALTHY", "gen": gen,
                                          "note": base64.b64encode(rng.randbytes(noise)).decode()}
                      for i in range(n)}}


@pytest.fixture
def clients(zookeeper, root_path):
    ctl = zookeeper.coordinator("controller", root_path=root_path)
    ctl.start()
    op = zookeeper.coordinator("operator", root_path=root_path)
    op.start()
    yield ctl, op
    op.stop()
    ctl.stop()


def _chunks(ctl):
    return sorted(ctl.client.get_children(ctl.session.path(L.STATUS)))


def test_a_status_larger_than_a_node_is_published_and_read_back_whole(clients, zookeeper,
                                                                    root_path):
    ctl, op = clients
    doc = _doc(2000, gen=1)
    assert len(zlib.compress(dumps(doc))) > NODE_LIMIT  # one node could not hold it
    ctl.publish_status(doc)
    assert op.read_status() == doc
    chunks = _chunks(ctl)
    assert len(chunks) >= 2
    for name in [None] + chunks:
        path = ctl.session.path(L.STATUS) + (f"/{name}" if name else "")
        raw, _ = ctl.client.get(path)
        assert len(raw) < NODE_LIMIT
        acl, _ = ctl.client.get_acls(path)
        assert acl == ctl.acls.acl("tree"), path  # controllers write, operators read
    # an agent reads none of it
    agent = zookeeper.coordinator("agent", "compute00001", root_path=root_path)
    agent.session.start()
    try:
        with pytest.raises(kz_exc.NoAuthError):
            agent.client.get(ctl.session.path(L.STATUS, chunks[0]))
    finally:
        agent.stop()
    findings, walked = zk_audit.audit_tree(ctl)
    assert findings == [] and walked >= len(chunks) + 1


def test_each_publication_replaces_every_chunk_of_the_ones_before(clients):
    ctl, op = clients
    ctl.publish_status(_doc(2000, gen=1))
    first = _chunks(ctl)
    # a leader that died between creating its chunks and switching the summary
    orphan = ctl.session.path(L.STATUS, L.status_chunk("deadbeef", 0))
    ctl.client.create(orphan, zlib.compress(b'{"hosts":{}}'), acl=ctl.acls.acl("tree"))
    small = _doc(10, gen=2)
    ctl.publish_status(small)
    now = _chunks(ctl)
    assert len(now) == 1 and not set(now) & set(first + [orphan.rsplit("/", 1)[1]])
    assert op.read_status() == small


def test_a_reader_overtaken_by_a_publication_reads_the_new_one_whole(clients, monkeypatch):
    """The reader has the summary of publication 1; publication 2 lands before
    it reads the chunks: it never returns a mix, it reads publication 2."""
    ctl, op = clients
    monkeypatch.setattr(zk_control, "CHUNK_BYTES", 64 * 1024)
    ctl.publish_status(_doc(400, gen=1))
    assert len(_chunks(ctl)) >= 3
    client = op.control.client
    real_get_async = client.get_async
    overtaken = []

    def get_async(path, *args, **kwargs):
        if not overtaken and path.rsplit("/", 1)[-1].startswith("hosts-"):
            overtaken.append(path)
            ctl.publish_status(_doc(400, gen=2, seed=2))
        return real_get_async(path, *args, **kwargs)

    monkeypatch.setattr(client, "get_async", get_async)
    got = op.read_status()
    assert overtaken
    assert got == _doc(400, gen=2, seed=2)
    assert {h["gen"] for h in got["hosts"].values()} == {2}


def test_a_summary_with_its_hosts_inline_is_still_read(clients):
    """A status written as one node (by a controller of an earlier build of
    layout 2) reads as it was."""
    ctl, op = clients
    doc = _doc(3, gen=1, noise=4)
    path = ctl.session.path(L.STATUS)
    ctl.client.create(path, zlib.compress(dumps(doc)), acl=ctl.acls.acl("tree"))
    assert op.read_status() == doc
    ctl.publish_status(_doc(3, gen=2, noise=4))
    assert op.read_status()["gen"] == 2 and len(_chunks(ctl)) == 1


def test_a_status_without_hosts_is_one_node(clients):
    ctl, op = clients
    ctl.publish_status({"leader": "me"})
    assert op.read_status() == {"leader": "me"} and _chunks(ctl) == []
