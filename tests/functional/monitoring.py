"""What an operator's Prometheus sees of a failure, checked against a real
Prometheus (tools/harness/prometheus.py) scraping the real daemons: the shipped
alert rules (etc/prometheus/instanceha-alerts.yaml) evaluate without error on
series that exist with the labels they select on, the alerts that fire are the
expected ones, every query of the Grafana dashboard (etc/grafana/) returns
numbers, and promtool finds nothing to lint in the daemons' /metrics."""

from __future__ import annotations

import re
import urllib.request

import pytest
import yaml
from harness import prometheus as prom_harness

SELECTOR = re.compile(r"\b(instanceha_[a-z_]+)(?:\{([^}]*)\})?")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"")
NOT_IN_THIS_SCENARIO = {
    "instanceha_agent_libvirt_connected": "the agents run without the guest monitor",
}


@pytest.fixture
def prometheus(tmp_path):
    """A real Prometheus on loopback with the shipped rules, scraping every second."""
    server = prom_harness.PrometheusServer(str(tmp_path / "prometheus")).start()
    yield server
    server.stop()


def scrape(prom, daemons) -> dict[str, str]:
    """Scrape these harness daemons, wait until each was scraped and the rules
    evaluated on what was scraped; their /metrics addresses by name."""
    addresses = {d.name: prom.scrape_daemon(d) for d in daemons}
    prom.wait_up(addresses)
    prom.wait_evaluated()
    return addresses


def active(prom) -> list[str]:
    return sorted(f"{prom_harness.describe(a)} ({a['state']})" for a in prom.alerts())


def assert_quiet(prom) -> None:
    """No alert pending or firing (a healthy cloud)."""
    assert active(prom) == [], "alerts on a healthy cloud"


def assert_firing_exactly(prom, expected: set[str]) -> None:
    """The alerts firing (info ones aside: a slow detection is not a failure)
    are exactly ``expected`` (``describe()`` strings)."""
    firing = {prom_harness.describe(a) for a in prom.firing()
              if a["labels"].get("severity") != "info"}
    assert firing == expected, active(prom)


def assert_rules_match_real_series(prom) -> None:
    """Every rule evaluates without error, and every metric it selects exists in
    Prometheus with the label names it matches on."""
    broken = [(r["name"], r.get("lastError")) for r in prom.rules() if r["health"] != "ok"]
    assert broken == []
    with open(prom_harness.RULES) as f:
        rules = [r for g in yaml.safe_load(f)["groups"] for r in g["rules"]]
    wrong = []
    for rule in rules:
        for name, matchers in SELECTOR.findall(rule["expr"]):
            if name in NOT_IN_THIS_SCENARIO:
                continue
            series = prom.api("series", **{"match[]": name})
            labels = set().union(*(s.keys() for s in series)) if series else set()
            missing = {m for m in MATCHER.findall(matchers)} - labels
            if not series or missing:
                wrong.append(f"{rule['alert']}: {name} "
                             + (f"has no label {sorted(missing)}" if series else "not exported"))
    assert wrong == []


def assert_dashboard_has_data(prom, path: str = prom_harness.DASHBOARD) -> int:
    """Every target of every panel returns at least one series with a number;
    returns how many queries were run."""
    queries = prom_harness.dashboard_queries(path)
    empty = []
    for title, ref, expr in queries:
        series = prom.query(expr)
        if not prom_harness.finite(series):
            empty.append(f"{title!r} {ref}: {expr} -> {series}")
    assert empty == [], "dashboard queries without data"
    return len(queries)


def assert_metrics_lint_free(address: str) -> None:
    """``promtool check metrics`` on the daemon's real /metrics: valid, no lint."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        text = r.read().decode()
    result = prom_harness.check_metrics(text)
    assert (result.returncode, result.stdout + result.stderr) == (0, ""), address
