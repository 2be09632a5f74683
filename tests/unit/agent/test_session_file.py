"""The agent's session, kept across a restart (agent/session_file.py), on a fake
coordinator whose "server" forgets a session when a test expires it."""

import json
import logging
import os

import pytest

from instanceha.agent import session_file
from instanceha.agent.service import Agent, AgentSettings
from instanceha.agent.session_file import SessionFile
from instanceha.coordination import SessionCredentials
from tests.unit.clock import FakeClock
from tests.unit.fakes import FakeCoordinator

CREDS = SessionCredentials(0xABC, b"0123456789abcdef")


def _store(tmp_path, host="compute1", where="zk1:2181", root="/ih"):
    store = SessionFile(str(tmp_path / "agent-session.json"), host, where, root,
                        clock=FakeClock(wall=5000.0))
    assert store.lock()
    return store


def _restarted(coord, clock):
    """The coordinator of a new process: same "server", a new client."""
    new = FakeCoordinator(clock)
    new.live_sessions = coord.live_sessions
    return new


def _agent(coord, store, clock):
    return Agent(coord, AgentSettings(host="compute1"), probe=dict, clock=clock,
                 session_file=store)


def test_saved_0600_and_read_back(tmp_path):
    store = _store(tmp_path)
    store.save(CREDS, incarnation=42)
    st = os.stat(store.path)
    assert st.st_mode & 0o777 == 0o600
    saved = store.load()
    assert saved.credentials == CREDS and saved.incarnation == 42 and saved.pid == os.getpid()
    assert "0123456789abcdef" not in repr(saved)  # the password is never printed


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_file_others_may_read_or_change_is_ignored(tmp_path, caplog, mode):
    store = _store(tmp_path)
    store.save(CREDS)
    os.chmod(store.path, mode)
    assert store.load() is None
    assert f"has mode {mode:04o}" in caplog.text and store.path in caplog.text
    assert "Remove the file" in caplog.text


def test_a_file_of_another_user_is_ignored(tmp_path, caplog, monkeypatch):
    store = _store(tmp_path)
    store.save(CREDS)
    monkeypatch.setattr(os, "geteuid", lambda: os.stat(store.path).st_uid + 1)
    assert store.load() is None
    assert "is owned by uid" in caplog.text


def test_a_symbolic_link_is_never_followed(tmp_path, caplog):
    store = _store(tmp_path)
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    os.chmod(target, 0o600)
    os.symlink(target, store.path)
    assert store.load() is None
    assert "symbolic link" in caplog.text


def test_a_file_for_another_host_or_coordinator_is_ignored(tmp_path, caplog):
    writer = _store(tmp_path, host="compute2")
    writer.save(CREDS)
    writer.close()  # its process ended: the lock is free, the file stays
    for kwargs in ({}, {"host": "compute2", "where": "zk9:2181"},
                   {"host": "compute2", "root": "/other"}):
        other = SessionFile(str(tmp_path / "agent-session.json"),
                            kwargs.get("host", "compute1"), kwargs.get("where", "zk1:2181"),
                            kwargs.get("root", "/ih"))
        assert other.lock()
        assert other.load() is None
        other.close()
    assert caplog.text.count("was written for host") == 3


def test_garbage_is_ignored(tmp_path, caplog):
    store = _store(tmp_path)
    fd = os.open(store.path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b'{"session_id": "zz"}')
    os.close(fd)
    assert store.load() is None
    assert "unreadable" in caplog.text


def test_two_agents_never_share_a_file(tmp_path):
    _store(tmp_path)
    with pytest.raises(session_file.InUse, match="two agents must never share"):
        SessionFile(str(tmp_path / "agent-session.json"), "compute1", "zk1:2181", "/ih").lock()


def test_no_directory_no_resumption_but_the_agent_runs(tmp_path, caplog):
    store = SessionFile(str(tmp_path / "missing" / "s.json"), "compute1", "zk1:2181", "/ih")
    assert not store.lock() and store.load() is None
    store.save(CREDS)  # no-op, no error
    assert "RuntimeDirectory=instanceha" in caplog.text


