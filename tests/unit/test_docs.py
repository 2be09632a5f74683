"""The documentation's tables come from the code: rendered, never copied.

The engine's decision tables are rendered by the ``engine-table`` directive
(``doc/source/_ext/engine_tables.py``) at each build; the build itself runs in
``tests/functional/test_docs_build.py``.
"""

import importlib.util
import os
import re

from instanceha.agent import metrics as agent_metrics
from instanceha.controller import metrics as controller_metrics
from instanceha.engine import detection, guest, recovery, tables

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE = os.path.join(TOP, "doc", "source")


def _read(name):
    with open(os.path.join(SOURCE, name)) as f:
        return f.read()


def _extension():
    spec = importlib.util.spec_from_file_location(
        "engine_tables", os.path.join(SOURCE, "_ext", "engine_tables.py"))
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    return ext


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
    documented = _table(_extension().rst_for("recovery"), "durable")
    assert documented == _table(recovery.__doc__, "durable")
    assert documented == [tuple(row) for row in recovery.table_rows()]
    stages = {row[-1] for row in documented}
    assert stages == {s.name for s in recovery.Stage}


def test_the_docs_render_each_engine_table_and_copy_none():
    pages = {"architecture.rst": ("detection", "recovery"), "instance-policy.rst": ("guest",)}
    for page, names in pages.items():
        text = _read(page)
        for name in names:
            assert f".. engine-table:: {name}" in text, (page, name)
    # no hand copy left: a row of each table appears in no page source
    sources = " ".join(_read(p) for p in os.listdir(SOURCE) if p.endswith(".rst"))
    for module in (detection, recovery, guest):
        rows = tables.render(module.TABLE_HEADER, module.table_rows()).splitlines()[3:-1]
        copied = [row for row in rows if row in sources]
        assert copied == [], (module.__name__, copied)


def test_every_guest_rule_and_outcome_is_in_the_guest_table():
    rows = _table(_extension().rst_for("guest"), "rule")
    assert [r[0] for r in rows] == [r.name for r in guest.RULES]
    assert {r[3] for r in rows} >= {o.value for o in guest.GuestOutcome} - {"coalesced", "dry_run"}


def test_metrics_page_names_exactly_the_exported_metrics():
    sources = open(agent_metrics.__file__).read() + open(controller_metrics.__file__).read()
    # counters are exposed with _total whether or not the code's name has it
    exported = {re.sub(r"_total$", "", name)
                for name in re.findall(r'"(instanceha_[a-z_]+)"', sources)}
    documented = {re.sub(r"_total$", "", name)
                  for name in re.findall(r"\b(instanceha_[a-z_]+)", _read("metrics.rst"))}
    assert documented - exported == set(), "documented but not exported"
    assert exported - documented == set(), "exported but not documented in metrics.rst"
