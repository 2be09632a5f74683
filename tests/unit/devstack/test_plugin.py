"""The devstack plugin, run phase by phase against a stub of devstack's
function library (stub_functions.sh) that records every call.

No devstack can run here, so these tests check what stack.sh would be told:
every service the plugin runs is enabled by its settings and has an absolute
command; the options it writes are instanceha's own and are what the
controller needs (Nova credentials, a fencing inventory with one entry per
nova-compute host, the coordinator with its TLS CA and each role's
credentials); each readiness wait dies when its daemon does not answer; URLs
are IPv6-safe; a RHEL-family node without its own ZooKeeper is refused up
front. The readiness checks talk to real sockets: a ZooKeeper stand-in
answering "imok" and an HTTP /readyz, on 127.0.0.1. instanceha's own CLI runs
for real (credentials, config checks) except "coordination check", which
needs a ZooKeeper: tests/functional/test_devstack.py runs the whole plugin,
that check included, against the ZooKeeper and daemons it starts.
"""

from __future__ import annotations

import getpass
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
from tests.unit.devstack.stackrun import ALL_IN_ONE, BIN, DEVSTACK, HERE, Run

FAKE_SWITCH = ("fencing", "test_only_allow_fake_driver")
"""instanceha's test-only switch that admits the fake fencing driver."""


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


def _aio(tmp_path, daemons_up, **env):
    zk_port, http_port = daemons_up
    return Run(tmp_path, ENABLED_SERVICES=ALL_IN_ONE, INSTANCEHA_ZOOKEEPER_PORT=str(zk_port),
               INSTANCEHA_CONTROLLER_PORT=str(http_port), INSTANCEHA_AGENT_PORT=str(http_port),
               INSTANCEHA_COMPUTE_HOSTS="compute3", **env)


@pytest.fixture(scope="module")
def aio(tmp_path_factory, daemons_up):
    """One all-in-one stack, read by the tests that only look at what it did."""
    run = _aio(tmp_path_factory.mktemp("aio"), daemons_up)
    assert run.ok, run.proc.stderr
    return run


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """An all-in-one node's configuration (stack.sh up to post-config), on
    which the tests of the extra phase's failures run that phase alone."""
    run = Run(tmp_path_factory.mktemp("prepared"), phases=("pre-install", "install",
                                                            "post-config"),
              ENABLED_SERVICES=ALL_IN_ONE)
    assert run.ok, run.proc.stderr
    return run


def _extra(tmp_path, prepared, phases=("extra",), **env):
    """stack.sh's extra phase (or ``phases``) on the prepared node's files."""
    return Run(tmp_path, phases=phases, ENABLED_SERVICES=ALL_IN_ONE,
               INSTANCEHA_CONF_DIR=str(prepared.conf_dir),
               DATA_DIR=str(prepared.tmp / "data"),
               INSTANCEHA_AGENT_SESSION_DIR=str(prepared.tmp / "run"), **env)


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


def _loaded(*files) -> cfg.ConfigOpts:
    """The configuration a daemon started with these --config-file reads."""
    from instanceha.cmd import common

    conf = common.make_conf()
    conf([a for f in files for a in ("--config-file", f)], project="instanceha",
         default_config_files=[], default_config_dirs=[])
    return conf


def _cmd_files(cmd: str) -> list[str]:
    words = cmd.split()
    return [words[i + 1] for i, w in enumerate(words) if w == "--config-file"]


def test_settings_define_the_plugin_and_enable_what_it_runs(aio):
    run = aio
    assert run.of("define_plugin") == [["instanceha"]]
    started = run.of("run_process")
    # the controller first: its leader provisions the slot the agent joins
    assert [name for name, _cmd, _on in started] == \
        ["instanceha-zookeeper", "instanceha-controller", "instanceha-agent"]
    for name, cmd, enabled in started:
        assert enabled == "1", f"{name} is run but not enabled: devstack would skip it"
        program = cmd.split()[0]
        assert program.startswith("/"), cmd
    programs = {name: cmd.split()[0] for name, cmd, _ in started}
    assert programs["instanceha-zookeeper"] == "/usr/bin/java"
    assert programs["instanceha-controller"] == f"{BIN}/instanceha-controller"
    assert programs["instanceha-agent"] == f"{BIN}/instanceha-agent"
    cmds = {name: cmd for name, cmd, _ in started}
    assert _cmd_files(cmds["instanceha-controller"]) == [run.conf_path, run.path("controller.conf")]
    assert _cmd_files(cmds["instanceha-agent"]) == [run.conf_path, run.path("agent.conf")]


