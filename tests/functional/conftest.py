"""Fixtures that start real services with the project's harness."""

import itertools
import logging
import os
import subprocess
import sys
import threading
import time

import pytest
from harness import daemons
from harness.zookeeper import ZooKeeperServer, provision

from instanceha.controller.executor import BaseActuator, Executor
from instanceha.controller.reconciler import Reconciler
from instanceha.engine.model import DetectionPolicy
from tests.functional.cloud import (  # noqa: F401 - the mini-cloud fixtures, one per session
    admin,
    healthy_cloud,
    minicloud,
    nova,
    nova_conf_file,
    servers,
    telemetry,
)

_ROOTS = itertools.count(1)
CLI = os.path.join(os.path.dirname(sys.executable), "instanceha")


@pytest.fixture(scope="session")
def zookeeper(tmp_path_factory):
    zk = ZooKeeperServer(str(tmp_path_factory.mktemp("zookeeper")), tick_ms=200).start()
    yield zk
    zk.stop()


@pytest.fixture
def root_path():
    """A fresh coordinator root per test: tests never see each other's hosts."""
    return f"/ih-test-{next(_ROOTS)}-{int(time.time() * 1000) % 10**8}"


class DaemonFactory:
    """instanceha's daemons and CLI on one coordinator root, each config built
    here (one place for what every daemon's [coordination] needs)."""

    def __init__(self, workdir, zookeeper, root_path):
        self.workdir = str(workdir)
        self.zookeeper = zookeeper
        self.root_path = root_path
        self.started = []

    def coordination(self, role="controller", host=None):
        """The ``[coordination]`` of ``role`` (its own credentials, TLS) on this root.

        Loopback timings: a 2 s session, and a reconnection back-off bounded
        at 1 s for agents and controllers alike, so the controller's
        ``reconnect_grace`` (derived from it, as in production) is 2.2 s
        instead of 6.5 s: a host failed right after the controller started is
        declared FAILED about 4 s sooner, in every test that does so."""
        return self.zookeeper.section(role, host, root_path=self.root_path,
                                      session_timeout=2.0, reconnect_max_delay=1.0)

    def __call__(self, kind, name, extra=None, argv_prefix=None, env=None):
        """An agent (its host's slot provisioned first, on whatever ZooKeeper
        ``extra`` points it to, as the leading controller does for the hosts of
        its inventory) or a controller, with their own credentials."""
        host = (extra or {}).get("DEFAULT", {}).get("host", name)
        sections = {
            "DEFAULT": {"host": name},
            "coordination": self.coordination(kind, host if kind == "agent" else None),
            "agent": {"watched_processes": "init:/sbin/init"},
            "detection": {"tick_interval": 0.1},
            "telemetry": {"controller_port": 0, "agent_port": 0},
        }
        if kind == "agent":  # each agent its own session file (never shared)
            sections["agent"]["session_file"] = os.path.join(self.workdir, f"{name}.session")
        for group, values in (extra or {}).items():
            sections.setdefault(group, {}).update(values)
        if kind == "agent":
            c = sections["coordination"]
            provision(c["backend_url"], self.zookeeper.security, c["root_path"], [host])
        prog = {"agent": "instanceha-agent", "controller": "instanceha-controller"}[kind]
        d = daemons.Daemon.instanceha(prog, self.workdir, name, sections, env=env,
                                      argv_prefix=argv_prefix)
        self.started.append(d)
        return d.start()

    def cli(self, *args):
        """``cli("status", "--format", "json")``: the operator CLI on this root,
        with the operators' credentials."""
        coordination = self.coordination("operator")
        coordination.pop("session_timeout")
        coordination.pop("reconnect_max_delay")
        conf = daemons.write_conf(os.path.join(self.workdir, "cli.conf"),
                                  {"coordination": coordination})
        return subprocess.run([CLI, "--config-file", conf, *args], capture_output=True,
                              text=True, timeout=60)

    def close(self):
        for d in self.started:
            try:
                d.thaw()
            except (ProcessLookupError, TypeError, AttributeError):
                pass
            d.terminate()


@pytest.fixture
def cli(tmp_path, zookeeper, root_path):
    """``cli("status", "--format", "json")``: the operator CLI on this test's root."""
    return DaemonFactory(tmp_path, zookeeper, root_path).cli


@pytest.fixture
def daemon_factory(tmp_path, zookeeper, root_path):
    factory = DaemonFactory(tmp_path, zookeeper, root_path)
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def module_daemon_factory(tmp_path_factory, zookeeper):
    """The same, shared by a module's tests (one stack for several faults)."""
    root = f"/ih-test-mod-{next(_ROOTS)}-{int(time.time() * 1000) % 10**8}"
    factory = DaemonFactory(tmp_path_factory.mktemp("daemons"), zookeeper, root)
    yield factory
    factory.close()


class RecordingHandler(BaseActuator):
    """An actuator that records each hand-over (host, rule, token)."""

    def __init__(self):
        self.calls = []

    def act(self, views, fence_allowed, verify):
        for host in fence_allowed:
            self.calls.append((host, views[host].rule, verify()))


class Observer:
    """An in-process controller (real ZooKeeper session, real reconciler) whose
    decisions the test can read."""

    def __init__(self, zk, root_path, policy=None, session_timeout=2.0):
        """``zk``: the ZooKeeper server (or ensemble) of the harness."""
        self.coordinator = zk.coordinator("controller", session_timeout=session_timeout,
                                          root_path=root_path)
        self.coordinator.start()
        self.leadership = self.coordinator.leadership("observer")
        self.handler = RecordingHandler()
        self.policy = policy or DetectionPolicy()
        self.reconciler = Reconciler(self.coordinator, self.policy,
                                     Executor(self.leadership, self.handler),
                                     on_transition=self._record)
        self.transitions = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _record(self, t):
        with self.lock:
            self.transitions.append(t)

    def _run(self):
        while not self.stop_event.is_set():
            try:
                self.leadership.ensure()
                self.reconciler.tick()
            except Exception:
                logging.getLogger(__name__).exception("observer tick failed")
            self.stop_event.wait(0.05)

    def phase(self, host):
        v = self.reconciler.views.get(host)
        return v.phase.value if v else None

    def view(self, host):
        return self.reconciler.views.get(host)

    def wait_phase(self, host, phase, timeout=20.0):
        return daemons.wait_until(lambda: self.phase(host) == phase, timeout,
                                  f"{host} to be {phase} (now {self.phase(host)})")

    def phases_seen(self, host):
        with self.lock:
            return [t.after.phase.value for t in self.transitions if t.host == host]

    def close(self):
        self.stop_event.set()
        self.thread.join(5)
        self.leadership.resign()
        self.coordinator.stop()


@pytest.fixture
def observer_factory(zookeeper, root_path):
    made = []

    def make(policy=None):
        obs = Observer(zookeeper, root_path, policy=policy)
        made.append(obs)
        return obs

    yield make
    for obs in made:
        obs.close()


@pytest.fixture
def observer(observer_factory):
    return observer_factory()
