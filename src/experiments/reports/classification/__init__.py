"""The page docs/results/classification.md: the README's classification runs on the embedded digits.

Runs ``python -m experiments.classification`` for every configuration of every setting (:data:`SETTINGS`) once
per seed of :data:`SEEDS`, one after the other in this process, then writes the claims, a table per setting, the
NF term's pull, the comparison figures and the reconstruction pictures.

Usage::

    python -m experiments.reports.classification                      # every setting and seed
    python -m experiments.reports.classification --settings digits
    python -m experiments.reports.classification --report-only
    python -m experiments.reports.classification --list
"""

from __future__ import annotations

from pathlib import Path

from ...classification.readme_runs import ALL_RUNS
from ..common import Page, Report, Runs, RunSpec, seeded
from . import claims as claim_rules
from . import section

__all__ = ["FD_SCALED", "NF_SCALED", "QUOTED", "REPORT", "SEEDS", "SETTINGS", "main", "regularizer"]

#: The seeds of every configuration (the study's default, 3, first).
SEEDS = (3, 4, 5)

#: The README's NF weight 1e-5 was set for CIFAR-10's D = 3072 dimensions; the NF objective sums over dimensions,
#: so the same weight per dimension on 8x8 digits (D = 64) is 1e-5 * 3072 / 64.
NF_SCALED = 1e-5 * 3072 / 64
#: The README's FD weight 1e-4 was set for the original finite-difference form on CIFAR-10, about eps * D = 307
#: times the intended form (unit directions, divided by eps^2, batch mean); the intended form at the paper's
#: strength is therefore 1e-4 * 0.1 * 3072.
FD_SCALED = 1e-4 * 0.1 * 3072


def _fd_scaled(permutation: str) -> list[str]:
    flags = list(ALL_RUNS[f"affine_{permutation}_fd"])
    for flag in ("--fd-coeff", "--fd-inv-coeff"):
        flags[flags.index(flag) + 1] = f"{FD_SCALED:.2g}"
    return flags


_EXTRA = {"affine_conv_float64": [*ALL_RUNS["affine_conv"], "--dtype", "float64"],
          "affine_conv_nf_scaled": [*ALL_RUNS["affine_conv"], "--nf-coeff", f"{NF_SCALED:.2g}"],
          "affine_shuffle_nf_scaled": [*ALL_RUNS["affine_shuffle"], "--nf-coeff", f"{NF_SCALED:.2g}"],
          "affine_conv_fd_scaled": _fd_scaled("conv"), "affine_shuffle_fd_scaled": _fd_scaled("shuffle"),
          "affine_conv_fd_original": [*ALL_RUNS["affine_conv_fd"], "--fd-variant", "original"]}
CONFIGS: dict[str, list[str]] = {**ALL_RUNS, **_EXTRA}

_DIGITS = ["--lr", "1e-3", "--batch-size", "32", "--log-every", "45", "--svd-every", "90", "--lr-decay-epochs"]
#: Setting -> (flags added to every run, its configurations, configurations whose reconstructions are pictured).
SETTINGS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "digits": ([*_DIGITS, "--epochs", "10"], list(CONFIGS),
               ["affine_conv", "affine_conv_nf", "affine_conv_nf_scaled", "affine_conv_fd", "affine_conv_fd_scaled"]),
    "paper_lr": (["--lr", "1e-4", "--batch-size", "128", "--epochs", "30", "--lr-decay-epochs", "9", "18", "24",
                  "--log-every", "30", "--svd-every", "60"],
                 ["affine_conv", "affine_shuffle", "additive_conv", "additive_shuffle"], []),
    "digits_long": ([*_DIGITS, "--epochs", "30"],
                    ["affine_shuffle", "affine_shuffle_nf", "affine_shuffle_fd", "affine_shuffle_nf_scaled",
                     "affine_shuffle_fd_scaled"], ["affine_shuffle", "affine_shuffle_nf_scaled"]),
}
#: What --quick makes: a few configurations of the digits setting, at the study's quick preset.
_QUICK_CONFIGS = ("affine_conv", "additive_conv", "affine_conv_nf_scaled")
_QUICK = ("--epochs", "1", "--batch-size", "256", "--log-every", "3", "--svd-every", "6")

RUNS: tuple[RunSpec, ...] = tuple(
    spec for setting, (flags, configs, _) in SETTINGS.items() for config in configs
    for spec in seeded("classification", f"classification/{setting}/{config}", [*CONFIGS[config], *flags],
                       seeds=SEEDS, setting=setting, quick=_QUICK,
                       in_quick=setting == "digits" and config in _QUICK_CONFIGS))

#: Numerals the prose quotes that are not results (see experiments.reports.common.quoted).
QUOTED = {
    "1438": "setting: training images of the embedded digits",
    "359": "setting: test images of the embedded digits",
    "64": "setting: dimensions of an 8x8 digit; hidden channels of the flow",
    "0.36": "setting: millions of flow parameters",
    "128": "setting: the fixed test batch",
    "200": "paper: CIFAR-10 training epochs",
    "8.6e14": "paper: the largest condition number on CIFAR-10",
}


def write(runs: Runs, page: Page) -> None:
    settings = [s for s in SETTINGS if runs.setting(s)]
    page.claims(claim_rules.claims(runs, settings))
    page.fragment("intro", nf_scaled=NF_SCALED, fd_scaled=FD_SCALED, fd_ratio=0.1 * 3072, fd_ratio_digits=0.1 * 64)
    for setting in settings:
        flags, configs, pictures = SETTINGS[setting]
        section.write(runs, page, setting, flags, configs, pictures)
    page.fragment("findings", **claim_rules.findings(runs, settings))


def regularizer(flags: list[str]) -> str:
    return section.regularizer(flags)


REPORT = Report(name="classification", title="INN classifier: numerical invertibility on the embedded digits",
                runs=RUNS, write=write, folder=Path(__file__).parent, description=__doc__)
main = REPORT.main
