"""Chaos: many hosts failing at once. The mass-failure guard holds every fence,
says so (log, ``instanceha status``, metric), and after an operator's release
(``instanceha guard override``) fencing proceeds at most
``max_fences_per_tick`` hosts per tick.

Real agents (processes) and a real ZooKeeper; the controller is the real
daemon for what operators see, and the real ``ControllerService`` in this
process (with an actuator that records each tick's hand-overs) to count the
hosts handed over per tick.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request

import pytest
from harness import daemons

from instanceha.controller.executor import BaseActuator
from instanceha.controller.service import ControllerService, ControllerSettings
from instanceha.engine.guard import GuardPolicy
from instanceha.engine.model import DetectionPolicy
from tests.functional.chaos import logs

pytestmark = pytest.mark.functional

HOSTS = [f"compute{i}" for i in range(1, 7)]
LIVE, DOOMED = HOSTS[:2], HOSTS[2:]
LIMITS = {"max_failed_hosts": 3, "max_failed_percent": 100, "max_fences_per_tick": 1,
          "guard_stable_after": 3600}
EXPECT = ("every fence held while more hosts look dead than allowed, the hold reported; "
          "after an operator's release each failed host is handed to fencing once, at most "
          "max_fences_per_tick (1) per tick; live hosts never")


def _agents(daemon_factory):
    return {n: daemon_factory("agent", n) for n in HOSTS}


def _kill_all(agents, names):
    for n in names:
        agents[n].proc.kill()  # all signals first, then reap: "at once"
    for n in names:
        agents[n].proc.wait()


def _status(cli):
    r = cli("status", "--format", "json")
    return r.returncode, (json.loads(r.stdout) if r.stdout.strip() else None)


def _metric(url: str, name: str) -> float | None:
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    m = re.search(rf"^{name} (\S+)$", body, re.M)
    return float(m.group(1)) if m else None


@pytest.mark.fault("6 hosts, 4 killed at once (mass-failure guard limit: 3 hosts)",
                   component="controller", expect=EXPECT)
def test_mass_failure_is_held_reported_then_released(daemon_factory, cli, fault):
    agents = _agents(daemon_factory)
    ctl = logs.lead_first(daemon_factory, "ctl-a", {"controller": LIMITS})
    for n in HOSTS:
        ctl.wait_log(rf"host={n} phase=\w+->HEALTHY")
    metrics = ctl.wait_log(r"telemetry on (http://\S+/metrics)").group(1)
    mark = ctl.log_size()

    killed = time.time()
    _kill_all(agents, DOOMED)
    held_at = logs.event_time(ctl, r"safety hold: fencing held for every host", after=mark)
    for n in DOOMED:
        ctl.wait_log(rf"host={n} phase=\w+->FAILED", after=mark)
    # held: FAILED hosts, and nothing handed over
    assert logs.handovers(ctl, mark) == []
    code, doc = daemons.wait_until(lambda: (s := _status(cli))[1] and s[1]["guard"]["held"]
                                   and all(s[1]["hosts"][n]["phase"] == "FAILED"
                                           for n in DOOMED) and s, 30,
                                   "status to show the hold and the failed hosts")
    assert code == 1
    assert _metric(metrics, "instanceha_safety_hold") == 1.0
    assert _metric(metrics, "instanceha_safety_holds_total") == 1.0
    table = cli("status")
    assert "SAFETY HOLD" in table.stdout
    reason = doc["guard"]["reason"]
    assert logs.handovers(ctl, mark) == []
    fault.observed(f"hold raised {held_at - killed:.2f} s after the kill ({reason}); "
                   f"reported in the log, 'instanceha status' (exit 1, SAFETY HOLD) and "
                   f"instanceha_safety_hold 1; 0 hand-overs while held")

    released = time.time()
    r = cli("guard", "override", "--minutes", "5", "--reason", "chaos suite")
    assert r.returncode == 0, r.stderr
    daemons.wait_until(lambda: {h for h, _, _ in logs.handovers(ctl, mark)} >= set(DOOMED), 30,
                       "every failed host to be handed over after the release")
    handed = logs.handovers(ctl, mark)
    assert sorted(h for h, _, _ in handed) == sorted(DOOMED), handed  # each exactly once
    assert {tok for _, tok, _ in handed} == {logs.token(ctl)}
    assert all(agents[n].proc.poll() is None for n in LIVE)
    offsets = ", ".join(f"{at - released:.2f}" for _, _, at in sorted(handed,
                                                                       key=lambda x: x[2]))
    fault.observed(f"after 'instanceha guard override': {len(handed)} hosts handed over, each "
                   f"once, at +{offsets} s; live hosts 0")


class _PerTick(BaseActuator):
    """An actuator that records, for each tick, the hosts handed over for the
    first time (after ``verify()``, as a real actuator does)."""

    def __init__(self):
        self.ticks: list[list[str]] = []
        self.handed: set[str] = set()
        self.lock = threading.Lock()

    def act(self, views, fence_allowed, verify):
        new = [h for h in fence_allowed if h not in self.handed]
        if new:
            verify()
        with self.lock:
            self.handed.update(new)
            self.ticks.append(new)


@pytest.mark.fault("6 hosts, 4 killed at once, then the guard released by an operator",
                   component="controller",
                   expect="nothing handed over while held; after the release the failed hosts "
                          "are handed over at most max_fences_per_tick (1) per tick, each once")
def test_released_guard_fences_at_most_max_fences_per_tick(daemon_factory, zookeeper,
                                                           root_path, cli, fault):
    agents = _agents(daemon_factory)
    coord = zookeeper.coordinator("controller", session_timeout=2.0, root_path=root_path)
    actuator = _PerTick()
    settings = ControllerSettings(
        name="ctl-inproc", policy=DetectionPolicy(), tick_interval=0.1, session_timeout=2.0,
        guard=GuardPolicy(max_failed_hosts=3, max_failed_percent=100.0, max_fences_per_tick=1,
                          stable_after=3600.0,
                          # as conf/policy.py derives it: heartbeat interval + tick
                          vanish_window=0.5 + 0.1))
    service = ControllerService(coord, settings, actuator)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        daemons.wait_until(lambda: service.reconciler is not None and all(
            (v := service.reconciler.views.get(n)) is not None and v.phase.value == "HEALTHY"
            for n in HOSTS), 30, "every host HEALTHY")
        daemons.wait_until(lambda: service.leadership.is_leader(), 10, "leadership")
        _kill_all(agents, DOOMED)
        daemons.wait_until(lambda: all(service.reconciler.views[n].phase.value == "FAILED"
                                       for n in DOOMED), 30, "the killed hosts FAILED")
        assert service.reconciler.executor.guard_state.held
        with actuator.lock:
            ticks_failed = len(actuator.ticks)
        daemons.wait_until(lambda: len(actuator.ticks) >= ticks_failed + 10, 10,
                           "10 ticks with the failed hosts held")
        with actuator.lock:
            ticks_held = len(actuator.ticks)
            assert actuator.handed == set()
        assert cli("guard", "override", "--minutes", "5", "--reason", "chaos").returncode == 0
        daemons.wait_until(lambda: actuator.handed >= set(DOOMED), 30,
                           "every failed host handed over after the release")
        with actuator.lock:
            after = actuator.ticks[ticks_held:]
        per_tick = [len(t) for t in after if t]
        assert max(per_tick) <= 1, after
        assert actuator.handed == set(DOOMED)
        first = next(i for i, t in enumerate(after) if t)
        last = max(i for i, t in enumerate(after) if t)
        fault.observed(f"4 FAILED hosts held for {ticks_held - ticks_failed} ticks, 0 hand-overs; "
                       f"after the release "
                       f"{len(actuator.handed)} hosts handed over in {len(per_tick)} ticks "
                       f"(at most {max(per_tick)} per tick), over {last - first + 1} ticks")
    finally:
        service.stopping.set()
        thread.join(10)
        service.shutdown()
