"""Shared test set-up: makes the project's harness (tools/harness) importable."""

import os
import sys

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "tools"))

pytest_plugins = ["tests.faults"]
