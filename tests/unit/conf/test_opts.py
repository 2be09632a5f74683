"""The options are published for oslo-config-generator and the sample generates."""

import subprocess
import sys

import pytest
from oslo_config import cfg, generator
from stevedore import named

from instanceha import conf as ih_conf
from instanceha import exceptions
from instanceha.conf import opts, policy


def test_entry_point_resolves_to_list_opts():
    mgr = named.NamedExtensionManager("oslo.config.opts", names=["instanceha"],
                                      invoke_on_load=False)
    assert [e.plugin for e in mgr] == [opts.list_opts]


def _own_opts():
    """instanceha's own options (list_opts also publishes keystoneauth's and
    oslo.messaging's, which follow their projects' conventions)."""
    for module in opts.modules():
        for group, group_opts in module.list_opts().items():
            for opt in getattr(module, "opts", []):
                if opt in group_opts:
                    yield str(group), opt


def test_every_group_is_listed_and_registered():
    listed = {str(group): [o.dest for o in group_opts] for group, group_opts in opts.list_opts()}
    for group in ("DEFAULT", "coordination", "agent", "detection"):
        assert listed[group], group
    conf = ih_conf.register_all(cfg.ConfigOpts())
    conf([], default_config_files=[])
    for group, opt in _own_opts():
        value = conf[opt.dest] if group == "DEFAULT" else conf[group][opt.dest]
        assert value is not None or opt.default is None, (group, opt.name)


def test_every_interval_and_threshold_is_bounded_and_states_its_unit():
    checked = 0
    for group, opt in _own_opts():
        if isinstance(opt.type, (cfg.types.Float, cfg.types.Integer)):
            checked += 1
            assert opt.type.min is not None and opt.type.max is not None, (group, opt.name)
            assert any(unit in opt.help for unit in ("second", "percent", "number", "count")) \
                or "port" in opt.name, (group, opt.name)
    assert checked >= 10


def test_sample_config_generates(tmp_path):
    out = tmp_path / "instanceha.conf.sample"
    conf = cfg.ConfigOpts()
    generator.register_cli_opts(conf)
    conf(["--namespace", "instanceha", "--output-file", str(out)])
    generator.generate(conf)
    text = out.read_text()
    for needle in ("[coordination]", "#backend_url", "#heartbeat_interval = 0.5",
                   "#heartbeat_stale_after = 1.5", "#hung_after = 2.0"):
        assert needle in text


def test_genconfig_command_as_tox_runs_it(tmp_path):
    gen = tmp_path / "gen.conf"
    gen.write_text(f"[DEFAULT]\noutput_file = {tmp_path}/x.sample\nnamespace = instanceha\n"
                   "namespace = oslo.log\n")
    subprocess.run([sys.executable, "-m", "oslo_config.generator", "--config-file", str(gen)],
                   check=True)
    assert "[detection]" in (tmp_path / "x.sample").read_text()


def _conf(tmp_path, text):
    path = tmp_path / "instanceha.conf"
    path.write_text(text)
    conf = ih_conf.register_all(cfg.ConfigOpts())
    conf(["--config-file", str(path)], default_config_files=[])
    return conf, str(path)


def test_stale_window_shorter_than_heartbeat_names_both_options_and_the_file(tmp_path):
    conf, path = _conf(tmp_path, "[agent]\nheartbeat_interval = 1.0\n"
                                 "[detection]\nheartbeat_stale_after = 0.8\n")
    with pytest.raises(exceptions.ConfigError) as e:
        policy.detection_policy(conf)
    msg = str(e.value)
    assert "[detection] heartbeat_stale_after" in msg and path in msg
    assert "[agent] heartbeat_interval" in msg


def test_reconnect_grace_unset_covers_the_agents_reconnect_back_off(tmp_path):
    conf, _ = _conf(tmp_path, "")
    assert policy.detection_policy(conf).reconnect_grace == 6.5  # 1.2 x 5 + 0.5
    conf, _ = _conf(tmp_path, "[coordination]\nreconnect_max_delay = 2\n"
                              "[agent]\nheartbeat_interval = 0.25\n")
    assert policy.detection_policy(conf).reconnect_grace == 2.65
    conf, _ = _conf(tmp_path, "[detection]\nreconnect_grace = 0\n")
    assert policy.detection_policy(conf).reconnect_grace == 0.0


def test_reconnect_jitter_is_the_zookeeper_clients():
    from instanceha.coordination.zookeeper import ZooKeeperCoordinator
    from instanceha.engine.detection import RECONNECT_JITTER

    coord = ZooKeeperCoordinator("zookeeper://127.0.0.1:1", session_timeout=2.0)
    assert coord.client._conn_retry.max_jitter == RECONNECT_JITTER


