"""The example alert rules name only metrics the daemons export."""

import os
import re

import yaml

from instanceha.agent import metrics as agent_metrics
from instanceha.controller import metrics as controller_metrics

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_alert_rules_use_exported_metric_names():
    with open(os.path.join(TOP, "etc", "prometheus", "instanceha-alerts.yaml")) as f:
        rules = yaml.safe_load(f)["groups"][0]["rules"]
    sources = open(agent_metrics.__file__).read() + open(controller_metrics.__file__).read()
    for rule in rules:
        for name in re.findall(r"\b(instanceha_[a-z_]+)", rule["expr"]):
            base = re.sub(r"_(bucket|count|sum|total)$", "", name)
            assert f'"{base}"' in sources, (rule["alert"], name)
