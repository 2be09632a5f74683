"""The documentation builds without a warning, and its tables follow the code.

The build is ``tox -e docs``'s command (``sphinx-build -W``) into a temporary
directory: the configuration reference is rendered from the options
themselves (``oslo_config.sphinxext``), so an option whose help is not valid
reStructuredText fails here too. Sphinx comes with the ``docs`` extra, which
``tools/install.sh`` installs.
"""

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from instanceha.agent import metrics as agent_metrics
from instanceha.controller import metrics as controller_metrics
from instanceha.engine import recovery

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE = os.path.join(TOP, "doc", "source")


def _read(name):
    with open(os.path.join(SOURCE, name)) as f:
        return f.read()


def test_sphinx_build_has_no_warning(tmp_path):
    if importlib.util.find_spec("sphinx") is None:
        pytest.fail("Sphinx is not installed: pip install -c tools/constraints.txt -e .[docs] "
                    "(tools/install.sh does)")
    out = tmp_path / "html"
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html",
           "-d", str(tmp_path / "doctrees"), SOURCE, str(out)]
    r = subprocess.run(cmd, cwd=TOP, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}:\n{r.stderr}{r.stdout}"
    for page in ("index", "installation", "architecture", "configuration", "fencing",
                 "instance-policy", "operations", "notifications", "metrics"):
        assert (out / f"{page}.html").is_file(), page
    reference = (out / "configuration.html").read_text()
    # generated from the code, not written by hand
    for needle in ("heartbeat_stale_after", "max_failed_percent", "inventory_file",
                   "default_instance_recovery", "delivery_deadline"):
        assert needle in reference, needle
    samples = list(out.glob("_downloads/*/instanceha.conf.sample"))
    assert samples and "#heartbeat_stale_after = 1.5" in samples[0].read_text()


def _table(text, first_header):
    """Rows of the simple reStructuredText table whose header starts with
    ``first_header``, as tuples of cells (continuation lines not expected)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [first_header]
                 and lines[i - 1].startswith("==="))
    border = lines[start - 1]
    spans = [m.span() for m in re.finditer(r"=+", border)]
    rows = []
    for line in lines[start + 2:]:
        if line.startswith("==="):
            break
        cells = [line[a:b if k < len(spans) - 1 else None].strip()
                 for k, (a, b) in enumerate(spans)]
        rows.append(tuple(cells))
    return rows


def test_architecture_recovery_table_is_the_engines():
    documented = _table(_read("architecture.rst"), "durable")
    assert documented == _table(recovery.__doc__, "durable")
    stages = {row[-1] for row in documented}
    assert stages == {s.name for s in recovery.Stage}


def test_metrics_page_names_exactly_the_exported_metrics():
    sources = open(agent_metrics.__file__).read() + open(controller_metrics.__file__).read()
    # counters are exposed with _total whether or not the code's name has it
    exported = {re.sub(r"_total$", "", name)
                for name in re.findall(r'"(instanceha_[a-z_]+)"', sources)}
    documented = {re.sub(r"_total$", "", name)
                  for name in re.findall(r"\b(instanceha_[a-z_]+)", _read("metrics.rst"))}
    assert documented - exported == set(), "documented but not exported"
    assert exported - documented == set(), "exported but not documented in metrics.rst"
