"""The devstack plugin, run phase by phase against a stub of devstack's
function library (stub_functions.sh) that records every call.

No devstack can run here, so these tests check what stack.sh would be told:
every service the plugin runs is enabled by its settings and has an absolute
command; the options it writes are instanceha's own and are what the
controller needs (Nova credentials, a fencing inventory with one entry per
nova-compute host, the coordinator); each readiness wait dies when its
daemon does not answer; URLs are IPv6-safe; a RHEL-family node without its
own ZooKeeper is refused up front. The readiness checks talk to real sockets:
a ZooKeeper stand-in answering "imok" and an HTTP /readyz, on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import socket
import socketserver
import stat
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from keystoneauth1 import loading as ks_loading
from oslo_config import cfg
from oslo_log import log
from oslo_messaging import opts as om_opts

from instanceha.conf import opts as ih_opts
from instanceha.fencing import inventory

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
DEVSTACK = os.path.join(TOP, "devstack")
PHASES = ("pre-install", "install", "post-config", "extra")
FAKE_SWITCH = ("fencing", "test_only_allow_fake_driver")
"""instanceha's test-only switch that admits the fake fencing driver."""
ALL_IN_ONE = "key,rabbit,mysql,n-api,n-cond,n-sch,n-cpu,placement-api,g-api"


