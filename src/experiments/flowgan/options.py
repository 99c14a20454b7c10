"""Command-line flags of ``python -m experiments.flowgan`` and the variant names of the sweep."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from ..common.cli import add_data_args, apply_preset, non_negative_float, non_negative_int, positive_float, positive_int
from ..common.glow.options import add_analysis_args, add_model_args, check_model_args, model_spec

__all__ = ["DATASET_DEFAULTS", "NON_RESULT", "PRESETS", "Variant", "add_arguments", "resolve", "variant"]

#: Sizes per data set, for the flags left unset after the preset. The original: K = 8, L = 3, width 128, batch 64,
#: generator lr 5e-5 for 250 epochs of CIFAR-10. The digits default (264 steps per variant, four variants) and the
#: quick preset compress that with a generator lr of 1e-3.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": dict(epochs=12, n_levels=2, depth=4, hidden_channels=64, batch_size=64, lr=1e-3, eval_every=44,
                   disc_width=32, fd_samples=359, analysis_samples=128, jacobian_samples=2, threads=1),
    "fashion-mnist": dict(epochs=3, n_levels=2, depth=8, hidden_channels=128, batch_size=64, lr=5e-5,
                          eval_every=500, disc_width=64, fd_samples=1000, analysis_samples=64, jacobian_samples=1),
    "mnist": dict(epochs=3, n_levels=2, depth=8, hidden_channels=128, batch_size=64, lr=5e-5, eval_every=500,
                  disc_width=64, fd_samples=1000, analysis_samples=64, jacobian_samples=1),
    "fashion-mnist-16": dict(epochs=3, n_levels=2, depth=4, hidden_channels=64, batch_size=64, lr=5e-5,
                             eval_every=500, disc_width=32, fd_samples=1000, analysis_samples=64, jacobian_samples=1),
    "cifar10": dict(epochs=5, n_levels=3, depth=8, hidden_channels=128, batch_size=64, lr=5e-5, eval_every=1000,
                    disc_width=64, fd_samples=1000, analysis_samples=32, jacobian_samples=1),
    "svhn": dict(epochs=5, n_levels=3, depth=8, hidden_channels=128, batch_size=64, lr=5e-5, eval_every=1000,
                 disc_width=64, fd_samples=1000, analysis_samples=32, jacobian_samples=1),
}
#: ``default`` leaves everything to the data set's sizes; ``quick`` is the seconds-long setting of the tests.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "quick": dict(epochs=1, n_levels=2, depth=2, hidden_channels=16, batch_size=64, lr=1e-3, eval_every=11,
                  disc_width=8, fd_samples=128, analysis_samples=16, jacobian_samples=1, threads=1),
}

#: Flags that change no training result: they may differ on ``--resume``.
NON_RESULT = ("analyze", "no_analyze", "analysis_samples", "jacobian_samples", "ood", "classifier_dir")


class Variant(argparse.Namespace):
    """One training objective and model of the sweep."""

    name: str
    gan: float
    mle: float
    model: str
    actnorm_max_scale: float


def variant(name: str) -> Variant:
    """Parse a variant name: ``+``-separated parts ``gan`` (the adversarial loss), ``mle<w>`` (the maximum-likelihood
    term with weight ``w``, e.g. ``mle1e-4``; ``mle`` alone is weight 1), ``maxscale<M>`` (ActNorm scales bounded to
    ``(1/M, M)``) and a model (``affine`` by default, ``additive``, ``affine-<scale>``).

    Example: ``gan+mle1e-4+maxscale5`` is the original's exp 3 with MLE weight 1e-4.
    """
    out = Variant(name=name, gan=0.0, mle=0.0, model="affine", actnorm_max_scale=0.0)
    for part in name.split("+"):
        try:
            if part == "gan":
                out.gan = 1.0
            elif part.startswith("mle"):
                out.mle = float(part[3:]) if part[3:] else 1.0
                if not out.mle > 0 or not math.isfinite(out.mle):
                    raise ValueError
            elif part.startswith("maxscale"):
                out.actnorm_max_scale = float(part[8:])
                if not 1 < out.actnorm_max_scale < math.inf:
                    raise ValueError
            else:
                model_spec(part)
                out.model = part
        except (ValueError, argparse.ArgumentTypeError):
            raise argparse.ArgumentTypeError(
                f"bad variant {name!r} (part {part!r}): use +-separated parts gan, mle<weight>, maxscale<M > 1> and "
                "a model (affine, additive, affine-<scale>), e.g. gan+mle1e-4+maxscale5") from None
    if out.gan == 0 and out.mle == 0:
        raise argparse.ArgumentTypeError(f"variant {name!r} has no loss: add gan and/or mle<weight>")
    return out


def variant_name(text: str) -> str:
    """An argparse type: a valid variant name (see :func:`variant`)."""
    variant(text)
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``python -m experiments.flowgan``."""
    add_data_args(parser, default_dataset="digits")
    parser.add_argument("--variants", nargs="+", type=variant_name,
                        default=["gan", "gan+mle1e-3", "gan+mle1e-4", "gan+maxscale5"],
                        help="Runs of the sweep, each +-separated parts: gan, mle<weight> (maximum likelihood in nats "
                             "per image, weighted), maxscale<M> (ActNorm scale in (1/M, M)) and a model (affine, "
                             "additive, affine-<scale>), e.g. gan+mle1e-4+maxscale5 (default: %(default)s).")
    parser.add_argument("--analyze", nargs="+", type=Path, default=None, metavar="RUN_FOLDER",
                        help="Do not train: analyse the snapshots of these run folders.")
    parser.add_argument("--no-analyze", action="store_true", help="Train only; skip the stability analysis.")
    add_model_args(parser)

    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=positive_int, default=None, help="Passes over the training set (default: "
                       "per data set).")
    train.add_argument("--batch-size", type=positive_int, default=None,
                       help="Real and generated images per step (default: per data set).")
    train.add_argument("--lr", type=positive_float, default=None,
                       help="Generator (flow) Adam learning rate, betas (0.5, 0.99) (default: 5e-5, the original's, on "
                            "the image sets; 1e-3 for the digits and the quick preset, which compresses the "
                            "original's 250 epochs into a few hundred steps).")
    train.add_argument("--disc-lr", type=positive_float, default=1e-4,
                       help="Discriminator Adam learning rate, betas (0.5, 0.99) (default: %(default)s).")
    train.add_argument("--gp-weight", type=non_negative_float, default=10.0,
                       help="Weight of the gradient penalty in the discriminator loss (default: %(default)s).")
    train.add_argument("--disc-width", type=positive_int, default=None,
                       help="Channels of the discriminator's first stage (64 in the original) (default: per data set).")
    train.add_argument("--n-init-batches", type=non_negative_int, default=0,
                       help="Batches for a data-dependent ActNorm initialisation; 0 (the original's FlowGAN runs) "
                            "starts every ActNorm as the identity (default: %(default)s).")
    train.add_argument("--learn-top", action="store_true",
                       help="Learn the top prior (the original's FlowGAN runs use --no_learn_top).")
    train.add_argument("--eval-every", type=positive_int, default=None,
                       help="Steps between evaluations (test bits per dimension, non-finite samples, Fréchet distance, "
                            "round trips) and kept snapshots (default: per data set).")
    train.add_argument("--checkpoint-every", type=non_negative_int, default=200,
                       help="Steps between the checkpoints --resume continues from (default: %(default)s).")
    fd = parser.add_argument_group("sample quality (Fréchet distance in the features of our own classifier)")
    fd.add_argument("--fd-samples", type=positive_int, default=None,
                    help="Generated images compared with as many test images (default: per data set).")
    fd.add_argument("--classifier-dir", type=Path, default=None,
                    help="Cache folder of the feature classifier (default: runs/feature_classifier/<dataset>-m<2^L>-"
                         "s<seed>).")
    fd.add_argument("--classifier-epochs", type=positive_int, default=15,
                    help="Training epochs of the feature classifier (default: %(default)s).")
    add_analysis_args(parser)


def resolve(args: argparse.Namespace) -> None:
    """Fill the data set's sizes and the fixed FlowGAN settings; raise ValueError on bad values."""
    if args.analyze is None:
        apply_preset(args, DATASET_DEFAULTS[args.dataset])
    args.no_learn_top = not args.learn_top
    args.optim_name, args.warmup, args.max_grad_norm, args.augment = "adam", 0, 0.0, False
    check_model_args(args)
    if args.actnorm_max_scale:
        raise ValueError("give the ActNorm bound per variant (maxscale<M>), not with --actnorm-max-scale")
    args.variants = list(dict.fromkeys(args.variants))
