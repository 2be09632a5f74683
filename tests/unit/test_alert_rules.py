"""The shipped alert rules (etc/prometheus/instanceha-alerts.yaml), checked by
Prometheus' own promtool: valid, and their unit tests (tests/prometheus/*.yaml,
input series for every alert) pass. Each alert must have a case where it fires,
and be checked silent at every evaluation of the healthy cloud and of the
planned stops: a rule added without its tests fails here."""

import os
import re

import yaml
from harness import prometheus

from instanceha.agent import metrics as agent_metrics
from instanceha.controller import metrics as controller_metrics

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RULES = os.path.join(TOP, "etc", "prometheus", "instanceha-alerts.yaml")
TESTS = os.path.join(TOP, "tests", "prometheus")
FIRE = os.path.join(TESTS, "alerts-fire.yaml")
SILENT = [os.path.join(TESTS, "alerts-healthy.yaml"),
          os.path.join(TESTS, "alerts-planned-stop.yaml")]


def _load(path):
    with open(path) as f:
        return yaml.safe_load(f)


def _rules():
    return [r for g in _load(RULES)["groups"] for r in g["rules"]]


def _alerts():
    return [r["alert"] for r in _rules() if "alert" in r]


def _cases(path):
    """(group name, alert_rule_test entry) of a promtool test file."""
    for group in _load(path)["tests"]:
        for case in group.get("alert_rule_test", []):
            yield group.get("name", "?"), case


def _run(result):
    return f"exit {result.returncode}\n{result.stdout}{result.stderr}"


def test_promtool_checks_the_rules():
    result = prometheus.check_rules(RULES)
    assert result.returncode == 0, _run(result)
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout, _run(result)


def test_promtool_checks_the_example_scrape_config():
    result = prometheus.promtool("check", "config",
                                 os.path.join(TOP, "etc", "prometheus", "prometheus.yml"))
    assert result.returncode == 0, _run(result)


def test_promtool_rule_tests_pass():
    files = [FIRE, *SILENT]
    assert sorted(os.listdir(TESTS)) == sorted(os.path.basename(f) for f in files)
    for path in files:
        assert _load(path)["rule_files"] == ["../../etc/prometheus/instanceha-alerts.yaml"]
    result = prometheus.run_rule_tests(*files)
    assert result.returncode == 0, _run(result)
    assert result.stdout.count("SUCCESS") == len(files), _run(result)


def test_every_alert_has_a_case_where_it_fires():
    alerts = _alerts()
    assert len(alerts) == len(set(alerts)), "an alert name is used twice"
    fired = {case["alertname"] for _, case in _cases(FIRE) if case.get("exp_alerts")}
    missing = set(alerts) - fired
    assert not missing, (f"alerts without a case where they fire in {FIRE}: "
                         f"{sorted(missing)}")
    unknown = {case["alertname"] for _, case in _cases(FIRE)} - set(alerts)
    assert not unknown, f"cases of alerts the rules do not have: {sorted(unknown)}"


def test_every_alert_is_checked_silent_on_a_healthy_cloud_and_during_planned_stops():
    alerts = set(_alerts())
    for path in SILENT:
        checked: dict[str, set] = {}
        for name, case in _cases(path):
            assert case["exp_alerts"] == [], (path, name, case)
            checked.setdefault(case["eval_time"], set()).add(case["alertname"])
        assert len(checked) >= 3, f"{path}: evaluate at several times"
        for at, names in checked.items():
            assert names == alerts, (f"{path} at {at}: add a silent check of "
                                     f"{sorted(alerts - names)} (unknown: "
                                     f"{sorted(names - alerts)})")


def test_alert_rules_use_exported_metric_names():
    sources = open(agent_metrics.__file__).read() + open(controller_metrics.__file__).read()
    for rule in _rules():
        for name in re.findall(r"\b(instanceha_[a-z_]+)", rule["expr"]):
            base = re.sub(r"_(bucket|count|sum|total)$", "", name)
            assert f'"{base}"' in sources or f'"{name}"' in sources, (rule["alert"], name)
