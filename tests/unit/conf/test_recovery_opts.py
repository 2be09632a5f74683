"""[recovery]: the defaults, and the frozen TargetPolicy built from a file."""

import pytest
from oslo_config import cfg

from instanceha import conf as ih_conf
from instanceha.conf import opts, policy
from instanceha.engine.reserved import Match, Method, TargetPolicy


def _conf(tmp_path, text=""):
    path = tmp_path / "instanceha.conf"
    path.write_text(text)
    conf = ih_conf.register_all(cfg.ConfigOpts())
    conf(["--config-file", str(path)], default_config_files=[])
    return conf


def test_default_is_the_scheduler(tmp_path):
    assert policy.target_policy(_conf(tmp_path)) == TargetPolicy()
    assert "recovery" in {str(g) for g, _ in opts.list_opts()}


def test_reserved_hosts_from_a_file(tmp_path):
    conf = _conf(tmp_path, "[recovery]\nmethod = reserved_hosts\nreserved_match = aggregate\n"
                 "reserved_fallback_to_scheduler = false\n")
    assert policy.target_policy(conf) == TargetPolicy(Method.RESERVED_HOSTS, Match.AGGREGATE,
                                                      fallback_to_scheduler=False)


def test_an_unknown_method_is_refused(tmp_path):
    conf = _conf(tmp_path, "[recovery]\nmethod = masakari\n")
    with pytest.raises(ValueError):
        conf.recovery.method  # noqa: B018