def test_the_phases_write_what_the_controller_needs(aio):
    run = aio
    c = run.conf()
    assert c[("coordination", "backend_url")] == "zookeeper://127.0.0.1:2281"
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
    assert c[("agent", "session_file")] == str(run.tmp / "run" / "agent-session.json")
    assert stat.S_IMODE(os.stat(run.tmp / "run").st_mode) == 0o700
    # made again at each boot by systemd-tmpfiles, private to the stack user
    tmpfiles = (run.tmp / "tmpfiles.d" / "instanceha.conf").read_text().split()
    assert tmpfiles == ["d", str(run.tmp / "run"), "0700", getpass.getuser(), "-", "-"]
    # Nova's versioned notifications, without dropping the unversioned ones
    assert ["/etc/nova/nova.conf", "notifications", "notification_format", "both"] in \
        run.of("iniset")


def test_every_option_written_is_one_of_instancehas(aio):
    run = aio
    switch = FAKE_SWITCH
    conf = _registered()
    unknown, parsed = [], {}
    written = [(f, s, o, v) for f, s, o, v in run.of("iniset") if f.startswith(str(run.conf_dir))]
    assert {f for f, *_ in written} == {run.conf_path, run.path("controller.conf"),
                                         run.path("agent.conf")}
    for _f, section, option, value in written:
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
    assert parsed[("coordination", "tls")] is True
    assert parsed[("telemetry", "controller_port")] == int(run.conf()[("telemetry",
                                                                       "controller_port")])
    assert parsed[("nova_notifications", "enabled")] is True


def test_every_role_is_configured_secure_as_its_daemon_checks_it(aio):
    """Each daemon's files, read as the daemon reads them, pass instanceha's own
    security check for its role: credentials of that role (and host), TLS
    against the plugin's CA, and never the insecure switch."""
    from instanceha.conf import policy

    run = aio
    ca = run.path("zookeeper-ca.pem")
    assert ("coordination", "insecure") not in {(s, o) for _f, s, o, _v in run.of("iniset")}
    for role, extra, creds_file in (
            ("controller", "controller.conf", "coordination-controller.yaml"),
            ("agent", "agent.conf", "coordination-agent.yaml"),
            (None, None, "coordination-operator.yaml")):  # the CLI: instanceha.conf alone
        files = [run.conf_path] + ([run.path(extra)] if extra else [])
        conf = _loaded(*files)
        c = conf.coordination
        assert c.credentials_file == run.path(creds_file)
        assert c.tls is True and c.tls_ca_file == ca and c.tls_check_hostname is True
        assert c.insecure is False
        assert c.backend_url == "zookeeper://127.0.0.1:2281"
        resolved, creds, tls = policy.coordination_security(conf, role)
        assert resolved == (role or "operator")
        assert creds is not None and creds.role == resolved
        assert tls is not None and tls.ca_file == ca
        assert policy.insecure_warning(conf) is None
        if role == "agent":
            assert creds.host == socket.gethostname() == conf.host
    # the daemons' own start checks ran before each was started, and passed
    checks = [c for c in run.of("instanceha") if "config" in c and "check" in c]
    assert [c[c.index("--role") + 1] for c in checks] == ["controller", "agent"]
    assert "coordination security (as controller)" in run.proc.stdout
    assert "coordination security (as agent)" in run.proc.stdout
    assert "INSECURE" not in run.proc.stdout + run.proc.stderr