def test_cut_notice_share_is_the_zookeeper_clients():
    """The cut-off check assumes kazoo's rule: a read timeout of 2/3 of the
    granted session timeout, a ping half of it after the last send, and the
    link dropped when the next half passes with that ping unanswered."""
    import inspect

    from kazoo.protocol.connection import ConnectionHandler

    from instanceha.engine.detection import CUT_NOTICE_SHARE

    assert "read_timeout = negotiated_session_timeout * 2.0 / 3.0" in inspect.getsource(
        ConnectionHandler._connect)
    attempt = inspect.getsource(ConnectionHandler._connect_attempt)
    assert "deadline = last_send + read_timeout / 2.0 - jitter_time" in attempt
    assert "outstanding heartbeat ping not received" in attempt
    assert CUT_NOTICE_SHARE == pytest.approx(2 * (2 / 3) / 2)

def test_hung_window_not_longer_than_stale_window(tmp_path):
    conf, path = _conf(tmp_path, "[detection]\nheartbeat_stale_after = 3\nhung_after = 2\n")
    with pytest.raises(exceptions.ConfigError) as e:
        policy.detection_policy(conf)
    assert "[detection] hung_after" in str(e.value) and path in str(e.value)


@pytest.mark.parametrize("text", [
    "[coordination]\nsession_timeout = 3\n",  # hung_after at its default
    "[coordination]\nsession_timeout = 2\n[detection]\nhung_after = 1.8\n",
    "[coordination]\nsession_timeout = 2\n[agent]\nheartbeat_interval = 1.0\n"
    "[detection]\nheartbeat_stale_after = 1.5\n",
])
def test_hung_after_a_cut_off_leader_reaches_first_is_refused(tmp_path, text):
    """A leader cut off from ZooKeeper notices up to 2/3 x session_timeout late:
    a hung_after it reaches first (with one heartbeat interval already gone
    at the cut) would let it declare live hosts FAILED."""
    conf, path = _conf(tmp_path, text)
    with pytest.raises(exceptions.ConfigError) as e:
        policy.detection_policy(conf)
    msg = str(e.value)
    assert "[detection] hung_after" in msg and "[coordination] session_timeout" in msg
    assert path in msg and "cut off" in msg


def test_hung_after_that_outlasts_the_notice_is_accepted(tmp_path):
    for text in ("", "[coordination]\nsession_timeout = 3\n[detection]\nhung_after = 2.6\n",
                 "[coordination]\nsession_timeout = 4\n[agent]\nheartbeat_interval = 1\n"
                 "[detection]\nheartbeat_stale_after = 3\nhung_after = 4\n"):
        conf, _ = _conf(tmp_path, text)
        assert policy.detection_policy(conf).hung_after > 0


def test_unknown_backend_names_the_option_and_file(tmp_path):
    conf, path = _conf(tmp_path, "[coordination]\nbackend_url = etcd3://127.0.0.1:2379\n")
    with pytest.raises(exceptions.ConfigError) as e:
        policy.check_backend(conf)
    assert "[coordination] backend_url" in str(e.value) and path in str(e.value)
    assert "'etcd3'" in str(e.value) and "zookeeper" in str(e.value)


def test_out_of_bounds_value_is_refused_by_oslo_config(tmp_path):
    path = tmp_path / "c.conf"
    path.write_text("[agent]\nheartbeat_interval = 0\n")
    conf = ih_conf.register_all(cfg.ConfigOpts())
    conf(["--config-file", str(path)], default_config_files=[])
    with pytest.raises(ValueError) as e:
        _ = conf.agent.heartbeat_interval
    assert "heartbeat_interval" in str(e.value) or "less than" in str(e.value)


def test_backend_url_is_secret():
    from instanceha.conf import coordination
    assert [o for o in coordination.opts if o.name == "backend_url"][0].secret


def test_loading_nova_auth_does_not_leak_into_other_configs(tmp_path):
    from keystoneauth1 import loading as ks_loading

    from instanceha.conf import nova

    path = tmp_path / "n.conf"
    path.write_text("[nova]\nauth_type = password\nauth_url = http://127.0.0.1:5000/v3\n"
                    "username = u\npassword = p\nproject_name = p\nuser_domain_name = D\n"
                    "project_domain_name = D\n")
    first = cfg.ConfigOpts()
    nova.register_opts(first)
    first(["--config-file", str(path)], default_config_files=[])
    ks_loading.load_auth_from_conf_options(first, "nova")
    second = ih_conf.register_all(cfg.ConfigOpts())
    second([], default_config_files=[])  # no RequiredOptError for [nova] auth_url
    assert "auth_url" not in second.nova
