"""The real mini-cloud, once per test session, and helpers to use it (the
compute tests and the chaos suite share it: these fixtures are imported by
tests/functional/conftest.py).

The cloud comes from tools/minicloud (install.sh, then up.sh into a tmp dir;
down.sh at the end). To iterate quickly, start one by hand and point the tests
at it; it is then left running::

    tools/minicloud/up.sh
    INSTANCEHA_MINICLOUD_RUN_DIR=.run/minicloud/run pytest tests/functional/compute
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from harness import daemons, procs
from harness.minicloud import MiniCloud

from instanceha.compute.nova import NovaClient


@pytest.fixture(scope="session")
def minicloud():
    run_dir = os.environ.get("INSTANCEHA_MINICLOUD_RUN_DIR")
    if run_dir:
        yield MiniCloud.attach(run_dir)
        return
    MiniCloud.install()
    cloud = MiniCloud.in_run_dir(computes=3)
    try:
        cloud.up()
        yield cloud
    finally:
        cloud.down(wipe=True)


@pytest.fixture(scope="session")
def telemetry(minicloud):
    """Ceilometer and Aodh on the session's mini-cloud, with instanceha's shipped
    event definitions (tools/harness/telemetry.py). Opt-in: started by the first
    test that asks (~20 s, plus ~1-2 min to make their venv the first time);
    stopped with the mini-cloud."""
    from harness.telemetry import Telemetry

    return Telemetry(minicloud).up()


@pytest.fixture(scope="session")
def nova_conf_file(minicloud, tmp_path_factory):
    """A [nova] section as an operator would write it, for this cloud."""
    path = tmp_path_factory.mktemp("nova-conf") / "instanceha.conf"
    # cache_ttl 0: the adapter is shared by the whole session, and a test that
    # changes an aggregate must read it back at once (the cache has unit tests)
    daemons.write_conf(str(path), {"nova": dict(minicloud.nova_options(),
                                                valid_interfaces="public", timeout=30,
                                                cache_ttl=0)})
    return str(path)


@pytest.fixture(scope="session")
def nova(nova_conf_file):
    """The adapter under test, built from [nova] options like the controller does."""
    from oslo_config import cfg

    from instanceha.conf import nova as nova_conf

    conf = cfg.ConfigOpts()
    nova_conf.register_opts(conf)
    conf([], default_config_files=[nova_conf_file])
    return nova_conf.nova_client(conf)


@pytest.fixture(scope="session")
def admin(minicloud):
    """openstacksdk as the cloud admin, for the tests' own set-up."""
    return minicloud.connection()


def wait_for(predicate, timeout, what, interval=0.5):
    """Poll ``predicate`` until it returns something true (no timed assertion)."""
    return procs.wait_for(predicate, timeout, what, interval=interval)


def ensure_healthy(cloud: MiniCloud, nova: NovaClient, timeout: float = 120.0) -> None:
    """Every compute running, enabled, not forced down and reported up by Nova."""
    restarted = [h for h in cloud.hosts if not cloud.compute_running(h)]
    for host in restarted:
        cloud.start_compute(host)

    def enable_all():
        # Nova refuses to force a host up while `done` evacuation records remain:
        # the restarted compute turns them `completed` first
        from instanceha.compute.exceptions import NovaBadRequest

        for svc in nova.services():
            if svc.forced_down or svc.disabled:
                try:
                    nova.enable(svc.host)
                except NovaBadRequest:
                    return False
        return True

    wait_for(enable_all, timeout, "every compute enabled again")
    wait_for(lambda: not stale_up(cloud, nova.services()), timeout,
             f"all computes up, each reported by its running process (restarted: {restarted})")
    conn = cloud.connection()
    wait_for(lambda: _disabled_trait_synced(cloud, nova, conn), timeout,
             "placement's COMPUTE_STATUS_DISABLED trait in sync with the enabled services",
             interval=1.0)


def stale_up(cloud: MiniCloud, services) -> list[str]:
    """The computes not yet up *by their running process's own report*.

    Nova calls a service up while its last report is younger than
    ``service_down_time`` (20 s here), whoever sent it: right after a restart,
    the killed process's last report still reads "up" for the rest of those
    20 s while the new process needs 10-15 s to report. Waiting for "up" alone
    let a test start in that window and read the compute "down" moments later
    (test_services_report_every_compute failed so on a clean clone). So a
    compute counts only once its ``updated_at`` is later than the start of the
    process now running (``updated_at`` has whole seconds: 1 s of margin)."""
    waiting = []
    for s in services:
        started = cloud.compute_started_at(s.host)
        if not s.up or started is None or s.updated_at is None \
                or s.updated_at.timestamp() <= started + 1:
            waiting.append(s.host)
    return waiting


DISABLED_TRAIT = "COMPUTE_STATUS_DISABLED"


