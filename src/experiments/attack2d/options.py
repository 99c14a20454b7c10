"""Command-line flags of ``python -m experiments.attack2d`` and its presets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..common.cli import positive_float, positive_int

__all__ = ["PRESETS", "add_arguments", "resolve"]

#: Attack sizes: ``default`` and the tests' ``quick``.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {"points": 64, "steps": 200},
    "quick": {"points": 16, "steps": 40},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``python -m experiments.attack2d``."""
    parser.add_argument("--flows", type=Path, required=True,
                        help="A finished run folder of python -m experiments.flows2d (its trained models).")
    parser.add_argument("--models", nargs="+", help="Models to attack (default: all models of the run).")
    parser.add_argument("--points", type=positive_int,
                        help="Checkerboard samples attacked, all at once (default: per preset: 64, quick 16).")
    parser.add_argument("--radius", type=positive_float, nargs="+", default=[0.5, 4.0, 256.0],
                        help="Half-widths of the l-infinity balls, one attack each: 0.5 stays near the data, 4 "
                             "reaches the [-8, 8]^2 grid, 256 reaches far from the data where flows2d's sweep "
                             "probes (default: %(default)s).")
    parser.add_argument("--step-size", type=positive_float,
                        help="Sign-gradient step (default: radius / 50, so 100 steps cross the ball).")
    parser.add_argument("--steps", type=positive_int, help="Attack steps (default: per preset: 200, quick 40).")
    parser.add_argument("--unroll", type=positive_int, default=4,
                        help="Fixed-point iterations of residual inverses inside the attack graph (default: "
                             "%(default)s, as the original).")


def resolve(args: argparse.Namespace) -> None:
    """Attack every model of the run unless ``--models`` names some (checked against the run in :func:`prepare`)."""
    if args.models is None:
        config = Path(args.flows) / "config.json"
        args.models = list(_stored_models(config))
    args.models = list(dict.fromkeys(args.models))


def _stored_models(config: Path) -> list[str]:
    try:
        return list(json.loads(config.read_text())["args"]["models"])
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"--flows {config.parent} is not a finished run folder of python -m experiments.flows2d "
                         f"({exc})") from None
