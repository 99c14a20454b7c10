"""Hand-written prose of the pages: Markdown fragments next to the report code, filled with numbers from the runs.

A fragment is a Markdown file in the report's package (``experiments/reports/<page>/<name>.md``). It is a Jinja2
template: ``{{ kappa | fmt }}`` inserts a value the report computed from the runs (formatted by
:func:`~.numbers.fmt`), ``{% if exploded %} ... {% else %} ... {% endif %}`` chooses a sentence by the data. A
fragment quotes no number a rerun can change: such numbers come in through ``{{ }}`` (the rule is
:mod:`~.quoted`'s). A name the report does not supply is an error (nothing is silently left blank).

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "note.md").write_text("kappa reached {{ kappa | fmt }}{% if big %}: large{% endif %}.\\n")
    >>> Fragments(folder).render("note", kappa=3.5e6, big=True)
    'kappa reached 3.5e6: large.'
    >>> Fragments(folder).render("note", kappa=1.0)
    Traceback (most recent call last):
    ...
    ValueError: fragment note.md: 'big' is undefined (the report must supply it)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from .numbers import fmt, minutes, percent

__all__ = ["Fragments"]


class Fragments:
    """The fragments in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(self.folder)),
                                       undefined=jinja2.StrictUndefined, autoescape=False, trim_blocks=True,
                                       lstrip_blocks=True, keep_trailing_newline=False)
        self._env.filters.update(fmt=fmt, percent=percent, minutes=minutes)

    def names(self) -> list[str]:
        """The fragments of the folder, without ``.md``."""
        return sorted(p.stem for p in self.folder.glob("*.md"))

    def render(self, name: str, **values: Any) -> str:
        """The fragment ``name`` (``<name>.md``) with ``values`` filled in, stripped of surrounding blank lines."""
        if not (self.folder / f"{name}.md").is_file():
            raise ValueError(f"no fragment {name}.md in {self.folder}; the fragments are {', '.join(self.names())}")
        try:
            text = self._env.get_template(f"{name}.md").render(**values)
        except jinja2.UndefinedError as exc:
            raise ValueError(f"fragment {name}.md: {exc.message} (the report must supply it)") from None
        lines = [line.rstrip() for line in text.strip("\n").splitlines()]
        return "\n".join(lines)
