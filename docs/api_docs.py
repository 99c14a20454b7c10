"""Build the API documentation of ``invertible`` from its docstrings with pdoc: ``python docs/api_docs.py OUT``.

Every public module is listed explicitly (pdoc follows ``__all__``, which names the packages' classes and
functions, not their modules). Docstrings are read as Google style with reStructuredText roles (``:class:``...),
which pdoc turns into Markdown. :func:`build` returns the warnings pdoc gave; the test suite builds the pages into
a temporary folder and fails on any (``tests/test_habits.py``).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import warnings
from pathlib import Path

import invertible


def public_modules() -> list[str]:
    """The modules to hand pdoc: ``invertible``, and every public module below it that pdoc's recursion would not
    reach (those whose package's ``__all__`` does not name them); no name part may start with ``_``."""
    names = ["invertible"]
    for info in pkgutil.walk_packages(invertible.__path__, prefix="invertible."):
        parent, _, leaf = info.name.rpartition(".")
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        listed = getattr(importlib.import_module(parent), "__all__", None)
        if listed is not None and leaf not in listed:
            names.append(info.name)
    return sorted(names)


def build(out: Path, modules: list[str] | None = None) -> list[str]:
    """Write the HTML pages of ``modules`` (default :func:`public_modules`) to ``out``; return pdoc's warnings
    (empty when the build is clean)."""
    import pdoc
    import pdoc.render

    pdoc.render.configure(docformat="google", search=True, show_source=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*(modules if modules is not None else public_modules()), output_directory=Path(out))
    return [f"{w.category.__name__}: {w.message}" for w in caught]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python docs/api_docs.py OUTPUT_FOLDER")
    problems = build(Path(sys.argv[1]))
    print("\n".join(problems) or f"API documentation written to {sys.argv[1]}/index.html")
    sys.exit(1 if problems else 0)
