"""The documentation builds without a warning, with what it renders from the code.

The build is ``tox -e docs``'s command (``sphinx-build -W``) into a temporary
directory: the configuration reference is rendered from the options
themselves (``oslo_config.sphinxext``), so an option whose help is not valid
reStructuredText fails here too, and the engine's decision tables from their
rules (``doc/source/_ext/engine_tables.py``). Sphinx comes with the ``docs``
extra, which ``tools/install.sh`` installs. A functional test: it runs Sphinx
(about 10 s), which the unit suite does not.
"""

import importlib.util
import os
import subprocess
import sys

import pytest

from instanceha.engine import detection, guest, recovery

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE = os.path.join(TOP, "doc", "source")


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
    # the decision tables, rendered from the rules at this build
    architecture = (out / "architecture.html").read_text()
    for rule in detection.RULES:
        assert f"<td><p>{rule.name}</p></td>" in architecture, rule.name
    for stage in recovery.Stage:
        assert f"<td><p>{stage.name}</p></td>" in architecture, stage.name
    policy = (out / "instance-policy.html").read_text()
    for rule in guest.RULES:
        assert f"<td><p>{rule.name}</p></td>" in policy, rule.name