def _disabled_trait_synced(cloud: MiniCloud, nova: NovaClient, conn) -> bool:
    """Nova syncs the placement trait COMPUTE_STATUS_DISABLED (the scheduler skips
    such hosts: NoValidHost) at an enable only when the compute is up then, else
    at the compute's next resource update, up to a minute later: a host enabled
    (by a test, or by instanceha) before its restarted nova-compute reported is
    not schedulable for a while. Once that compute has reported since it started,
    a disable + enable makes Nova sync the trait at once (an RPC to the compute)."""
    stale = []
    for rp in conn.placement.resource_providers():
        traits = conn.placement.get(f"/resource_providers/{rp.id}/traits",
                                    microversion="1.6").json()["traits"]
        if DISABLED_TRAIT in traits:
            stale.append(rp.name)
    if not stale:
        return True
    services = {s.host: s for s in nova.services()}
    for host in stale:
        svc, started = services.get(host), cloud.compute_started_at(host)
        if svc is None or svc.disabled or started is None or svc.updated_at is None:
            continue
        if svc.updated_at.timestamp() > started + 1:  # reported since it started
            nova.disable(host, f"ensure_healthy: sync {DISABLED_TRAIT}")
            nova.enable(host)
    return False


@pytest.fixture
def healthy_cloud(minicloud, nova):
    ensure_healthy(minicloud, nova)
    yield minicloud
    ensure_healthy(minicloud, nova)


class Servers:
    """Boots test servers on a chosen host and deletes them afterwards."""

    def __init__(self, admin, endpoints):
        self.admin = admin
        self.ep = endpoints
        self.ids: list[str] = []
        self._image = None
        self._flavors = {}

    def flavor(self, name=None, ram=128, extra_specs=None):
        name = name or self.ep["flavor"]
        if name not in self._flavors:
            f = self.admin.compute.find_flavor(name)
            if f is None:
                f = self.admin.compute.create_flavor(name=name, ram=ram, vcpus=1, disk=1)
            if extra_specs:
                self.admin.compute.create_flavor_extra_specs(f, extra_specs)
            self._flavors[name] = f
        return self._flavors[name]

    def boot(self, name, host, metadata=None, flavor=None):
        image = self._image = self._image or self.admin.image.find_image(self.ep["image"])
        s = self.admin.compute.create_server(
            name=name, image_id=image.id, flavor_id=(flavor or self.flavor()).id,
            networks="none", availability_zone=f"nova:{host}", metadata=metadata or {})
        self.ids.append(s.id)
        return s

    def wait_status(self, server_id, status, timeout=120):
        def check():
            s = self.admin.compute.get_server(server_id)
            if s.status == "ERROR" and status != "ERROR":
                raise AssertionError(f"{server_id} went to ERROR: {s.fault}")
            return s if s.status == status and not s.task_state else None

        return wait_for(check, timeout, f"{server_id} {status}")

    def delete_all(self, timeout: float = 300):
        """Delete every server this test booted and wait until Nova has them
        gone: a server left behind lands in the next test's recovery (seen:
        three leftovers evacuated by the next test on a loaded machine). One
        still there after a reset to error and a second delete fails this
        test's teardown, naming it."""
        compute = self.admin.compute
        for sid in self.ids:
            compute.delete_server(sid, ignore_missing=True)
        left = self._wait_gone(timeout / 2)
        for sid in left:  # stuck in a task: reset, delete again
            compute.reset_server_state(sid, "error")
            compute.delete_server(sid, ignore_missing=True)
        left = self._wait_gone(timeout / 2)
        assert not left, f"servers not deleted after {timeout:.0f} s: {left}"

    def _wait_gone(self, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            left = [sid for sid in self.ids
                    if self.admin.compute.find_server(sid, ignore_missing=True) is not None]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(1.0)


@pytest.fixture
def servers(admin, minicloud):
    made = Servers(admin, minicloud.endpoints)
    yield made
    made.delete_all()


class Bus:
    """``instanceha listen`` as a process: every notification, one JSON line each."""

    def __init__(self, tmp_path, transport_url):
        self.sections = {"DEFAULT": {"transport_url": transport_url},
                         "oslo_messaging_notifications": {"driver": "messagingv2"}}
        conf = daemons.write_conf(str(tmp_path / "listen.conf"), self.sections)
        self.path = tmp_path / "events.jsonl"
        self.out = open(self.path, "w")
        self.proc = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), "instanceha"), "--config-file",
             conf, "listen", "--format", "json", "--timeout", "900"],
            stdout=self.out, stderr=subprocess.DEVNULL)

    def events(self, kind, **payload):
        lines = [json.loads(x) for x in self.path.read_text().splitlines() if x.strip()]
        return [e for e in lines if e.get("event_type") == kind
                and all(e["payload"].get(k) == v for k, v in payload.items())]

    def wait(self, kind, timeout=60, **payload):
        return wait_for(lambda: self.events(kind, **payload), timeout,
                        f"{kind} {payload} on the bus")

    def close(self):
        self.proc.kill()
        self.proc.wait()
        self.out.close()
