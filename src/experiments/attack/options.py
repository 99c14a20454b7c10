"""Command-line flags of ``python -m experiments.attack`` and its presets."""

from __future__ import annotations

import argparse
from typing import Any

from ..common.cli import positive_float, positive_int
from ..common.image_flows import add_flow_args

__all__ = ["NON_RESULT", "PRESETS", "add_arguments"]

#: ``default``: the zoo's default models, 8 images, 200 steps; ``quick``: seconds-long models, 4 images, 20 steps.
PRESETS: dict[str, dict[str, Any]] = {"default": {"images": 8, "steps": 200}, "quick": {"images": 4, "steps": 20}}
#: Flags that change no result.
NON_RESULT = ("zoo_dir",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``python -m experiments.attack``."""
    add_flow_args(parser, "to attack")
    group = parser.add_argument_group("attack")
    group.add_argument("--split", choices=["train", "test"], default="test",
                       help="Split the natural images come from (the paper: the first training batch) "
                            "(default: %(default)s).")
    group.add_argument("--images", type=positive_int, default=None,
                       help="Natural images attacked, the first ones of the split (default: 8, quick 4).")
    group.add_argument("--radius-levels", type=positive_float, default=0.5,
                       help="Radius of the l-infinity ball in grey levels of the data (the paper: 0.5 of 32) "
                            "(default: %(default)s).")
    group.add_argument("--step-size", type=positive_float, default=None,
                       help="Sign-gradient step in the model's input space (default: radius / 32).")
    group.add_argument("--steps", type=positive_int, default=None, help="Attack steps (default: 200, quick 20).")
    group.add_argument("--unroll", type=positive_int, default=4,
                       help="Fixed-point iterations of a Residual Flow's inverse inside the attack graph "
                            "(default: %(default)s).")
    group.add_argument("--accurate-iterations", type=positive_int, default=200,
                       help="Fixed-point iterations for the reported errors (default: %(default)s).")
