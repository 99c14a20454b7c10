"""The page docs/results/toy.md: the toy regression, the checkerboard flows and the 2-D attack.

Runs ``experiments.toy_regression``, ``experiments.flows2d`` and ``experiments.attack2d`` (on each flows2d run) at
the cpu preset for each seed of :data:`SEEDS`, the quick-preset flows with their attack (the models the regression
tests pin: small-model demonstrations), and, with ``--settings paper``, the original's sizes (a GPU's work). The
far-from-data sweep of flows2d reaches the radii of :data:`FAR_RADII` (the study's ``--far-radii``).

Usage::

    python -m experiments.reports.toy                      # makes what is missing, then writes the page
    python -m experiments.reports.toy --report-only
    python -m experiments.reports.toy --settings paper      # on a GPU: the paper-size runs
    python -m experiments.reports.toy --list                # the runs, their state and commands
"""

from __future__ import annotations

from pathlib import Path

from ..common import Page, Report, Runs, RunSpec, seeded
from . import attack, checkerboard, regression

__all__ = ["FAR_RADII", "QUOTED", "REPORT", "SEEDS", "main"]

#: The seeds of every configuration the page calls reproduced or not.
SEEDS = (0, 1, 2)
#: Half-widths of the squares of the far-from-data sweep (the study's own go to 1024).
FAR_RADII = ("8", "16", "32", "64", "128", "256", "512", "1024", "4096", "16384", "65536", "262144")

_QUICK_REGRESSION = ("--iterations", "20", "--log-every", "10", "--grid-size", "5")
_QUICK_FLOWS = ("--iterations", "10", "--log-every", "5", "--grid-size", "6", "--far-radii", "8", "1024",
                "--far-points", "4", "--data-points", "50", "--test-size", "100")
_QUICK_ATTACK = ("--steps", "3")


def _attacks(setting: str, flows: str, seeds: tuple[int, ...], in_quick: bool = True) -> list[RunSpec]:
    """attack2d on each seed's flows2d run (the same seed), made in ``--quick`` where that flows2d run is."""
    group = flows.replace("flows2d", "attack2d")
    return [RunSpec("attack2d", f"{group}/seed={s}", ("--flows", f"{{runs}}/{flows}/seed={s}"), seed=s,
                    setting=setting, group=group, quick=_QUICK_ATTACK, in_quick=in_quick and i == 0)
            for i, s in enumerate(seeds)]


RUNS: tuple[RunSpec, ...] = (
    *seeded("toy_regression", "toy/regression", seeds=SEEDS, setting="cpu", quick=_QUICK_REGRESSION),
    *seeded("flows2d", "toy/flows2d", ("--far-radii", *FAR_RADII), seeds=SEEDS, setting="cpu", quick=_QUICK_FLOWS),
    *_attacks("cpu", "toy/flows2d", SEEDS),
    *seeded("flows2d", "toy/quick/flows2d", ("--preset", "quick", "--far-radii", *FAR_RADII), seeds=SEEDS,
            setting="quick-models", quick=_QUICK_FLOWS, in_quick=False),
    *_attacks("quick-models", "toy/quick/flows2d", SEEDS, in_quick=False),
    *seeded("toy_regression", "toy/paper/regression", ("--preset", "paper"), seeds=SEEDS, setting="paper",
            in_quick=False),
    *seeded("flows2d", "toy/paper/flows2d", ("--preset", "paper", "--far-radii", *FAR_RADII), seeds=SEEDS,
            setting="paper", in_quick=False),
    *_attacks("paper", "toy/paper/flows2d", SEEDS, in_quick=False),
)

#: Numerals the prose quotes that are not results: constants of the paper and of the settings (see
#: experiments.reports.common.quoted).
QUOTED = {
    "24": "paper: the toy regression's flow steps",
    "100": "paper: the checkerboard flows' blocks",
    "200": "paper: couplings of the checkerboard flow; attack steps on CelebA",
    "128": "paper: hidden width of the checkerboard flows",
    "0.8": "paper: the i-ResNet's Lipschitz coefficient",
    "56": "paper: the affine flow's NaN step on CelebA",
    "143": "paper: the bounded affine flow's NaN step on CelebA",
    "64": "paper: the attack's ball radius on CelebA, 1/64",
    "10,000": "paper: the toy regression's points",
    "40,000": "paper: the toy regression's steps",
    "50,000": "paper: the checkerboard flows' steps",
}


_PREFIX = {"cpu": "toy", "quick-models": "toy/quick", "paper": "toy/paper"}


def write(runs: Runs, page: Page) -> None:
    """The page: claims, then per setting its three studies, then how to run the paper's sizes."""
    groups: dict[str, list] = {}
    for run in runs:
        groups.setdefault(run.spec.group, []).append(run)
    settings = [s for s in _PREFIX if f"{_PREFIX[s]}/flows2d" in groups]
    claims = []
    for setting in settings:
        prefix, where = _PREFIX[setting], f"{setting} setting"
        claims += regression.claims(_finished(groups.get(f"{prefix}/regression", [])), where)
        claims += checkerboard.claims(_finished(groups[f"{prefix}/flows2d"]), where)
        claims += attack.claims(_finished(groups.get(f"{prefix}/attack2d", [])), where)
    page.claims(claims)
    page.fragment("intro")
    for setting in settings:
        prefix = _PREFIX[setting]
        page.fragment(f"setting_{setting.replace('-', '_')}", seeds=len(groups[f"{prefix}/flows2d"]))
        if f"{prefix}/regression" in groups:
            regression.section(groups[f"{prefix}/regression"], page, setting)
        checkerboard.section(groups[f"{prefix}/flows2d"], page, setting)
        attack.section(groups.get(f"{prefix}/attack2d", []), page, setting)
    page.fragment("paper_size")


def _finished(runs: list) -> list:
    return [r for r in runs if r.finished]


REPORT = Report(name="toy", title="2-D studies: toy regression, checkerboard flows, invertibility attack",
                runs=RUNS, write=write, folder=Path(__file__).parent, description=__doc__,
                default_settings=("cpu", "quick-models"))
main = REPORT.main
