"""The chaos suite's fixtures: a ZooKeeper ensemble and cuttable links.

The daemons come from ``daemon_factory`` (tests/functional/conftest.py); an
ensemble test lists ``ensemble`` before ``daemon_factory`` so that the daemons
stop before the servers do. Reading decisions from logs: ``logs.py``.
"""

from __future__ import annotations

import pytest
from harness.tcpproxy import TcpProxy
from harness.zookeeper import ZooKeeperEnsemble


@pytest.fixture
def ensemble(tmp_path, zookeeper):
    """Three servers in the session ZooKeeper's security domain (same CA, same
    key): the daemons' credentials work on either."""
    ens = ZooKeeperEnsemble(str(tmp_path / "ensemble"), size=3, tick_ms=200,
                            security=zookeeper.security).start()
    yield ens
    ens.stop()


@pytest.fixture
def proxy_factory():
    made = []

    def make(port: int) -> TcpProxy:
        p = TcpProxy("127.0.0.1", port).start()
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()

