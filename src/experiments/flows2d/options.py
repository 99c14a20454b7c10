"""Command-line flags of ``python -m experiments.flows2d`` and its presets."""

from __future__ import annotations

import argparse
from typing import Any

from ..common.checkerboard import MODELS
from ..common.cli import Range, non_negative_float, non_negative_int, positive_float, positive_int

__all__ = ["DEFAULT_PRESET", "NON_RESULT", "PRESETS", "add_arguments", "resolve"]

#: Sizes per preset; ``blocks`` is coupling pairs (two couplings each) or residual blocks.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"blocks": 100, "hidden": [128, 128, 128, 128], "iterations": 50_000, "batch_size": 500,
              "log_every": 500, "grid_size": 320},
    "cpu": {"blocks": 4, "hidden": [32, 32], "iterations": 2_000, "batch_size": 500, "log_every": 100,
            "grid_size": 200},
    "quick": {"blocks": 2, "hidden": [16, 16], "iterations": 150, "batch_size": 256, "log_every": 50,
              "grid_size": 48},
}

#: The preset of a run without ``--preset``.
DEFAULT_PRESET = "cpu"
#: Flags that change no result.
NON_RESULT = ("checkpoint_every",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``python -m experiments.flows2d``."""
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS),
                        help="Models to train, one after the other (default: all).")
    parser.add_argument("--blocks", type=positive_int,
                        help="Coupling pairs or residual blocks (default: per preset).")
    parser.add_argument("--hidden", type=positive_int, nargs="+",
                        help="Hidden widths of each network (default: per preset).")
    parser.add_argument("--iterations", type=positive_int, help="Training steps per model (default: per preset).")
    parser.add_argument("--batch-size", type=positive_int, help="Fresh samples per step (default: per preset).")
    parser.add_argument("--log-every", type=positive_int,
                        help="Steps between test-set evaluations (default: per preset).")
    parser.add_argument("--grid-size", type=positive_int,
                        help="Grid points per axis on [-8, 8)^2 (default: per preset).")
    parser.add_argument("--coeff", type=Range(0, 1, low_open=True, high_open=True), default=0.8,
                        help="Spectral-norm coefficient of the i-ResNet, in (0, 1) so that every residual branch is "
                             "a contraction (default: %(default)s).")
    parser.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate (default: %(default)s).")
    parser.add_argument("--weight-decay", type=non_negative_float, default=1e-5,
                        help="Adam weight decay (default: %(default)s).")
    parser.add_argument("--test-size", type=positive_int, default=10_000, help="Test samples (default: %(default)s).")
    parser.add_argument("--grid-extent", type=positive_float, default=8.0,
                        help="Grid half-width (default: %(default)s).")
    parser.add_argument("--far-radii", type=positive_float, nargs="+", default=[8, 16, 32, 64, 128, 256, 512, 1024],
                        help="Half-widths R of the squares whose boundaries are probed (default: %(default)s).")
    parser.add_argument("--far-points", type=positive_int, default=100,
                        help="Points per side of each square (default: %(default)s).")
    parser.add_argument("--data-points", type=positive_int, default=5_000,
                        help="Checkerboard samples for the data-region statistics (default: %(default)s).")
    parser.add_argument("--checkpoint-every", type=non_negative_int, default=500,
                        help="Steps between checkpoints, 0 for none within a model (default: %(default)s).")


def resolve(args: argparse.Namespace) -> None:
    """Distinct models, in the given order."""
    args.models = list(dict.fromkeys(args.models))
