"""A results page: the claims table first, then the report's sections, then a footer read from the runs.

:class:`Page` collects what a report writes (:meth:`Page.claims`, :meth:`Page.add`, :meth:`Page.fragment`,
:attr:`Page.figures`) and :meth:`Page.render` puts it in the one order every page has: title, the legend and the
claims table (:func:`~.claims.claims_table`), the sections, and the footer (:func:`footer`). Nothing on a page
comes from the clock or the machine that writes it: dates and versions are the runs' own, so the same runs give
the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from invertible.diagnostics import NONINVERTIBLE_RTOL

from .claims import MIN_SEEDS, Claim, claims_table, load_texts
from .figures import Figures
from .fragments import Fragments
from .runs import RunRecord

__all__ = ["COMMON", "Page", "footer"]

#: The fragments every page shares (the claims legend and the footer).
COMMON = Fragments(Path(__file__).parent)


def _versions(records: Sequence[RunRecord], key: str) -> str:
    values = sorted({str(r.config.get("environment", {}).get(key, "?")) for r in records})
    return ", ".join(values)


def _commits(records: Sequence[RunRecord]) -> str:
    found = []
    for r in records:
        git = r.config.get("environment", {}).get("git") or {}
        commit = str(git.get("commit", "unknown"))[:10] + (" with uncommitted changes" if git.get("dirty") else "")
        found.append(f"`{commit}`" if commit != "unknown" else "unknown")
    return ", ".join(sorted(set(found)))


def footer(command: str, root: str, records: Sequence[RunRecord]) -> str:
    """The last lines of a page: the command, the runs read, and the dates, versions and commits they record."""
    done = [r for r in records if r.finished]
    dates = sorted(str(r.config.get("created", "?"))[:10] for r in done)
    return COMMON.render("footer", command=command, root=root, finished=len(done), declared=len(records),
                         first=dates[0] if dates else "", last=dates[-1] if dates else "",
                         torch=_versions(done, "torch"), python=_versions(done, "python"), commits=_commits(done))


class Page:
    """One page being written.

    Attributes:
        fragments: the report's prose (its package folder).
        figures: the page's figure folder (``<page dir>/<name>/``).
    """

    def __init__(self, title: str, fragments: Fragments, figures: Figures) -> None:
        self.title, self.fragments, self.figures = title, fragments, figures
        self._claims: list[Claim] | None = None
        self._parts: list[str] = []

    def claims(self, claims: Sequence[Claim]) -> None:
        """The page's claims (once): rendered first, with the texts of the report's ``claims.md``."""
        if self._claims is not None:
            raise ValueError("Page.claims: a page has one claims table; give every claim in one call")
        self._claims = list(claims)

    def add(self, *parts: str) -> None:
        """Markdown blocks, in order (blank lines between them are added)."""
        self._parts += [p.strip("\n") for p in parts if p and p.strip()]

    def fragment(self, name: str, **values: Any) -> None:
        """The fragment ``name`` of the report, filled with ``values``."""
        self.add(self.fragments.render(name, **values))

    def render(self, command: str, root: str, records: Sequence[RunRecord]) -> str:
        if self._claims is None:
            raise ValueError(f"page {self.title!r} has no claims: every page opens with its claims table")
        texts = load_texts(self.fragments.folder / "claims.md")
        unused = sorted(set(texts) - {c.id for c in self._claims})
        if unused:
            raise ValueError(f"claims.md of {self.title!r} defines claims the report does not check: {unused}")
        head = [f"# {self.title}", COMMON.render("legend", min_seeds=MIN_SEEDS, rtol=NONINVERTIBLE_RTOL),
                claims_table(self._claims, texts)]
        return "\n\n".join(head + self._parts + [footer(command, root, records)]) + "\n"
