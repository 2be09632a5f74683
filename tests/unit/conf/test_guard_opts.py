"""[controller] mass-failure guard options: listed, bounded, built into GuardPolicy."""

import pytest
from oslo_config import cfg

from instanceha import conf as ih_conf
from instanceha.conf import opts, policy
from instanceha.engine.guard import GuardPolicy

NEW = ("max_failed_hosts_per_aggregate", "max_failed_percent_per_aggregate",
       "aggregate_min_hosts", "aggregates_refresh", "max_vanished_per_tick")


def _conf(tmp_path, text=""):
    path = tmp_path / "instanceha.conf"
    path.write_text(text)
    conf = ih_conf.register_all(cfg.ConfigOpts())
    conf(["--config-file", str(path)], default_config_files=[])
    return conf


def test_listed_next_to_the_other_guard_options():
    listed = {str(g): [o.dest for o in group_opts] for g, group_opts in opts.list_opts()}
    names = listed["controller"]
    assert all(n in names for n in NEW)
    assert names.index("guard_stable_after") < names.index("max_failed_hosts_per_aggregate")


def test_defaults_match_the_engine_and_the_window_is_derived(tmp_path):
    built = policy.guard_policy(_conf(tmp_path))
    engine = GuardPolicy()
    for field in ("max_failed_hosts", "max_failed_percent", "max_fences_per_tick",
                  "stable_after", "max_failed_hosts_per_aggregate",
                  "max_failed_percent_per_aggregate", "aggregate_min_hosts",
                  "max_vanished_per_tick"):
        assert getattr(built, field) == getattr(engine, field), field
    # one heartbeat interval (0.5 s) plus one tick (0.2 s)
    assert built.vanish_window == pytest.approx(0.7)


def test_values_from_a_file(tmp_path):
    conf = _conf(tmp_path, "[controller]\nmax_failed_hosts_per_aggregate = 2\n"
                 "max_failed_percent_per_aggregate = 60\naggregate_min_hosts = 6\n"
                 "max_vanished_per_tick = 0\n[agent]\nheartbeat_interval = 1.0\n"
                 "[detection]\ntick_interval = 0.5\nheartbeat_stale_after = 3\n"
                 "hung_after = 4\n")
    built = policy.guard_policy(conf)
    assert (built.max_failed_hosts_per_aggregate, built.max_failed_percent_per_aggregate,
            built.aggregate_min_hosts, built.max_vanished_per_tick) == (2, 60.0, 6, 0)
    assert built.vanish_window == pytest.approx(1.5)
    assert conf.controller.aggregates_refresh == 300.0


@pytest.mark.parametrize("line", ["max_failed_percent_per_aggregate = 0",
                                  "max_failed_percent_per_aggregate = 101",
                                  "aggregate_min_hosts = 0", "max_vanished_per_tick = -1",
                                  "max_failed_hosts_per_aggregate = -1",
                                  "aggregates_refresh = 1"])
def test_out_of_bounds_is_refused(tmp_path, line):
    conf = _conf(tmp_path, f"[controller]\n{line}\n")
    with pytest.raises(ValueError):
        policy.guard_policy(conf)
        _ = conf.controller.aggregates_refresh
