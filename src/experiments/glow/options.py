"""Command-line flags of ``python -m experiments.glow``: the original's ``train.py`` flags in kebab-case and the
sizes per data set (the Glow architecture and analysis flags are :mod:`experiments.common.glow.options`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from invertible.layers import SCALE_FNS

from ..common.cli import add_data_args, apply_preset, non_negative_float, non_negative_int, positive_float, positive_int
from ..common.glow.options import add_analysis_args, add_model_args, check_model_args, model_name

__all__ = ["DATASET_DEFAULTS", "NON_RESULT", "PRESETS", "add_arguments", "resolve"]

#: Sizes per data set, for the flags left unset after the preset. The digits default trains two models in a few
#: minutes on two cores; Fashion-MNIST and CIFAR-10 use the original's layout at a width a CPU can afford.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": dict(epochs=100, n_levels=2, depth=4, hidden_channels=64, batch_size=64, lr=5e-4, eval_every=230,
                   analysis_samples=256, jacobian_samples=4, augment=False, threads=1),
    "fashion-mnist": dict(epochs=6, n_levels=2, depth=8, hidden_channels=128, batch_size=64, lr=5e-4,
                          eval_every=500, analysis_samples=128, jacobian_samples=1, augment=False),
    "mnist": dict(epochs=6, n_levels=2, depth=8, hidden_channels=128, batch_size=64, lr=5e-4, eval_every=500,
                  analysis_samples=128, jacobian_samples=1, augment=False),
    # Fashion-MNIST at 16x16 (D = 256) on a CPU: the digits' layout (2 levels x 4 steps, width 64) on the first 10000
    # training images, 12 epochs (1884 steps, 5 of warm-up)
    "fashion-mnist-16": dict(epochs=12, n_levels=2, depth=4, hidden_channels=64, batch_size=64, lr=5e-4,
                             eval_every=314, analysis_samples=256, jacobian_samples=2, augment=False,
                             train_subset=10000, threads=1),
    "cifar10": dict(epochs=10, n_levels=3, depth=8, hidden_channels=128, batch_size=64, lr=5e-4, eval_every=1000,
                    analysis_samples=64, jacobian_samples=1, augment=True),
    "svhn": dict(epochs=10, n_levels=3, depth=8, hidden_channels=128, batch_size=64, lr=5e-4, eval_every=1000,
                 analysis_samples=64, jacobian_samples=1, augment=False),
}
#: The presets: ``default`` leaves everything to the data set's sizes; ``quick`` is the seconds-long seeded setting
#: of the tests (a learning rate of 1e-2 makes it show the trends of a long run).
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "quick": dict(epochs=13, n_levels=2, depth=2, hidden_channels=16, batch_size=64, lr=1e-2, eval_every=100,
                  analysis_samples=32, jacobian_samples=2, augment=False, threads=1),
}

#: Flags that only change what the analysis measures, not the training: they may differ on ``--resume``.
NON_RESULT = ("analyze", "no_analyze", "analysis_samples", "jacobian_samples", "ood")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``python -m experiments.glow``."""
    add_data_args(parser, default_dataset="digits")
    parser.add_argument("--models", nargs="+", type=model_name, default=["affine", "additive"],
                        help="Models to train, one run each: additive, affine (sigmoid(h + 2) + eps, the "
                             f"original's) or affine-<scale> with <scale> in {', '.join(SCALE_FNS)} (default: "
                             "%(default)s).")
    parser.add_argument("--analyze", nargs="+", type=Path, default=None, metavar="RUN_FOLDER",
                        help="Do not train: analyse the snapshots of these run folders (a study folder written by "
                             "this command, or single-model folders; with several, the combined table and plots go "
                             "to --out, or to the first folder).")
    parser.add_argument("--no-analyze", action="store_true", help="Train only; skip the stability analysis.")
    add_model_args(parser)

    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=positive_int, default=None,
                       help="Passes over the training set (default: per data set).")
    train.add_argument("--batch-size", type=positive_int, default=None,
                       help="Images per optimisation step (default: per data set).")
    train.add_argument("--optim-name", choices=["adamax", "adam"], default="adamax",
                       help="adamax (weight decay 5e-5, the original's MLE runs) or adam (betas 0.5, 0.99) "
                            "(default: %(default)s).")
    train.add_argument("--lr", type=positive_float, default=None,
                       help="Learning rate (default: 5e-4, the original's; 1e-2 in the quick preset, which makes a "
                            "seconds-long run show the trends of a long one).")
    train.add_argument("--warmup", type=non_negative_int, default=5,
                       help="Epochs of linear learning-rate warm-up, lr * min(1, (epoch + 1) / warmup), stepped "
                            "per epoch as the original; 0 for none (default: %(default)s).")
    train.add_argument("--n-init-batches", type=non_negative_int, default=10,
                       help="Batches for the data-dependent ActNorm initialisation; 0 starts every ActNorm as the "
                            "identity (default: %(default)s).")
    train.add_argument("--max-grad-norm", type=non_negative_float, default=0.0,
                       help="Clip the gradient norm to this; 0 for no clipping (default: %(default)s).")
    train.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                       help="Random translations (crop with padding of 10%% of the side) and horizontal flips "
                            "(default: on for cifar10 only).")
    train.add_argument("--train-subset", type=positive_int, default=None,
                       help="Train on the first N training images only (default: per data set; all but on "
                            "fashion-mnist-16).")
    train.add_argument("--eval-every", type=positive_int, default=None,
                       help="Steps between evaluations (test bits per dimension, sample grid, non-finite samples, "
                            "round-trip distances) and kept snapshots for the analysis (default: per data set).")
    train.add_argument("--checkpoint-every", type=non_negative_int, default=200,
                       help="Steps between the checkpoints --resume continues from, besides epoch ends (default: "
                            "%(default)s).")
    add_analysis_args(parser)


def resolve(args: argparse.Namespace) -> None:
    """Fill the data set's sizes into the flags still unset; raise ValueError on bad combinations. With
    ``--analyze``, unset sizes come from the analysed runs instead."""
    if getattr(args, "analyze", None) is None:
        apply_preset(args, DATASET_DEFAULTS[args.dataset])
    check_model_args(args)
    args.models = list(dict.fromkeys(args.models))
