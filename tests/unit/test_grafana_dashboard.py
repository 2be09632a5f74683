"""The Grafana dashboard (etc/grafana/instanceha-dashboard.json) is well formed:
panels that Grafana can lay out, one data source variable, only known variables
in the queries, and only metrics the daemons export. That each query returns
data is checked against a real Prometheus during a failure
(tests/functional/compute/test_controller_recovery.py)."""

import json
import re

from harness import prometheus

from instanceha.agent import metrics as agent_metrics
from instanceha.controller import metrics as controller_metrics

DS = {"type": "prometheus", "uid": "${datasource}"}


def _dashboard():
    with open(prometheus.DASHBOARD) as f:
        return json.load(f)


def _panels():
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def test_panels_are_laid_out_on_the_grid_without_overlap():
    panels = _dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    taken = set()
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                 for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, f"{p['title']!r} overlaps another panel"
        taken |= cells


def test_every_panel_queries_the_chosen_prometheus():
    dash = _dashboard()
    (ds,) = [v for v in dash["templating"]["list"] if v["type"] == "datasource"]
    assert (ds["name"], ds["query"]) == ("datasource", "prometheus")
    for p in _panels():
        assert p["datasource"] == DS and p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DS and t["expr"].strip(), (p["title"], t)


def test_queries_use_only_known_variables_and_exported_metrics():
    queries = prometheus.dashboard_queries()  # raises on a variable it cannot substitute
    assert len(queries) == sum(len(p["targets"]) for p in _panels())
    sources = open(agent_metrics.__file__).read() + open(controller_metrics.__file__).read()
    for title, ref, expr in queries:
        for name in re.findall(r"\b(instanceha_[a-z_]+)", expr):
            base = re.sub(r"_(bucket|count|sum|total)$", "", name)
            assert f'"{base}"' in sources or f'"{name}"' in sources, (title, ref, name)
