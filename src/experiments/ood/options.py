"""Command-line flags of ``python -m experiments.ood`` and its presets."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..common.cli import positive_int
from ..common.image_flows import add_flow_args
from .sets import set_name

__all__ = ["NON_RESULT", "PRESETS", "add_arguments"]

#: ``default``: the zoo's default models, 1000 images per set; ``quick``: seconds-long models, 64 images.
PRESETS: dict[str, dict[str, Any]] = {"default": {"n": 1000}, "quick": {"n": 64}}
#: Flags that change no result.
NON_RESULT = ("zoo_dir", "batch_size")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``python -m experiments.ood``."""
    add_flow_args(parser, "to evaluate")
    group = parser.add_argument_group("sets and measurements")
    group.add_argument("--ood-dir", type=Path, default=Path("ood_data"),
                       help="Folder with the paper's dtd.t7, places.t7 and Imagenet_resize/ (default: %(default)s).")
    group.add_argument("--sets", nargs="+", type=set_name, default=None,
                       help="Sets to evaluate (default: in-distribution train and test, gaussian, uniform, "
                            "rademacher, constant, and every real OOD set available for --dataset).")
    group.add_argument("--n", type=positive_int, default=None,
                       help="Images per set at most (the first ones; synthetic sets draw this many) (default: 1000, "
                            "quick 64; the paper: 10000 and full data splits).")
    group.add_argument("--batch-size", type=positive_int, default=250,
                       help="Images per forward/inverse call (default: %(default)s).")
    group.add_argument("--no-bpd", action="store_true",
                       help="Skip bits per dimension (a pre-trained Residual Flow's log-det estimate is slow).")
    group.add_argument("--bpd-n", type=positive_int, default=None,
                       help="Bits per dimension on the first this many images of each set only (default: all; a "
                            "Residual Flow's log-det costs far more than its reconstruction).")
