"""Command-line flags of the INN classifier: the original's, in kebab-case, with per-dataset defaults.

``--seed``, ``--threads``, ``--save-dir``, ``--out``, ``--resume`` and ``--device`` are the runner's
(:mod:`experiments.common.study`), the same for every study.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from invertible.layers import SCALE_FNS
from invertible.models import PERMUTATIONS
from invertible.regularizers import FD_VARIANTS

from ..common.cli import (add_data_args, apply_preset, finite_float, non_negative_float, non_negative_int,
                          positive_float, positive_int)
from ..common.data import DATASETS

__all__ = ["DATASET_DEFAULTS", "NON_RESULT", "PRESETS", "add_arguments", "resolve"]

#: Defaults that depend on the data set (``None`` in the parser means "take it from here"). The 8-bit sets use
#: the paper's CIFAR-10 settings. The embedded digits (1438 training images, 45 batches of 32 per epoch) cannot
#: give the paper's 78,000 updates in minutes: they use a smaller flow (4 steps per level, width 64), 10x the
#: paper's learning rate with no decay (450 updates), and more frequent logs, which compresses the dynamics the
#: paper describes into about a minute of CPU time (docs/results/classification.md).
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": dict(epochs=10, batch_size=32, lr=1e-3, lr_decay_epochs=[], depth=4, hidden_channels=64,
                   log_every=45, svd_every=90, svd_samples=8, checkpoint_every=45, save_every=0, crop_padding=0,
                   hflip=False, pad_to=None),
    **{name: dict(epochs=200, batch_size=128, lr=1e-4, lr_decay_epochs=None, depth=16, hidden_channels=128,
                  log_every=400, svd_every=2000, svd_samples=1, checkpoint_every=500, save_every=1000,
                  crop_padding=crop, hflip=flip, pad_to=pad)
       for name, crop, flip, pad in (("fashion-mnist", 2, True, 32), ("mnist", 2, False, 32),
                                     ("cifar10", 4, True, None), ("svhn", 4, False, None))},
    # Fashion-MNIST at 16x16 (D = 256) for a CPU: the digits' flow size, the paper's optimiser and schedule
    "fashion-mnist-16": dict(epochs=40, batch_size=128, lr=1e-4, lr_decay_epochs=None, depth=4, hidden_channels=64,
                             log_every=100, svd_every=100, svd_samples=4, checkpoint_every=200, save_every=0,
                             crop_padding=1, hflip=True, pad_to=None),
}

#: The presets: ``default`` leaves everything to the data set's defaults; ``quick`` is a seconds-long affine run
#: (one step per level, width 8, 6 iterations on digits) for the tests.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "quick": dict(epochs=1, batch_size=256, depth=1, hidden_channels=8, log_every=3, svd_every=6, svd_samples=1),
}

#: Flags that never change results (they draw the run or are ignored): allowed to differ on --resume.
NON_RESULT = ("plot_csv", "relu_inplace")

#: The paper's learning-rate milestones (epochs 60, 120, 160 of 200) as fractions of the run.
DECAY_FRACTIONS = (0.3, 0.6, 0.8)


def _default(key: str) -> str:
    values = {name: d[key] for name, d in DATASET_DEFAULTS.items()}
    if len(set(map(str, values.values()))) == 1:
        return str(next(iter(values.values())))
    digits = values.pop("digits")
    rest = sorted(set(map(str, values.values())))
    return f"{digits} on digits, {' or '.join(rest)} on the 8-bit image sets"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``python -m experiments.classification``."""
    add_data_args(parser, default_dataset="digits")
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", "--n-epochs", type=positive_int, default=None,
                       help=f"Number of passes over the training set (default: {_default('epochs')}).")
    train.add_argument("--batch-size", type=positive_int, default=None,
                       help=f"Number of examples per optimisation step, over all processes (default: "
                            f"{_default('batch_size')}).")

    model = parser.add_argument_group("model (the flow and the classifier head)")
    model.add_argument("--coupling", choices=["additive", "affine"], default="additive",
                       help="Coupling layer: additive (volume preserving) or affine (default: %(default)s).")
    model.add_argument("--permutation", choices=list(PERMUTATIONS), default="shuffle",
                       help="Channel mixing before each coupling: 1x1 convolution (conv, lu) or a fixed "
                            "permutation (shuffle, reverse) (default: %(default)s).")
    model.add_argument("--n-levels", type=positive_int, default=3,
                       help="Number of squeeze levels; the image side must be divisible by 2^levels "
                            "(default: %(default)s).")
    model.add_argument("--depth", type=positive_int, default=None,
                       help=f"Flow steps per level (default: {_default('depth')}).")
    model.add_argument("--hidden-channels", type=positive_int, default=None,
                       help=f"Width of each coupling network (default: {_default('hidden_channels')}).")
    model.add_argument("--use-actnorm", action="store_true",
                       help="Put an ActNorm at the start of every flow step (left out where feature maps are 1x1).")
    model.add_argument("--use-actnorm-in-blocks", action="store_true",
                       help="Follow the first two convolutions of every coupling network by an ActNorm.")
    model.add_argument("--an-stable-eps", type=non_negative_float, default=0.0,
                       help="Constant added to every ActNorm scale, exp(logs) + eps, so the inverse never divides "
                            "by less than eps (default: %(default)s).")
    model.add_argument("--affine-scale-fn", choices=list(SCALE_FNS), default="sigmoid",
                       help="Scale function of the affine couplings, e.g. sigmoid(h + 2) (Glow) or exp(h) "
                            "(default: %(default)s).")
    model.add_argument("--affine-eps", type=non_negative_float, default=0.0,
                       help="Constant added to the affine scale, sigmoid(h + 2) + eps, counted in the log-det "
                            "(default: %(default)s).")
    model.add_argument("--zero-init", action="store_true",
                       help="Zero-initialise the last convolution of every coupling network, so each coupling "
                            "starts as the identity (additive) or a constant scaling (affine).")
    model.add_argument("--zs-dim", type=positive_int, default=None,
                       help="Number of leading latent entries fed to the classifier head (default: all of them).")
    model.add_argument("--inj-pad", type=non_negative_int, default=0,
                       help="Append this many zero channels to the input (injective padding) (default: "
                            "%(default)s).")
    model.add_argument("--use-prior", action="store_true",
                       help="Include the Gaussian log-density of the latents in the normalizing-flow objective.")
    model.add_argument("--learntop", action="store_true",
                       help="Learn the prior's mean and log-std per latent channel (needs --use-prior).")
    model.add_argument("--n-bits-x", type=positive_float, default=None,
                       help="Bits per pixel of the data, used only in the objective's constant -D log(2^bits) "
                            "(default: log2 of the data set's number of pixel values).")
    model.add_argument("--relu-inplace", action="store_true",
                       help="Accepted for compatibility with the original and ignored (it only saved memory there).")

    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--lr", type=positive_float, default=None,
                     help=f"Adam learning rate (default: {_default('lr')}).")
    opt.add_argument("--lr-decay", type=positive_float, default=0.1,
                     help="Factor the learning rate is multiplied by at each --lr-decay-epochs (default: "
                          "%(default)s).")
    opt.add_argument("--lr-decay-epochs", type=non_negative_int, nargs="*", default=None,
                     help="Epochs at whose start the learning rate decays (default: none on digits, else 30%%, "
                          "60%% and 80%% of --epochs, i.e. 60 120 160 of 200 as in the paper).")
    opt.add_argument("--wdecay", type=non_negative_float, default=0.0,
                     help="Adam weight decay (default: %(default)s).")
    opt.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                     help="Precision of training and of the reconstruction checks (default: %(default)s).")

    reg = parser.add_argument_group("regularization and memory saving")
    reg.add_argument("--nf-coeff", type=finite_float, default=-1.0,
                     help="Weight of the normalizing-flow term -nf_coeff * mean(objective); off when <= 0 (default: "
                          "%(default)s).")
    reg.add_argument("--fd-coeff", type=non_negative_float, default=0.0,
                     help="Weight of the forward finite-difference term on ||F(x + eps d) - F(x)||^2 (default: "
                          "%(default)s).")
    reg.add_argument("--fd-inv-coeff", type=non_negative_float, default=0.0,
                     help="Weight of the inverse finite-difference term on ||F^-1(F(x) + eps d) - x||^2 (default: "
                          "%(default)s).")
    reg.add_argument("--fd-eps", type=positive_float, default=0.1,
                     help="Step eps of the finite differences (default: %(default)s).")
    reg.add_argument("--fd-variant", choices=list(FD_VARIANTS), default="intended",
                     help="Finite-difference form: intended (unit direction per sample, divided by eps^2, batch "
                          "mean) or original (the paper's code: per-feature directions, divided by eps, batch sum) "
                          "(default: %(default)s).")
    reg.add_argument("--regularize-every", type=positive_int, default=1,
                     help="Add the NF and FD terms only at iterations divisible by this (default: %(default)s).")
    reg.add_argument("--twin", action="store_true",
                     help="After training this (regularized) model, train its unregularized twin in the same run "
                          "(same flags, data and seed, without the NF and finite-difference terms; --mem-saving kept) "
                          "in <run>/twin/ and print both side by side; the twin's metrics go under 'twin' in "
                          "metrics.json. Needs --nf-coeff, --fd-coeff or --fd-inv-coeff.")
    reg.add_argument("--mem-saving", action="store_true",
                     help="Compute the flow's gradients by rebuilding activations with its inverse instead of "
                          "storing them (memory-saving backprop).")

    log = parser.add_argument_group("logging, measurements and checkpoints")
    log.add_argument("--eval-every", type=positive_int, default=2,
                     help="Epochs between evaluations of loss, accuracy and reconstruction error on the full "
                          "train and test sets (default: %(default)s).")
    log.add_argument("--log-every", type=positive_int, default=None,
                     help=f"Iterations between reconstruction-error logs on a fixed test batch (default: "
                          f"{_default('log_every')}).")
    log.add_argument("--svd-every", type=positive_int, default=None,
                     help=f"Iterations between exact Jacobian SVDs (default: {_default('svd_every')}).")
    log.add_argument("--svd-samples", type=positive_int, default=None,
                     help=f"Fixed test images whose Jacobian SVD is taken; the worst is logged (default: "
                          f"{_default('svd_samples')}).")
    log.add_argument("--no-svd", action="store_true", help="Skip the periodic Jacobian SVDs (the final one is "
                     "always taken).")
    log.add_argument("--no-inverse-svd", action="store_true",
                     help="Skip the SVD of the inverse map's Jacobian in the periodic log (the final one is always "
                          "taken).")
    log.add_argument("--grad-check-every", type=non_negative_int, default=None,
                     help="Iterations between checks of memory-saving against standard gradients of the "
                          "classification loss on a fixed batch of 128 training images (angle, relative error, beside "
                          "the condition number), logged in grad_log.csv and plotted against it; 0 for none "
                          "(default: --log-every).")
    log.add_argument("--checkpoint-every", type=non_negative_int, default=None,
                     help=f"Iterations between the checkpoints that --resume continues from, besides every epoch "
                          f"end (default: {_default('checkpoint_every')}).")
    log.add_argument("--save-every", type=non_negative_int, default=None,
                     help=f"Iterations between kept model snapshots checkpoints/iter_<N>.pt, 0 for none "
                          f"(default: {_default('save_every')}).")
    log.add_argument("--plot-csv", action="store_true", help="Also plot the per-iteration log (log scale).")

    data = parser.add_argument_group("data transforms")
    data.add_argument("--crop-padding", type=non_negative_int, default=None,
                      help=f"Random-crop augmentation: pad by this many pixels, crop back at a random offset, 0 for "
                           f"none (default: {_default('crop_padding')}).")
    data.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                      help="Random horizontal flips of training images (default: on for cifar10 and "
                           "fashion-mnist, off otherwise).")
    data.add_argument("--train-subset", type=positive_int, default=None,
                      help="Train on the first N training images only (default: all).")
    data.add_argument("--test-subset", type=positive_int, default=None,
                      help="Evaluate on the first N test images only (default: all).")
    data.add_argument("--pad-to", type=positive_int, default=None,
                      help="Zero-pad images to this side length before everything else (default: 32 for the "
                           "28x28 sets, none otherwise).")


