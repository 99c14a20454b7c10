"""Markdown tables: the one writer every page uses.

Example:
    >>> print(table(["model", "kappa"], [["affine", "1.2e4"], ["additive", "9.47"]], align="lr"))
    | model | kappa |
    |:---|---:|
    | affine | 1.2e4 |
    | additive | 9.47 |
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["table"]

_RULES = {"l": ":---", "r": "---:", "c": ":---:", "-": "---"}


def _cell(text: str) -> str:
    """A cell's text on one line, with ``|`` escaped so that it does not end the cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None) -> str:
    """A Markdown table; ``align`` gives one letter per column (``l``, ``r``, ``c``, or ``-`` for the default).

    Raises ``ValueError`` when a row has another number of cells than the header."""
    align = align or "-" * len(header)
    if len(align) != len(header) or set(align) - set(_RULES):
        raise ValueError(f"table: align needs one of l, r, c, - per column ({len(header)}), got {align!r}")
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"table: a row has {len(row)} cells but the header {len(header)}: {list(row)}")
    lines = ["| " + " | ".join(map(_cell, header)) + " |", "|" + "|".join(_RULES[a] for a in align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(map(_cell, row)) + " |" for row in rows])