def test_a_restarted_agent_resumes_the_session_and_keeps_its_membership(tmp_path, caplog):
    clock = FakeClock()
    coord = FakeCoordinator(clock)
    first = _agent(coord, _store(tmp_path), clock)
    first.step()
    sid = coord.session.session_id
    assert json.loads(open(first.session_file.path).read())["session_id"] == f"0x{sid:x}"
    first.session_file.close()  # the process dies: no planned stop, its session lives on
    coord = _restarted(coord, clock)
    caplog.set_level(logging.INFO)
    second = _agent(coord, _store(tmp_path), clock)
    second.step()
    assert second.resumed is True and coord.session.session_id == sid
    assert f"resumed session 0x{sid:x}" in caplog.text
    assert "0123456789" not in caplog.text and "pw-" not in caplog.text


def test_an_expired_session_is_reported_and_a_new_one_saved(tmp_path, caplog):
    clock = FakeClock()
    coord = FakeCoordinator(clock)
    first = _agent(coord, _store(tmp_path), clock)
    first.step()
    old = coord.session.session_id
    first.session_file.close()
    coord.live_sessions.clear()  # the agent stayed down past the session timeout
    coord = _restarted(coord, clock)
    second = _agent(coord, _store(tmp_path), clock)
    second.step()
    assert second.resumed is False and coord.session.session_id != old
    assert f"session 0x{old:x} of the previous run" in caplog.text and "expired" in caplog.text
    saved = second.session_file.load()
    assert saved.credentials == coord.session


def test_a_planned_stop_removes_the_file(tmp_path):
    clock = FakeClock()
    coord = FakeCoordinator(clock)
    a = _agent(coord, _store(tmp_path), clock)
    a.step()
    assert os.path.exists(a.session_file.path)
    a.shutdown(planned=True)
    assert not os.path.exists(a.session_file.path)


def test_a_session_ended_by_the_watchdog_is_never_resumed(tmp_path):
    clock = FakeClock()
    coord = FakeCoordinator(clock)
    a = _agent(coord, _store(tmp_path), clock)
    a.step()
    first = coord.session.session_id
    a.iteration_done(0.5)
    for _ in range(100):  # the next step hangs: the watchdog ends the session
        clock.advance(0.125)
        if a.watchdog.check(clock()) == "ended":
            break
    assert coord.sessions_ended == 1
    a.iteration_done(0.5)  # the hung step returned: a new session is due
    a.step()
    assert coord.session.session_id != first
    assert a.session_file.load().credentials == coord.session


def test_resumption_is_retried_while_the_coordinator_is_away(tmp_path):
    from instanceha import exceptions

    clock = FakeClock()
    coord = FakeCoordinator(clock)
    store = _store(tmp_path)
    coord.live_sessions[CREDS.session_id] = CREDS.password
    store.save(CREDS)
    coord.start_errors = [exceptions.CoordinatorUnavailable(where="zk", reason="down")]
    a = _agent(coord, store, clock)
    a.step()
    assert coord.session is None
    a.step()
    assert a.resumed is True and coord.session == CREDS


def test_kazoo_never_logs_the_session_password(caplog):
    from instanceha.coordination.zk_session import ZooKeeperSession

    ZooKeeperSession("zookeeper://127.0.0.1:1", session_timeout=2.0, connect_timeout=1.0,
                     reconnect_max_delay=1.0, root_path="/ih")
    kazoo_log = logging.getLogger("kazoo.client")
    caplog.set_level(1, logger="kazoo.client")
    # what kazoo 2.11 logs at its BLATHER level (5) on every connect
    kazoo_log.log(5, "    Using session_id: %r session_passwd: %s", 0xABC, b"30313233")
    kazoo_log.log(5, "Session created, session_id: %r session_passwd: %s\n", 0xABC, b"3031")
    kazoo_log.info("Zookeeper connection established, state: %s", "CONNECTED")
    assert "3031" not in caplog.text and "connection established" in caplog.text