def resolve(args: argparse.Namespace) -> None:
    """Fill in the per-dataset defaults and derived values; raise ValueError on bad combinations."""
    apply_preset(args, DATASET_DEFAULTS[args.dataset])
    if args.grad_check_every is None:
        args.grad_check_every = args.log_every
    if args.lr_decay_epochs is None:
        args.lr_decay_epochs = sorted({max(1, round(f * args.epochs)) for f in DECAY_FRACTIONS})
    args.lr_decay_epochs = sorted(args.lr_decay_epochs)
    spec = DATASETS[args.dataset]
    if args.n_bits_x is None:
        args.n_bits_x = math.log2(spec.levels)
    if args.twin and not (args.nf_coeff > 0 or args.fd_coeff > 0 or args.fd_inv_coeff > 0):
        raise ValueError("--twin trains the unregularized twin of a regularized model: give --nf-coeff, --fd-coeff "
                         "or --fd-inv-coeff as well")
    if args.learntop and not args.use_prior:
        raise ValueError("--learntop learns the prior, so it needs --use-prior")
    if args.coupling == "additive" and (args.affine_eps or args.affine_scale_fn != "sigmoid"):
        raise ValueError("--affine-eps and --affine-scale-fn apply to --coupling affine only")
    side = max(spec.shape[1:])
    if args.pad_to is not None and args.pad_to < side:
        raise ValueError(f"--pad-to {args.pad_to} is smaller than the {args.dataset} images ({side}x{side}); give a "
                         f"side of at least {side}, divisible by 2^--n-levels")