def test_credentials_are_made_by_instancehas_cli_private_to_the_stack_user(aio):
    from instanceha.coordination import credentials as cr

    run = aio
    made = [c for c in run.of("instanceha") if "credentials" in c]
    whats = [c[c.index("credentials") + 1:c.index("--output")] for c in made]
    assert whats == [["new-key"], ["operator"], ["agent", socket.gethostname()],
                     ["agent", "compute3"]]
    for c in made:
        # from the controllers' key, named by the controller's configuration
        assert _cmd_files(" ".join(c)) == [run.conf_path, run.path("controller.conf")]
    files = {"controller": run.path("coordination-controller.yaml"),
             "operator": run.path("coordination-operator.yaml"),
             "agent": run.path("coordination-agent.yaml"),
             "compute3": run.path("agents/compute3.yaml")}
    for name, path in files.items():
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o600, name
        assert st.st_uid == os.getuid(), name
        creds = cr.load(path)  # instanceha's own checks (mode, role, content)
        assert creds.role == ("agent" if name == "compute3" else name)
    assert cr.load(files["agent"]).host == socket.gethostname()
    assert cr.load(files["compute3"]).host == "compute3"
    # derived from the one key: the controllers accept them
    key = cr.load(files["controller"]).keys[0]
    assert cr.load(files["compute3"]).identities == cr.for_agent(key, "compute3").identities
    assert cr.load(files["operator"]).identities == cr.for_operator(key).identities
    assert stat.S_IMODE(os.stat(run.path("agents")).st_mode) == 0o700
    for conf in ("controller.conf", "agent.conf"):
        assert stat.S_IMODE(os.stat(run.path(conf)).st_mode) == 0o640
    assert "compute3.yaml" in run.proc.stdout  # the copy to make is said


def _secrets(run) -> list[str]:
    from instanceha.coordination import credentials as cr

    found = []
    for name in ("coordination-controller.yaml", "coordination-operator.yaml",
                 "coordination-agent.yaml", "agents/compute3.yaml"):
        creds = cr.load(run.path(name))
        found += [k.reveal() for k in creds.keys]
        found += [i.password.reveal() for i in creds.identities]
    return found


def test_no_coordination_secret_on_a_command_line_in_a_config_or_in_the_output(aio):
    run = aio
    secrets = set(_secrets(run))
    # the key, the controllers', the operators', 2 agents' own, the agents' shared
    assert len(secrets) == 6
    argv = "\n".join("\t".join(c) for c in run.calls)  # every call, run_process's commands
    logged = run.proc.stdout + run.proc.stderr
    configs = "".join(open(run.path(f)).read() for f in
                      ("instanceha.conf", "controller.conf", "agent.conf"))
    for secret in secrets:
        assert secret not in argv
        assert secret not in logged
        assert secret not in configs


def test_zookeeper_serves_tls_with_a_certificate_from_the_plugins_own_ca(aio):
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    run = aio
    data = run.tmp / "data" / "instanceha-zookeeper"
    cfg_lines = dict(line.split("=", 1) for line in (data / "zoo.cfg").read_text().splitlines())
    assert cfg_lines["secureClientPort"] == "2281"
    assert cfg_lines["secureClientPortAddress"] == "127.0.0.1"
    # the plain port: four-letter words, on loopback only
    assert cfg_lines["clientPortAddress"] == "127.0.0.1"
    assert cfg_lines["clientPort"] == str(run.conf()[("telemetry", "agent_port")] and
                                          _zk_plain_port(run))
    assert cfg_lines["serverCnxnFactory"] == "org.apache.zookeeper.server.NettyServerCnxnFactory"
    assert cfg_lines["ssl.keyStore.type"] == cfg_lines["ssl.trustStore.type"] == "PEM"
    assert cfg_lines["tickTime"] == "500"  # a 2 s session is granted (2..20 ticks)
    keystore = cfg_lines["ssl.keyStore.location"]
    assert stat.S_IMODE(os.stat(keystore).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(data / "tls").st_mode) == 0o700
    pem = open(keystore, "rb").read()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    server = x509.load_pem_x509_certificate(pem[pem.index(b"-----BEGIN CERTIFICATE"):])
    ca = x509.load_pem_x509_certificate(open(run.path("zookeeper-ca.pem"), "rb").read())
    assert open(cfg_lines["ssl.trustStore.location"], "rb").read() == \
        open(run.path("zookeeper-ca.pem"), "rb").read()
    assert stat.S_IMODE(os.stat(run.path("zookeeper-ca.pem")).st_mode) == 0o644
    assert server.issuer == ca.subject
    ca.public_key().verify(server.signature, server.tbs_certificate_bytes,
                           ec.ECDSA(server.signature_hash_algorithm))
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    assert socket.gethostname() in san.get_values_for_type(x509.DNSName)
    assert not list(data.glob("tls/*.csr"))
    # the TLS port needs Netty on the class path (Debian's zookeeper.jar names none)
    (zk_cmd,) = [cmd for name, cmd, _ in run.of("run_process") if name == "instanceha-zookeeper"]
    classpath = zk_cmd.split()[zk_cmd.split().index("-cp") + 1]
    if os.path.exists("/usr/share/java/netty-handler.jar"):
        assert "/usr/share/java/netty-handler.jar" in classpath.split(":")


