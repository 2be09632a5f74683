"""The guest-failure queue and restart records on a real ZooKeeper: what an
agent's session writes, another session (a leader) reads, even after the
writer's session is gone; the watch sees new failures; restarts merge."""

import pytest
from harness import daemons

pytestmark = pytest.mark.functional


def test_failures_outlive_the_agent_and_reach_another_session(zookeeper, root_path):
    leader = zookeeper.coordinator("controller", root_path=root_path)
    leader.start()
    leader.provision_host("c1")
    agent = zookeeper.coordinator("agent", "c1", root_path=root_path)
    agent.start()
    try:
        assert leader.guest_events() == []
        first = agent.guest_event_put({"host": "c1", "instance_id": "vm1", "kind": "watchdog",
                                       "at": 1.0, "detail": {"action": "none"}})
        agent.stop()  # the agent's session ends: the failure stays
        daemons.wait_until(lambda: leader.guest_events(), 10, "the watch to see it")
        (event_id, record), = leader.guest_events()
        assert event_id == first and record["detail"] == {"action": "none"}
        again = zookeeper.coordinator("agent", "c1", root_path=root_path)
        again.start()
        second = again.guest_event_put({"host": "c1", "instance_id": "vm2", "kind": "crashed",
                                        "at": 2.0})
        again.stop()
        daemons.wait_until(lambda: len(leader.guest_events()) == 2, 10, "the second one")
        assert [i for i, _ in leader.guest_events()] == [first, second]  # oldest first
        leader.guest_event_delete(first)
        leader.guest_event_delete(first)  # absent is fine
        assert [i for i, _ in leader.guest_events()] == [second]

        assert leader.guest_restarts("vm1") == []
        for at in (10.0, 20.0, 30.0):
            leader.guest_restart_record("vm1", at, keep=2)
        assert leader.guest_restarts("vm1") == [20.0, 30.0]
    finally:
        leader.stop()
