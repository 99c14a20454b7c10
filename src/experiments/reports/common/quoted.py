"""The rule that keeps run results out of hand-written prose, and the scanner that enforces it.

A page's prose (its Markdown fragments and ``claims.md``) and the string literals of the report modules may not
quote a number a rerun can change. The rule, precisely: after removing what is not prose,

- template tags (``{{ ... }}``, ``{% ... %}``, ``{# ... #}``): numbers inserted from the runs;
- code (fenced blocks and inline code spans): commands, flag values, formulas, file names;
- link targets (``](...)``);
- references into the paper or its notes: ``section 2.3``, ``sections 2.3 and 2.4``, ``claim 7``, ``PAPER.md 2.7``,
  ``Figure 3``, ``Table 1``, ``eq. 4``;

every numeral left (``7``, ``0.5``, ``1e-5``, ``3.1e-2``, ``10,000``) must be a whole number from ``0`` to ``10``
(counts in the design: "2-D", "9 round trips", "3 seeds"), or be declared by the page as a constant of the paper
or of a setting: the page's ``QUOTED`` maps each such numeral, as written (``"10,000"``, ``"64"`` of ``1/64``), to
the reason it is not a result (e.g. ``"56": "paper: the affine flow's NaN step on CelebA"``). Anything else is a
number quoted from a run and is reported.

In Python modules every string literal is prose except: a literal that is one numeral or one flag (an argv
element such as ``"1e-4"`` or ``"--lr"``), the format specification of an f-string, and doctest examples (lines
from ``>>>`` to the next blank line) in docstrings.

Example:
    >>> quoted_numbers("kappa reached 3.9e6 at iteration 180 (`--lr 1e-3`, section 2.3, {{ k | fmt }})")
    ['3.9e6', '180']
    >>> quoted_numbers("the paper's NaN at step 56 in 2-D", allowed={"56"})
    []
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["quoted_numbers", "scan_markdown", "scan_python"]

_TEMPLATE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
_CODE = re.compile(r"``[^`\n]*``|`[^`\n]*`")
_LINK = re.compile(r"\]\([^)]*\)")
_REF = re.compile(r"\b(?:sections?|claims?|PAPER\.md|Figures?|Fig\.|Tables?|eq\.|Appendix|§)\s*"
                  r"\d+(?:\.\d+)*(?:\s*(?:,|and|-|to)\s*\d+(?:\.\d+)*)*", re.IGNORECASE)
_NUMERAL = re.compile(r"(?<![\w.])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w])")
_LONE = re.compile(r"^\s*(?:[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|--?[A-Za-z][\w-]*)\s*$")


def _prose(text: str) -> str:
    for pattern in (_TEMPLATE, _FENCE, _CODE, _LINK, _REF):
        text = pattern.sub(" ", text)
    return text


def quoted_numbers(text: str, allowed: Iterable[str] = ()) -> list[str]:
    """The numerals of ``text`` (Markdown) that the rule does not allow (module docstring)."""
    allow = set(allowed)
    found = []
    for match in _NUMERAL.finditer(_prose(text)):
        numeral = match.group(0)
        if numeral in allow:
            continue
        if re.fullmatch(r"\d+", numeral) and int(numeral) <= 10:
            continue
        found.append(numeral)
    return found


def scan_markdown(path: Path, allowed: Iterable[str] = ()) -> list[str]:
    """``"file:line: numeral"`` for every number a Markdown fragment quotes against the rule."""
    text = path.read_text()
    allow = set(allowed)
    out = []
    for numeral, line in _located(text, allow):
        out.append(f"{path}:{line}: {numeral}")
    return out


def _located(text: str, allow: set[str]) -> Iterator[tuple[str, int]]:
    # blank out what is not prose but keep line numbers (multi-line template tags and fences)
    blanked = text
    for pattern in (_TEMPLATE, _FENCE, _CODE, _LINK, _REF):
        blanked = pattern.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), blanked)
    for number, line in enumerate(blanked.splitlines(), 1):
        for numeral in quoted_numbers(line, allow):
            yield numeral, number


def _docstring_prose(text: str) -> str:
    """A docstring without its doctest examples (from ``>>>`` to the next blank line)."""
    out, example = [], False
    for line in text.splitlines():
        if line.strip().startswith(">>>"):
            example = True
        elif not line.strip():
            example = False
        out.append("" if example else line)
    return "\n".join(out)


def _literals(tree: ast.AST) -> Iterator[tuple[str, int]]:
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    specs = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FormattedValue) and node.format_spec is not None:
            specs.update(id(n) for n in ast.walk(node.format_spec))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in specs:
            text = _docstring_prose(node.value) if id(node) in docstrings else node.value
            if not _LONE.match(text):
                yield text, node.lineno


def scan_python(path: Path, allowed: Iterable[str] = ()) -> list[str]:
    """``"file:line: numeral"`` for every number a report module's string literals quote against the rule."""
    allow = set(allowed)
    out = []
    for text, line in _literals(ast.parse(path.read_text(), str(path))):
        for numeral, offset in _located(text, allow):
            out.append(f"{path}:{line + offset - 1}: {numeral}")
    return out