def _zk_plain_port(run) -> str:
    words = run.proc.stdout.split("Waiting for ZooKeeper on 127.0.0.1:", 1)[1]
    return words.split()[0].rstrip(".")


def test_a_restack_keeps_the_controllers_key_and_its_ca(tmp_path, prepared):
    from instanceha.coordination import credentials as cr

    first = prepared
    key = cr.load(first.path("coordination-controller.yaml")).keys[0].reveal()
    ca = open(first.path("zookeeper-ca.pem")).read()
    again = _extra(tmp_path, prepared, phases=("post-config",))
    assert again.ok, again.proc.stderr
    assert [c for c in again.of("instanceha") if "new-key" in c] == []
    # ZooKeeper's data (kept) carries ACLs derived from that key
    assert cr.load(again.path("coordination-controller.yaml")).keys[0].reveal() == key
    assert open(again.path("zookeeper-ca.pem")).read() == ca


def test_the_fake_driver_is_chosen_consciously(aio):
    run = aio
    section, option = FAKE_SWITCH
    assert run.conf()[(section, option)] == "True"
    (warning,) = run.of("warn")
    assert "FAKE" in warning[0] and "Test clouds only" in warning[0]
    groups = {getattr(g, "name", g): opts for g, opts in ih_opts.list_opts()}
    assert option in {o.dest for o in groups.get(section, [])}, \
        f"instanceha has no [{section}] {option}"


def test_one_inventory_entry_per_nova_compute_host(aio):
    run = aio
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


def test_a_host_without_a_bmc_stops_stack_sh_naming_it(tmp_path, prepared, daemons_up):
    run = _extra(tmp_path, prepared, INSTANCEHA_FENCING_DRIVER="redfish",
                 INSTANCEHA_ZOOKEEPER_PORT=str(daemons_up[0]),
                 INSTANCEHA_BMC_ADDRESSES="compute1=192.0.2.11", INSTANCEHA_BMC_PASSWORD="x")
    assert not run.ok
    (die,) = run.of("die")
    assert "compute2" in die[0] and "INSTANCEHA_BMC_ADDRESSES" in die[0]
    assert "instanceha-controller" not in [r[0] for r in run.of("run_process")]


def test_a_controller_that_never_gets_ready_stops_stack_sh(tmp_path, prepared, daemons_up):
    zk_port, _ = daemons_up
    run = _extra(tmp_path, prepared, INSTANCEHA_ZOOKEEPER_PORT=str(zk_port),
                 INSTANCEHA_AGENT_PORT=str(daemons_up[1]),
                 INSTANCEHA_CONTROLLER_PORT=str(_free_port()))
    assert not run.ok
    (die,) = run.of("die")
    assert "instanceha-controller not ready" in die[0]
    assert "journalctl -u devstack@instanceha-controller" in die[0]


def test_a_coordination_check_with_findings_stops_stack_sh(tmp_path, prepared, daemons_up):
    zk_port, http_port = daemons_up
    run = _extra(tmp_path, prepared, STUB_COORDINATION_CHECK="findings",
                 INSTANCEHA_ZOOKEEPER_PORT=str(zk_port),
                 INSTANCEHA_CONTROLLER_PORT=str(http_port), INSTANCEHA_AGENT_PORT=str(http_port))
    assert not run.ok
    (die,) = run.of("die")
    assert "instanceha coordination check failed (exit 1)" in die[0]
    assert "1 wider than the model" in die[0]
    (check,) = [c for c in run.of("instanceha") if "coordination" in c and "check" in c]
    # with the controllers' credentials, after both daemons were ready
    assert _cmd_files(" ".join(check)) == [run.conf_path, run.path("controller.conf")]
    assert [r[0] for r in run.of("run_process")] == \
        ["instanceha-zookeeper", "instanceha-controller", "instanceha-agent"]
    assert run.calls[-2][0] == "instanceha" and "check" in run.calls[-2]


