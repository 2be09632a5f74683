"""The devstack plugin, end to end on this machine. Its phases run against the
stub of devstack's function library (no devstack can run here), but what
``run_process`` starts is real: ZooKeeper from the Debian package with the
plugin's ``zoo.cfg``, its openssl-made CA and server certificate; the
controller and the agent with the configuration files and credentials the
plugin made with instanceha's CLI. So is the readiness at the end: each
daemon's ``/readyz`` (the agent is ready once it joined, in the slot the
leader provisioned) and ``instanceha coordination check`` over TLS with the
controllers' credentials; then a compute-only node stacks with the two files
copied from the controller node, and its agent joins. Nova is not there (the controller logs that it
cannot reach Keystone); the inventory names this host with the fake driver.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys

import pytest
from harness import procs
from harness.zookeeper import four_letter
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError

from tests.unit.devstack.stackrun import Run

COMPUTE = "compute-b"
"""A compute-only node of the same cloud, stacked after the controller node."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    ports = {name: str(procs.free_port()) for name in
             ("INSTANCEHA_ZOOKEEPER_PORT", "INSTANCEHA_ZOOKEEPER_SECURE_PORT",
              "INSTANCEHA_CONTROLLER_PORT", "INSTANCEHA_AGENT_PORT")}
    run = Run(tmp_path_factory.mktemp("devstack"),
              # the agent without n-cpu: no nova-compute process for it to watch
              ENABLED_SERVICES="key,mysql,n-api,n-cond,n-sch,placement-api,instanceha-agent",
              STUB_RUN="instanceha-zookeeper instanceha-controller instanceha-agent",
              STUB_COORDINATION_CHECK="",  # the real one
              STUB_COMPUTE_HOSTS=socket.gethostname(), STUB_TRANSPORT_URL="fake://",
              INSTANCEHA_COMPUTE_HOSTS=COMPUTE,
              INSTANCEHA_NOVA_NOTIFICATIONS="False", INSTANCEHA_READY_TIMEOUT="90", **ports)
    run.ports = {k: int(v) for k, v in ports.items()}
    yield run
    run.stop()


@pytest.fixture(scope="module")
def compute_node(stack, tmp_path_factory):
    """The compute-only node, given the two files the README says to copy from
    the controller node: its agent's credentials and the ZooKeeper CA."""
    assert stack.ok, stack.proc.stderr + _logs(stack)
    tmp = tmp_path_factory.mktemp("compute-b")
    etc = tmp / "etc-instanceha"
    etc.mkdir()
    shutil.copy(stack.path(f"agents/{COMPUTE}.yaml"), etc / "coordination-agent.yaml")
    shutil.copy(stack.path("zookeeper-ca.pem"), etc / "zookeeper-ca.pem")
    run = Run(tmp, ENABLED_SERVICES="placement-client,instanceha-agent",
              INSTANCEHA_HOST=COMPUTE, SERVICE_HOST="127.0.0.1",
              STUB_RUN="instanceha-agent", INSTANCEHA_READY_TIMEOUT="90",
              INSTANCEHA_ZOOKEEPER_SECURE_PORT=str(
                  stack.ports["INSTANCEHA_ZOOKEEPER_SECURE_PORT"]),
              INSTANCEHA_AGENT_PORT=str(procs.free_port()))
    yield run
    run.stop()


def _logs(run) -> str:
    return "\n".join(f"--- {s}\n{run.log(s)[-3000:]}" for s in
                     ("instanceha-zookeeper", "instanceha-controller", "instanceha-agent"))


def test_stack_sh_ends_with_a_clean_coordination_check_over_tls(stack):
    run = stack
    assert run.ok, run.proc.stderr + _logs(run)
    assert [r[0] for r in run.of("run_process")] == \
        ["instanceha-zookeeper", "instanceha-controller", "instanceha-agent"]
    (check,) = [c for c in run.of("instanceha") if "coordination" in c and "check" in c]
    assert check[-2:] == ["coordination", "check"]
    summary = run.proc.stdout.strip().splitlines()[-1]
    assert summary.endswith("node(s) checked, 0 wider than the model"), run.proc.stdout
    assert int(summary.split()[0]) > 5  # the tree the controller and the agent made
    host = socket.gethostname()
    assert f"joined as {host}" in run.log("instanceha-agent")
    assert "INSECURE" not in run.log("instanceha-controller") + run.log("instanceha-agent")


def test_its_zookeeper_serves_tls_with_the_plugins_certificate_only(stack):
    run = stack
    assert run.ok
    ca = run.path("zookeeper-ca.pem")
    secure = run.ports["INSTANCEHA_ZOOKEEPER_SECURE_PORT"]
    assert four_letter(secure, b"ruok", timeout=5, ca_file=ca) == b"imok"
    # a client that does not trust the plugin's CA gets no connection
    with socket.create_connection(("127.0.0.1", secure), timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")


def test_a_client_without_credentials_reads_nothing_of_the_tree(stack):
    run = stack
    assert run.ok
    client = KazooClient(hosts=f"127.0.0.1:{run.ports['INSTANCEHA_ZOOKEEPER_SECURE_PORT']}",
                         use_ssl=True, ca=run.path("zookeeper-ca.pem"), verify_certs=True,
                         timeout=5)
    client.start(timeout=15)
    try:
        assert client.exists("/instanceha/hosts") is not None
        with pytest.raises(NoAuthError):
            client.get_children("/instanceha/hosts")
        with pytest.raises(NoAuthError):
            client.delete(f"/instanceha/hosts/{socket.gethostname()}", recursive=True)
    finally:
        client.stop()
        client.close()


def test_a_compute_node_joins_with_the_files_copied_from_the_controller_node(stack,
                                                                           compute_node):
    run = compute_node
    assert run.ok, run.proc.stderr + run.log("instanceha-agent")
    assert [r[0] for r in run.of("run_process")] == ["instanceha-agent"]
    assert not [c for c in run.of("instanceha") if "credentials" in c]  # no key there
    assert f"joined as {COMPUTE}" in run.log("instanceha-agent")
    # the tree, with the second agent in it, still no wider than the model
    cli = os.path.join(os.path.dirname(sys.executable), "instanceha")
    check = subprocess.run([cli, "--config-file", stack.conf_path, "--config-file",
                            stack.path("controller.conf"), "coordination", "check"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip().endswith("0 wider than the model")
