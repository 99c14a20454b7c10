"""A report: its runs as data, the function that writes its page, and the one command line every report has.

``python -m experiments.reports.<name>`` makes the runs that are missing (:func:`~.runs.make_runs`, in this process),
then writes ``docs/results/<name>.md`` and its figures from the finished runs. Flags, the same for every report:

- ``--runs DIR``: the root of the run folders (default ``runs/reports``; reports share it, e.g. the zoo);
- ``--out PAGE``: the page to write (default ``docs/results/<name>.md``; figures go to ``<page dir>/<name>/``);
- ``--settings S ...``: which groups of runs to make and show (default: the report's default settings);
- ``--report-only``: run nothing, write the page from the runs there are;
- ``--quick``: make the runs at their studies' quick presets (seconds to a minute each: a smoke test of the whole
  chain; such runs are labelled small-model demonstrations on the page and never count as agreement); it needs
  its own ``--runs`` and ``--out``, so that quick runs never mix with the real ones;
- ``--list``: print each declared run, its state and its command, and stop.

Exit status: 0 page written; 2 usage error or a run a study refused (nothing deleted).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from .figures import Figures
from .fragments import Fragments
from .claims import Claim
from .page import Page
from .runs import ReportError, RunRecord, Runs, RunSpec, make_runs, state

__all__ = ["DEFAULT_ROOT", "Report", "by_setting"]

DEFAULT_ROOT = Path("runs/reports")


def by_setting(runs: Runs, page: Page, settings: Sequence[str], group: Callable[[str], str],
               claims: Callable[[list[RunRecord], str, str], list[Claim]],
               section: Callable[[list[RunRecord], Page, str], None], *, intro: str = "intro",
               outro: str | None = None) -> None:
    """The usual page: the claims of every setting with runs (``claims(finished runs, "<setting> setting",
    setting)``), the ``intro`` fragment, one section per setting (``section(declared runs, page, setting)``), and
    the ``outro`` fragment; ``group(setting)`` names the setting's claim group."""
    chosen = [s for s in settings if runs.setting(s)]
    page.claims([c for s in chosen for c in claims(runs.group(group(s)), f"{s} setting", s)])
    page.fragment(intro)
    for setting in chosen:
        section(runs.group(group(setting), finished=False), page, setting)
    if outro is not None:
        page.fragment(outro)


@dataclass(frozen=True)
class Report:
    """The declaration of one report.

    Attributes:
        name: the module: ``python -m experiments.reports.<name>``; the page is ``docs/results/<name>.md``.
        title: the page's title.
        runs: every run the page can show, in the order they are made.
        write: ``write(runs, page)`` adds the claims, sections and figures to ``page`` from ``runs``.
        folder: the report's package folder (its fragments and ``claims.md``).
        description: the top of ``--help``.
        default_settings: the settings made and shown without ``--settings`` (empty: all).
    """

    name: str
    title: str
    runs: tuple[RunSpec, ...]
    write: Callable[[Runs, Page], None]
    folder: Path
    description: str = ""
    default_settings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = set(self.default_settings) - set(self.settings)
        if unknown:
            raise ValueError(f"report {self.name}: default settings {sorted(unknown)} have no runs")

    @property
    def settings(self) -> list[str]:
        return list(dict.fromkeys(s.setting for s in self.runs))

    def parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=f"python -m experiments.reports.{self.name}",
                                         description=self.description,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--runs", type=Path, default=DEFAULT_ROOT,
                            help="Root of the run folders (default: %(default)s).")
        parser.add_argument("--out", type=Path, default=Path("docs/results") / f"{self.name}.md",
                            help="The page to write (default: %(default)s).")
        parser.add_argument("--settings", nargs="+", choices=self.settings, default=None,
                            help=f"Groups of runs to make and show (default: "
                                 f"{' '.join(self.default_settings or self.settings)}).")
        parser.add_argument("--report-only", action="store_true", help="Run nothing; write the page from the runs "
                                                                       "there are.")
        parser.add_argument("--quick", action="store_true",
                            help="Make the runs at their studies' quick presets (a smoke test; shown as small-model "
                                 "demonstrations, never as agreement).")
        parser.add_argument("--list", action="store_true", help="Print each run, its state and command; stop.")
        return parser

    def command(self, root: Path, settings: Sequence[str]) -> str:
        """The command that regenerates the page (the footer shows it)."""
        parts = [f"python -m experiments.reports.{self.name}"]
        if root != DEFAULT_ROOT:
            parts += ["--runs", str(root)]
        if list(settings) != list(self.default_settings or self.settings):
            parts += ["--settings", *settings]
        return " ".join(parts)

    def write_page(self, root: Path, settings: Sequence[str], out: Path) -> Path:
        """Write the page ``out`` from the finished runs of ``settings`` under ``root``, its figures into
        ``<out dir>/<name>/`` (figures it no longer links are removed from there); returns ``out``."""
        runs = Runs(root, [s for s in self.runs if s.setting in settings and not s.quick_only])
        figures = Figures(out.parent / self.name, out.parent)
        page = Page(self.title, Fragments(self.folder), figures)
        self.write(runs, page)
        text = page.render(self.command(root, settings), str(root), list(runs))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        figures.remove_stale()
        return out

    def main(self, argv: Sequence[str] | None = None) -> int:
        """The report's command line (module docstring); returns the exit status."""
        parser = self.parser()
        args = parser.parse_args(argv)
        if args.quick and args.report_only:
            parser.error("--quick makes runs and --report-only makes none: choose one")
        if args.quick and (args.runs == DEFAULT_ROOT or args.out == self.parser().get_default("out")):
            parser.error(f"--quick needs its own --runs and --out (not {DEFAULT_ROOT} and docs/results): "
                         "quick-preset runs must not mix with the real runs or overwrite the real page")
        settings = args.settings or list(self.default_settings or self.settings)
        specs = [s for s in self.runs if s.setting in settings and (args.quick or not s.quick_only)]
        if args.list:
            for spec in specs:
                print(f"{state(args.runs / spec.folder):10} python -m experiments.{spec.study} "
                      + " ".join(spec.argv_for(args.runs, args.quick)))
            return 0
        try:
            if not args.report_only:
                make_runs([s for s in specs if s.in_quick or not args.quick], args.runs, quick=args.quick)
            self.write_page(args.runs, settings, args.out)
        except ReportError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        logging.getLogger(__name__).info("wrote %s", args.out)
        return 0

    def cli(self) -> NoReturn:
        """``python -m experiments.reports.<name>``."""
        logging.basicConfig(level=logging.INFO, format="[report] %(message)s")
        sys.exit(self.main())