def test_a_zookeeper_that_never_answers_stops_stack_sh(tmp_path, prepared, daemons_up):
    run = _extra(tmp_path, prepared, INSTANCEHA_ZOOKEEPER_PORT=str(_free_port()),
                 INSTANCEHA_CONTROLLER_PORT=str(daemons_up[1]),
                 INSTANCEHA_AGENT_PORT=str(daemons_up[1]))
    assert not run.ok
    (die,) = run.of("die")
    assert "ZooKeeper did not answer" in die[0]
    assert [r[0] for r in run.of("run_process")] == ["instanceha-zookeeper"]


def _copied_from_the_controller(tmp_path, host=None):
    """What an operator copies to a compute-only node: the ZooKeeper CA and the
    agent's credentials the controller node made for it."""
    from instanceha.coordination import credentials as cr
    from instanceha.secret import Secret

    etc = tmp_path / "etc-instanceha"
    etc.mkdir(parents=True)
    (etc / "zookeeper-ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    cr.write(str(etc / "coordination-agent.yaml"),
             cr.for_agent(Secret(cr.new_key()), host or socket.gethostname()))


def test_a_compute_only_node_runs_the_agent_against_the_controllers_zookeeper(
        tmp_path, daemons_up):
    _, http_port = daemons_up
    _copied_from_the_controller(tmp_path)
    run = Run(tmp_path, ENABLED_SERVICES="n-cpu,placement-client", SERVICE_HOST="192.0.2.10",
              INSTANCEHA_AGENT_PORT=str(http_port))
    assert run.ok, run.proc.stderr
    assert [r[0] for r in run.of("run_process")] == ["instanceha-agent"]
    c = run.conf()
    assert c[("coordination", "backend_url")] == "zookeeper://192.0.2.10:2281"
    assert c[("coordination", "tls_ca_file")] == run.path("zookeeper-ca.pem")
    assert ("coordination", "credentials_file") not in c  # no operator's file here
    assert run.conf(run.path("agent.conf")) == {
        ("coordination", "credentials_file"): run.path("coordination-agent.yaml")}
    assert not [k for k in c if k[0] == "nova"], "no Nova credentials on a compute node"
    assert not run.of("install_package")
    # no key here, nothing made: only the agent's own start check ran
    assert [c for c in run.of("instanceha") if "credentials" in c] == []
    assert not os.path.exists(run.path("coordination-controller.yaml"))
    assert not [c for c in run.of("instanceha") if "coordination" in c and "check" in c]


def test_a_compute_only_node_without_its_copied_files_is_refused_up_front(tmp_path):
    run = Run(tmp_path, phases=("pre-install",), ENABLED_SERVICES="n-cpu,placement-client")
    assert not run.ok
    (die,) = run.of("die")
    assert "INSTANCEHA_ZOOKEEPER_CA_FILE" in die[0]
    (tmp_path / "b" / "etc-instanceha").mkdir(parents=True)
    (tmp_path / "b" / "etc-instanceha" / "zookeeper-ca.pem").write_text("x")
    run = Run(tmp_path / "b", phases=("pre-install",), ENABLED_SERVICES="n-cpu,placement-client")
    assert not run.ok
    (die,) = run.of("die")
    host = socket.gethostname()
    assert "INSTANCEHA_AGENT_CREDENTIALS" in die[0] and "INSTANCEHA_COMPUTE_HOSTS" in die[0]
    assert f"agents/{host}.yaml" in die[0]
    assert not run.of("install_package")


def test_an_agent_given_another_hosts_credentials_is_not_started(tmp_path, daemons_up):
    _, http_port = daemons_up
    _copied_from_the_controller(tmp_path, host="compute9")
    run = Run(tmp_path, ENABLED_SERVICES="n-cpu,placement-client", SERVICE_HOST="192.0.2.10",
              INSTANCEHA_AGENT_PORT=str(http_port))
    assert not run.ok
    (die,) = run.of("die")
    assert "config check --role agent" in die[0]
    assert "compute9" in die[0] and "credentials_file" in die[0]
    assert not run.of("run_process")


