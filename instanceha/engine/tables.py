"""The engine's decision tables as reStructuredText: rendered, never copied.

Each table module (``detection``, ``recovery``, ``guest``) keeps its rules as
ordered data and says how a rule reads as a row (``TABLE``: the header and a
function of the rules). ``render`` turns that into a simple table, used twice:
in the module's own docstring (filled in at import) and in the documentation
(``doc/source/_ext/engine_tables.py``, the ``engine-table`` directive).
"""

from __future__ import annotations

from collections.abc import Sequence


def render(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A reStructuredText simple table (no cell may span two lines)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    border = "  ".join("=" * w for w in widths)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([border, line(header), border, *(line(r) for r in rows), border])


def fill(doc: str, marker: str, table: str) -> str:
    """``doc`` with the line ``marker`` replaced by ``table`` (indented alike)."""
    lines = doc.splitlines()
    out: list[str] = []
    for text in lines:
        if text.strip() == marker:
            indent = text[:len(text) - len(text.lstrip())]
            out.extend(indent + row for row in table.splitlines())
        else:
            out.append(text)
    return "\n".join(out) + ("\n" if doc.endswith("\n") else "")
