"""Command-line flags of ``python -m experiments.toy_regression`` and its presets."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..common.cli import finite_float, non_negative_float, non_negative_int, positive_float, positive_int, Range

__all__ = ["DEFAULT_PRESET", "NON_RESULT", "PRESETS", "add_arguments", "resolve"]

#: Training size per preset; ``paper`` is the original script.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"points": 10_000, "iterations": 40_000, "lr": 1e-4, "log_every": 200},
    "cpu": {"points": 500, "iterations": 5_000, "lr": 1e-3, "log_every": 100},
    "quick": {"points": 200, "iterations": 300, "lr": 1e-2, "log_every": 50},
}

#: The preset of a run without ``--preset``.
DEFAULT_PRESET = "cpu"
#: Flags that change no result.
NON_RESULT = ("checkpoint_every", "remeasure")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``python -m experiments.toy_regression``."""
    parser.add_argument("--nf-coeff", type=non_negative_float, nargs="+", default=[0.0, 1e-6],
                        help="NF coefficient(s), 0 for none; one run each, trained one after the other in the same "
                             "run folder (default: %(default)s, the original's two runs).")
    parser.add_argument("--points", type=Range(2, integer=True),
                        help="Training points, at least 2 (default: per preset).")
    parser.add_argument("--iterations", type=positive_int, help="Full-batch Adam steps per run (default: per preset).")
    parser.add_argument("--lr", type=positive_float, help="Adam learning rate (default: per preset).")
    parser.add_argument("--log-every", type=positive_int, help="Steps between measurements (default: per preset).")
    parser.add_argument("--steps", type=positive_int, default=24,
                        help="Flow steps (default: %(default)s = 3 levels x 8).")
    parser.add_argument("--hidden", type=positive_int, default=10, help="Coupling MLP width (default: %(default)s).")
    parser.add_argument("--actnorm-logdet-factor", type=finite_float, default=1.0,
                        help="Weight of the ActNorm log-det in the NF term; 2 reproduces the original's quirk "
                             "(default: %(default)s).")
    parser.add_argument("--grid-extent", type=positive_float, default=4.0,
                        help="The grid covers [-E, E]^2 (default: %(default)s; the data lie inside).")
    parser.add_argument("--grid-size", type=positive_int, default=41,
                        help="Grid points per axis (default: %(default)s).")
    parser.add_argument("--float64", action="store_true", help="Train in float64 instead of float32.")
    parser.add_argument("--remeasure", type=Path, default=None, metavar="RUN_FOLDER",
                        help="Do not train: take the final measurements and verdicts of a finished run again from its "
                             "last checkpoint with this code (e.g. a run written by an older version).")
    parser.add_argument("--checkpoint-every", type=non_negative_int, default=500,
                        help="Steps between checkpoints, 0 for none within a run (default: %(default)s).")


def resolve(args: argparse.Namespace) -> None:
    """Distinct NF coefficients, in the given order (a repeated one would overwrite its own log)."""
    args.nf_coeff = list(dict.fromkeys(args.nf_coeff))
