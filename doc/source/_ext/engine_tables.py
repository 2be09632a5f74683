"""``.. engine-table:: NAME``: an engine decision table, rendered from the code.

NAME is a module of ``instanceha.engine`` that keeps its rules as ordered data
and says how they read as rows (``TABLE_HEADER``, ``table_rows()``):
``detection``, ``recovery`` or ``guest``. The documentation never holds a copy
of a table: each build renders the rules as they are.
"""

from __future__ import annotations

import importlib

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList

from instanceha.engine import tables

TABLES = ("detection", "recovery", "guest")


def rst_for(name: str) -> str:
    """The reStructuredText table of ``instanceha.engine.<name>``'s rules."""
    if name not in TABLES:
        raise ValueError(f"engine-table: unknown table {name!r}; known: {', '.join(TABLES)}")
    module = importlib.import_module(f"instanceha.engine.{name}")
    return tables.render(module.TABLE_HEADER, module.table_rows())


class EngineTable(Directive):
    required_arguments = 1
    has_content = False

    def run(self):
        try:
            text = rst_for(self.arguments[0])
        except ValueError as e:
            raise self.error(str(e)) from None
        holder = nodes.container()
        self.state.nested_parse(StringList(text.splitlines(), source="engine-table"),
                                self.content_offset, holder)
        return holder.children


def setup(app):
    app.add_directive("engine-table", EngineTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