class _ZooKeeperStandIn(socketserver.ThreadingTCPServer):
    """Answers ZooKeeper's "ruok" four-letter word like a running server."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self):
        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                if self.request.recv(4) == b"ruok":
                    self.request.sendall(b"imok")

        super().__init__(("127.0.0.1", 0), Handler)


class _Ready(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(200 if self.path == "/readyz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def daemons_up():
    """A ZooKeeper stand-in and a /readyz endpoint; yields their ports."""
    zk = _ZooKeeperStandIn()
    http = ThreadingHTTPServer(("127.0.0.1", 0), _Ready)
    for s in (zk, http):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    yield zk.server_address[1], http.server_address[1]
    for s in (zk, http):
        s.shutdown()
        s.server_close()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Run:
    """One node's stack.sh (the plugin's phases) against the stub."""

    def __init__(self, tmp_path, phases=PHASES, **env):
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp_path
        self.calls_file = tmp_path / "calls.tsv"
        self.conf_dir = tmp_path / "etc-instanceha"
        script = "\n".join(
            ["set -o errexit", f"source {HERE}/stub_functions.sh",
             f"source {DEVSTACK}/settings"]
            + [f"source {DEVSTACK}/plugin.sh stack {p}" for p in phases])
        base = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CALLS": str(self.calls_file),
                "DEST": str(tmp_path / "stack"), "DATA_DIR": str(tmp_path / "data"),
                "INSTANCEHA_CONF_DIR": str(self.conf_dir), "STUB_DISTRO": "ubuntu",
                "INSTANCEHA_READY_TIMEOUT": "3", "SERVICE_HOST": "127.0.0.1",
                "STUB_COMPUTE_HOSTS": "compute1 compute2"}
        base.update(env)
        self.proc = subprocess.run(["bash", "-c", script], env=base, capture_output=True,
                                   text=True, timeout=120)
        self.calls = [line.split("\t") for line in
                      (self.calls_file.read_text().splitlines()
                       if self.calls_file.exists() else [])]

    @property
    def ok(self):
        return self.proc.returncode == 0

    def of(self, name):
        return [c[1:] for c in self.calls if c[0] == name]

    @property
    def conf_path(self):
        return str(self.conf_dir / "instanceha.conf")

    def conf(self, path=None) -> dict[tuple[str, str], str]:
        """{(section, option): value} of the iniset calls on one file."""
        path = path or self.conf_path
        return {(s, o): v for f, s, o, v in self.of("iniset") if f == path}



def _aio(tmp_path, daemons_up, **env):
    zk_port, http_port = daemons_up
    return Run(tmp_path, ENABLED_SERVICES=ALL_IN_ONE, INSTANCEHA_ZOOKEEPER_PORT=str(zk_port),
               INSTANCEHA_CONTROLLER_PORT=str(http_port), INSTANCEHA_AGENT_PORT=str(http_port),
               INSTANCEHA_COMPUTE_HOSTS="compute3", **env)


def _registered() -> cfg.ConfigOpts:
    """instanceha's options, oslo.log's, oslo.messaging's, and [nova]'s password
    auth plugin."""
    conf = cfg.ConfigOpts()
    log.register_options(conf)
    for group, group_opts in list(ih_opts.list_opts()) + list(om_opts.list_opts()):
        conf.register_opts(group_opts, group=None if str(group) == "DEFAULT" else group)
    conf.register_opts(ks_loading.get_auth_common_conf_options(), group="nova")
    conf.register_opts(ks_loading.get_auth_plugin_conf_options("password"), group="nova")
    return conf


def test_settings_define_the_plugin_and_enable_what_it_runs(tmp_path, daemons_up):
    run = _aio(tmp_path, daemons_up)
    assert run.ok, run.proc.stderr
    assert run.of("define_plugin") == [["instanceha"]]
    started = run.of("run_process")
    assert [name for name, _cmd, _on in started] == \
        ["instanceha-zookeeper", "instanceha-agent", "instanceha-controller"]
    for name, cmd, enabled in started:
        assert enabled == "1", f"{name} is run but not enabled: devstack would skip it"
        program = cmd.split()[0]
        assert program.startswith("/"), cmd
    programs = {name: cmd.split()[0] for name, cmd, _ in started}
    assert programs["instanceha-zookeeper"] == "/usr/bin/java"
    assert programs["instanceha-controller"] == "/opt/stack/data/venv/bin/instanceha-controller"
    assert programs["instanceha-agent"] == "/opt/stack/data/venv/bin/instanceha-agent"
    for name, cmd, _ in started:
        if name != "instanceha-zookeeper":
            assert f"--config-file {run.conf_path}" in cmd


def test_the_phases_write_what_the_controller_needs(tmp_path, daemons_up):
    run = _aio(tmp_path, daemons_up)
    assert run.ok, run.proc.stderr
    c = run.conf()
    zk_port = daemons_up[0]
    assert c[("coordination", "backend_url")] == f"zookeeper://127.0.0.1:{zk_port}"
    assert c[("fencing", "inventory_file")] == str(run.conf_dir / "fencing-inventory.yaml")
    for key in ("auth_type", "auth_url", "username", "password", "user_domain_name",
                "project_name", "project_domain_name", "region_name"):
        assert c[("nova", key)], key
    assert c[("nova", "username")] == "instanceha"
    assert c[("nova", "auth_type")] == "password"
    assert run.of("create_service_user") == [["instanceha", "admin"]]
    assert c[("DEFAULT", "transport_url")].startswith("rabbit://")
    assert c[("oslo_messaging_notifications", "driver")] == "messagingv2"
    assert c[("agent", "watched_processes")].startswith("nova-compute:")
    # Nova's versioned notifications, without dropping the unversioned ones
    assert ["/etc/nova/nova.conf", "notifications", "notification_format", "both"] in \
        run.of("iniset")


def test_every_option_written_is_one_of_instancehas(tmp_path, daemons_up):
    run = _aio(tmp_path, daemons_up)
    assert run.ok, run.proc.stderr
    switch = FAKE_SWITCH
    conf = _registered()
    unknown, parsed = [], {}
    for (section, option), value in run.conf().items():
        if (section, option) == switch:
            continue
        group = None if section == "DEFAULT" else section
        try:
            opt = conf._get_opt_info(option, group)["opt"]
        except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
            unknown.append((section, option))
            continue
        parsed[(section, option)] = opt.type(value)  # raises on a value of the wrong type
    assert not unknown, f"options instanceha does not know: {unknown}"
    assert parsed[("coordination", "session_timeout")] == 2.0
    assert parsed[("telemetry", "controller_port")] == daemons_up[1]
    assert parsed[("nova_notifications", "enabled")] is True


def test_the_fake_driver_is_chosen_consciously(tmp_path, daemons_up):
    run = _aio(tmp_path, daemons_up)
    assert run.ok, run.proc.stderr
    section, option = FAKE_SWITCH
    assert run.conf()[(section, option)] == "True"
    (warning,) = run.of("warn")
    assert "FAKE" in warning[0] and "Test clouds only" in warning[0]
    groups = {getattr(g, "name", g): opts for g, opts in ih_opts.list_opts()}
    assert option in {o.dest for o in groups.get(section, [])}, \
        f"instanceha has no [{section}] {option}"


def test_one_inventory_entry_per_nova_compute_host(tmp_path, daemons_up):
    run = _aio(tmp_path, daemons_up)
    assert run.ok, run.proc.stderr
    path = run.conf_dir / "fencing-inventory.yaml"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    inv = inventory.load(str(path))  # instanceha's own validation
    assert sorted(inv.hosts()) == ["compute1", "compute2", "compute3"]
    assert [["--os-cloud", "devstack-admin", "--os-region", "RegionOne", "compute", "service",
             "list", "--service", "nova-compute", "-f", "value", "-c", "Host"]] == \
        run.of("openstack")
    assert run.of("wait_for_compute"), "Nova's local compute is awaited before it is listed"


def test_real_bmcs_one_per_host_and_the_password_in_a_private_file(tmp_path, daemons_up):
    run = _aio(tmp_path, daemons_up, INSTANCEHA_FENCING_DRIVER="ipmi",
               INSTANCEHA_BMC_ADDRESSES="compute1=192.0.2.11 compute2=192.0.2.12 "
                                        "compute3=192.0.2.13",
               INSTANCEHA_BMC_PASSWORD="bmc-Secret-1")
    assert run.ok, run.proc.stderr
    assert not run.of("warn")
    switch = FAKE_SWITCH
    assert switch not in run.conf()
    path = run.conf_dir / "fencing-inventory.yaml"
    assert "bmc-Secret-1" not in path.read_text() and "bmc-Secret-1" not in run.proc.stdout
    inv = inventory.load(str(path))
    assert sorted(inv.hosts()) == ["compute1", "compute2", "compute3"]
    pw = run.conf_dir / "bmc" / "password"
    assert pw.read_text().strip() == "bmc-Secret-1"
    assert stat.S_IMODE(os.stat(pw).st_mode) == 0o600


def test_a_host_without_a_bmc_stops_stack_sh_naming_it(tmp_path, daemons_up):
    run = _aio(tmp_path, daemons_up, INSTANCEHA_FENCING_DRIVER="redfish",
               INSTANCEHA_BMC_ADDRESSES="compute1=192.0.2.11", INSTANCEHA_BMC_PASSWORD="x")
    assert not run.ok
    (die,) = run.of("die")
    assert "compute2" in die[0] and "INSTANCEHA_BMC_ADDRESSES" in die[0]
    assert "instanceha-controller" not in [r[0] for r in run.of("run_process")]


def test_a_controller_that_never_gets_ready_stops_stack_sh(tmp_path, daemons_up):
    zk_port, _ = daemons_up
    run = Run(tmp_path, ENABLED_SERVICES=ALL_IN_ONE, INSTANCEHA_ZOOKEEPER_PORT=str(zk_port),
              INSTANCEHA_AGENT_PORT=str(daemons_up[1]),
              INSTANCEHA_CONTROLLER_PORT=str(_free_port()))
    assert not run.ok
    (die,) = run.of("die")
    assert "instanceha-controller not ready" in die[0]
    assert "journalctl -u devstack@instanceha-controller" in die[0]


def test_a_zookeeper_that_never_answers_stops_stack_sh(tmp_path, daemons_up):
    run = Run(tmp_path, ENABLED_SERVICES=ALL_IN_ONE, INSTANCEHA_ZOOKEEPER_PORT=str(_free_port()),
              INSTANCEHA_CONTROLLER_PORT=str(daemons_up[1]),
              INSTANCEHA_AGENT_PORT=str(daemons_up[1]))
    assert not run.ok
    (die,) = run.of("die")
    assert "ZooKeeper did not answer" in die[0]
    assert [r[0] for r in run.of("run_process")] == ["instanceha-zookeeper"]


def test_a_compute_only_node_runs_the_agent_against_the_controllers_zookeeper(
        tmp_path, daemons_up):
    _, http_port = daemons_up
    run = Run(tmp_path, ENABLED_SERVICES="n-cpu,placement-client", SERVICE_HOST="192.0.2.10",
              INSTANCEHA_AGENT_PORT=str(http_port))
    assert run.ok, run.proc.stderr
    assert [r[0] for r in run.of("run_process")] == ["instanceha-agent"]
    c = run.conf()
    assert c[("coordination", "backend_url")] == "zookeeper://192.0.2.10:2181"
    assert not [k for k in c if k[0] == "nova"], "no Nova credentials on a compute node"
    assert not run.of("install_package")


def test_ipv6_addresses_are_bracketed_in_urls_and_bare_for_zookeeper(tmp_path):
    run = Run(tmp_path, phases=("post-config",), ENABLED_SERVICES=ALL_IN_ONE,
              SERVICE_HOST="[2001:db8::10]", SERVICE_LOCAL_HOST="::1")
    assert run.ok, run.proc.stderr
    c = run.conf()
    assert c[("coordination", "backend_url")] == "zookeeper://[2001:db8::10]:2181"
    assert c[("telemetry", "bind_host")] == "::1"
    out = subprocess.run(
        ["bash", "-c", f"source {HERE}/stub_functions.sh; source {DEVSTACK}/settings; "
         f"source {DEVSTACK}/plugin.sh; instanceha_local_url 9841 /readyz; "
         "INSTANCEHA_ZOOKEEPER_HOST=2001:db8::10 instanceha_zookeeper_url"],
        env={"PATH": os.environ["PATH"], "CALLS": str(tmp_path / "c2"),
             "ENABLED_SERVICES": "", "SERVICE_LOCAL_HOST": "::1",
             "SERVICE_HOST": "[2001:db8::10]"}, capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == ["http://[::1]:9841/readyz", "zookeeper://[2001:db8::10]:2181"]


def test_zoo_cfg_listens_where_the_agents_connect(tmp_path, daemons_up):
    run = _aio(tmp_path, daemons_up)
    assert run.ok, run.proc.stderr
    text = (tmp_path / "data" / "instanceha-zookeeper" / "zoo.cfg").read_text()
    assert "clientPortAddress=127.0.0.1" in text
    assert f"clientPort={daemons_up[0]}" in text
    assert "tickTime=500" in text  # a 2 s session is granted (2..20 ticks)


def test_rhel_without_its_own_zookeeper_is_refused_before_anything_is_installed(tmp_path):
    run = Run(tmp_path, phases=("pre-install",), ENABLED_SERVICES=ALL_IN_ONE, STUB_DISTRO="rhel")
    assert not run.ok
    (die,) = run.of("die")
    assert "INSTANCEHA_ZOOKEEPER_URL" in die[0] and "disable_service instanceha-zookeeper" in die[0]
    assert not run.of("install_package")
    ok = Run(tmp_path / "ext", phases=("pre-install",), ENABLED_SERVICES=ALL_IN_ONE,
             STUB_DISTRO="rhel", INSTANCEHA_ZOOKEEPER_URL="zookeeper://zk1:2181")
    assert ok.ok, ok.proc.stderr
    assert not ok.of("install_package")


def test_an_unknown_fencing_driver_is_refused(tmp_path):
    run = Run(tmp_path, phases=("pre-install",), ENABLED_SERVICES=ALL_IN_ONE,
              INSTANCEHA_FENCING_DRIVER="ipmitool")
    assert not run.ok
    assert "ipmitool" in run.of("die")[0][0]


def test_nova_notification_queues_are_bounded_where_rabbitmq_runs(tmp_path, daemons_up):
    run = _aio(tmp_path, daemons_up)
    assert run.ok, run.proc.stderr
    (policy,) = [c for c in run.of("sudo") if c[0] == "rabbitmqctl"]
    pattern, definition = policy[-2], json.loads(policy[-1])
    for queue in ("versioned_notifications.info", "versioned_notifications.error",
                  "notifications.info", "instanceha-nova-events"):
        assert re.search(pattern, queue), queue
    assert not re.search(pattern, "alarm.all.sample")
    assert definition["max-length"] == 10000 and definition["message-ttl"] == 3600000
    assert "--apply-to" in policy and "queues" in policy


def test_unstack_stops_every_service(tmp_path):
    run = Run(tmp_path, phases=(), ENABLED_SERVICES=ALL_IN_ONE)
    script = (f"source {HERE}/stub_functions.sh; source {DEVSTACK}/settings; "
              f"source {DEVSTACK}/plugin.sh unstack")
    subprocess.run(["bash", "-c", script], env={"PATH": os.environ["PATH"],
                                                "CALLS": str(run.calls_file),
                                                "ENABLED_SERVICES": ALL_IN_ONE},
                   check=True, timeout=30)
    stopped = [line.split("\t")[1] for line in run.calls_file.read_text().splitlines()
               if line.startswith("stop_process")]
    assert sorted(stopped) == ["instanceha-agent", "instanceha-controller", "instanceha-zookeeper"]