def test_ipv6_addresses_are_bracketed_in_urls_and_bare_for_zookeeper(tmp_path):
    run = Run(tmp_path, phases=("post-config",), ENABLED_SERVICES=ALL_IN_ONE,
              SERVICE_HOST="[2001:db8::10]", SERVICE_LOCAL_HOST="::1")
    assert run.ok, run.proc.stderr
    c = run.conf()
    assert c[("coordination", "backend_url")] == "zookeeper://[2001:db8::10]:2281"
    assert c[("telemetry", "bind_host")] == "::1"
    from cryptography import x509

    pem = open(run.tmp / "data" / "instanceha-zookeeper" / "tls" / "server.crt", "rb").read()
    san = x509.load_pem_x509_certificate(pem).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert "2001:db8::10" in [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    out = subprocess.run(
        ["bash", "-c", f"source {HERE}/stub_functions.sh; source {DEVSTACK}/settings; "
         f"source {DEVSTACK}/plugin.sh; instanceha_local_url 9841 /readyz; "
         "INSTANCEHA_ZOOKEEPER_HOST=2001:db8::10 instanceha_zookeeper_url"],
        env={"PATH": os.environ["PATH"], "CALLS": str(tmp_path / "c2"),
             "ENABLED_SERVICES": "", "SERVICE_LOCAL_HOST": "::1",
             "SERVICE_HOST": "[2001:db8::10]"}, capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == ["http://[::1]:9841/readyz", "zookeeper://[2001:db8::10]:2281"]


def test_rhel_without_its_own_zookeeper_is_refused_before_anything_is_installed(tmp_path):
    run = Run(tmp_path, phases=("pre-install",), ENABLED_SERVICES=ALL_IN_ONE, STUB_DISTRO="rhel")
    assert not run.ok
    (die,) = run.of("die")
    assert "INSTANCEHA_ZOOKEEPER_URL" in die[0] and "disable_service instanceha-zookeeper" in die[0]
    assert "INSTANCEHA_ZOOKEEPER_CA_FILE" in die[0]
    assert not run.of("install_package")
    ext = tmp_path / "ext"
    (ext / "etc-instanceha").mkdir(parents=True)
    (ext / "etc-instanceha" / "zookeeper-ca.pem").write_text("x")  # the ensemble's CA
    ok = Run(ext, phases=("pre-install",), ENABLED_SERVICES=ALL_IN_ONE,
             STUB_DISTRO="rhel", INSTANCEHA_ZOOKEEPER_URL="zookeeper://zk1:2281")
    assert ok.ok, ok.proc.stderr
    assert not ok.of("install_package")


@pytest.mark.parametrize("version,accepted", [("3.4.13-6ubuntu4", False), ("(none)", False),
                                              ("3.8.0-11+deb12u2", True), ("3.9.2-1", True)])
def test_a_zookeeper_without_tls_is_refused_before_anything_is_installed(tmp_path, version,
                                                                          accepted):
    run = Run(tmp_path, phases=("pre-install",), ENABLED_SERVICES=ALL_IN_ONE,
              STUB_ZOOKEEPER_VERSION=version)
    assert run.ok is accepted, run.proc.stderr
    if not accepted:
        (die,) = run.of("die")
        assert "3.5.5" in die[0] and "INSTANCEHA_ZOOKEEPER_URL" in die[0]
        assert not run.of("install_package")
    else:
        (packages,) = run.of("install_package")
        assert "libnetty-java" in packages and "openssl" in packages


def test_an_unknown_fencing_driver_is_refused(tmp_path):
    run = Run(tmp_path, phases=("pre-install",), ENABLED_SERVICES=ALL_IN_ONE,
              INSTANCEHA_FENCING_DRIVER="ipmitool")
    assert not run.ok
    assert "ipmitool" in run.of("die")[0][0]


def test_nova_notification_queues_are_bounded_where_rabbitmq_runs(aio):
    run = aio
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
