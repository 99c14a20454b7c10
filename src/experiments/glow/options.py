"""Command-line flags of ``python -m experiments.glow``: the original's ``train.py`` flags in kebab-case, presets
per data set, and the model names of the comparison."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Sequence

from invertible.layers import SCALE_FNS
from invertible.models import PERMUTATIONS

from ..cli import _positive_int, _seed, add_data_args, add_run_args, apply_preset, parse_and_resolve

__all__ = ["ANALYSIS_KEYS", "NON_RESULT", "PRESETS", "ModelSpec", "add_analysis_args", "add_model_args", "build_parser",
           "check_model_args", "model_spec", "parse", "resolve", "run_name"]

#: Sizes per data set (``--preset default``) and the small seeded setting of the tests (``--preset quick``).
#: ``None`` in the parser means "take it from here". The digits default trains two models in a few minutes on
#: two cores; Fashion-MNIST and CIFAR-10 use the original's layout at a width a CPU can afford.
PRESETS: dict[str, dict[str, Any]] = {
    "digits": dict(epochs=100, n_levels=2, depth=4, hidden_channels=64, batch_size=64, lr=5e-4, eval_every=230,
                   analysis_samples=256, jacobian_samples=4, augment=False, threads=1),
    "fashion-mnist": dict(epochs=6, n_levels=2, depth=8, hidden_channels=128, batch_size=64, lr=5e-4,
                          eval_every=500, analysis_samples=128, jacobian_samples=1, augment=False),
    "mnist": dict(epochs=6, n_levels=2, depth=8, hidden_channels=128, batch_size=64, lr=5e-4, eval_every=500,
                  analysis_samples=128, jacobian_samples=1, augment=False),
    "cifar10": dict(epochs=10, n_levels=3, depth=8, hidden_channels=128, batch_size=64, lr=5e-4, eval_every=1000,
                    analysis_samples=64, jacobian_samples=1, augment=True),
    "svhn": dict(epochs=10, n_levels=3, depth=8, hidden_channels=128, batch_size=64, lr=5e-4, eval_every=1000,
                 analysis_samples=64, jacobian_samples=1, augment=False),
    "quick": dict(epochs=13, n_levels=2, depth=2, hidden_channels=16, batch_size=64, lr=1e-2, eval_every=100,
                  analysis_samples=32, jacobian_samples=2, augment=False, threads=1),
}

#: Flags that only change what the analysis measures, not the training: they may differ on ``--resume``.
ANALYSIS_KEYS = ("analyze", "no_analyze", "analysis_samples", "jacobian_samples", "ood", "threads", "save_dir",
                 "preset")
#: Flags that never change results.
NON_RESULT = ANALYSIS_KEYS


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


class ModelSpec(argparse.Namespace):
    """What a model name means: the coupling and, for affine couplings, the scale function."""

    coupling: str
    scale_fn: str | None


def model_spec(name: str) -> ModelSpec:
    """Parse a model name: ``additive``, ``affine`` (the original's ``sigmoid(h + 2) + eps``) or
    ``affine-<scale function>`` with a scale function of :data:`invertible.layers.SCALE_FNS`."""
    if name == "additive":
        return ModelSpec(coupling="additive", scale_fn=None)
    if name == "affine":
        return ModelSpec(coupling="affine", scale_fn="sigmoid_eps")
    if name.startswith("affine-") and name[len("affine-"):] in SCALE_FNS:
        return ModelSpec(coupling="affine", scale_fn=name[len("affine-"):])
    raise argparse.ArgumentTypeError(
        f"unknown model {name!r}: use additive, affine, or affine-<scale> with <scale> one of {', '.join(SCALE_FNS)}")


def _model_name(text: str) -> str:
    model_spec(text)
    return text


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The Glow architecture flags (shared with ``python -m experiments.flowgan``)."""
    model = parser.add_argument_group("model (Glow)")
    model.add_argument("--n-levels", "--L", type=_positive_int, default=None,
                       help="Number of levels (squeeze, K steps, split); the image side is padded to a multiple of "
                            "2^levels (default: per data set).")
    model.add_argument("--depth", "--K", type=_positive_int, default=None,
                       help="Flow steps per level (default: per data set).")
    model.add_argument("--hidden-channels", type=_positive_int, default=None,
                       help="Width of each coupling network (default: per data set).")
    model.add_argument("--flow-permutation", choices=list(PERMUTATIONS), default="reverse",
                       help="Channel mixing before each coupling: 1x1 convolution (conv, lu) or a fixed permutation "
                            "(shuffle, reverse; the original's MLE and FlowGAN runs use reverse) (default: "
                            "%(default)s).")
    model.add_argument("--affine-eps", type=_non_negative_float, default=0.01,
                       help="The eps of the affine scale sigmoid(h + shift) + eps (and of the symmetric scale) "
                            "(default: %(default)s).")
    model.add_argument("--affine-scale-eps", type=float, default=2.0,
                       help="The shift inside the sigmoid scales, sigmoid(h + shift) (default: %(default)s).")
    model.add_argument("--affine-max-scale", type=_positive_float, default=5.0,
                       help="The bound M of the tanh_exp scale exp(log(M) tanh(h)) (the original's gaffine) "
                            "(default: %(default)s).")
    model.add_argument("--actnorm-eps", type=_non_negative_float, default=0.0,
                       help="Constant added to every ActNorm scale, exp(logs) + eps (default: %(default)s).")
    model.add_argument("--actnorm-max-scale", type=_non_negative_float, default=0.0,
                       help="Bound M > 1 on every ActNorm scale and its inverse, exp(log(M) tanh(logs)); 0 for none "
                            "(default: %(default)s).")
    model.add_argument("--no-learn-top", action="store_true",
                       help="Use N(0, I) at the top instead of a learned per-channel Gaussian.")
    model.add_argument("--no-coupling-actnorm", action="store_true",
                       help="Leave out the ActNorms after the first two convolutions of each coupling network.")
    model.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                       help="Precision of training and of the stability measurements (default: %(default)s).")


def add_analysis_args(parser: argparse.ArgumentParser) -> None:
    """Flags of the stability analysis (shared with ``python -m experiments.flowgan``)."""
    group = parser.add_argument_group("stability analysis")
    group.add_argument("--analysis-samples", type=_positive_int, default=None,
                       help="Images per probe set (test data, own samples, Gaussian and Rademacher noise, OOD) "
                            "(default: per data set).")
    group.add_argument("--jacobian-samples", type=_positive_int, default=None,
                       help="Images per probe set whose exact Jacobian is taken (condition number, log-det error) "
                            "(default: per data set).")
    group.add_argument("--ood", default="auto",
                       help="Out-of-distribution probe set: a data set name (resized to the data's shape), "
                            "'photos' (crops of the photos shipped with scikit-learn), 'none', or 'auto' (the first "
                            "available of a list per data set) (default: %(default)s).")
    group.add_argument("--threads", type=_positive_int, default=None,
                       help="CPU threads for torch (default: 1 on digits, where more only add overhead; torch's "
                            "choice otherwise).")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m experiments.glow``."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.glow",
        description="Train Glow by maximum likelihood (one run per --models entry), then measure over the saved "
                    "snapshots whether each model stays numerically invertible on data, on its own samples, on "
                    "noise and on an out-of-distribution set.",
        epilog="Analysis only: python -m experiments.glow --analyze RUN_FOLDER [RUN_FOLDER ...]",
    )
    add_data_args(parser, default_dataset="digits")
    add_run_args(parser, auto_out="a folder named after the configuration in --save-dir")
    parser.add_argument("--save-dir", type=Path, default=Path("runs/glow"),
                        help="Folder in which a run without --out gets its own folder (default: %(default)s).")
    parser.add_argument("--preset", choices=["default", "quick"], default="default",
                        help="Sizes: default (per data set, see --help of each flag) or quick (a seconds-long run "
                             "for the tests) (default: %(default)s).")
    parser.add_argument("--models", nargs="+", type=_model_name, default=["affine", "additive"],
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
    train.add_argument("--seed", type=_seed, default=0,
                       help="Seed of every random number generator; equal seeds give equal runs (default: "
                            "%(default)s).")
    train.add_argument("--epochs", type=_positive_int, default=None,
                       help="Passes over the training set (default: per data set).")
    train.add_argument("--batch-size", type=_positive_int, default=None,
                       help="Images per optimisation step (default: per data set).")
    train.add_argument("--optim-name", choices=["adamax", "adam"], default="adamax",
                       help="adamax (weight decay 5e-5, the original's MLE runs) or adam (betas 0.5, 0.99) "
                            "(default: %(default)s).")
    train.add_argument("--lr", type=_positive_float, default=None,
                       help="Learning rate (default: 5e-4, the original's; 1e-2 in the quick preset, which makes a "
                            "seconds-long run show the trends of a long one).")
    train.add_argument("--warmup", type=_non_negative_int, default=5,
                       help="Epochs of linear learning-rate warm-up, lr * min(1, (epoch + 1) / warmup), stepped "
                            "per epoch as the original; 0 for none (default: %(default)s).")
    train.add_argument("--n-init-batches", type=_non_negative_int, default=10,
                       help="Batches for the data-dependent ActNorm initialisation; 0 starts every ActNorm as the "
                            "identity (default: %(default)s).")
    train.add_argument("--max-grad-norm", type=_non_negative_float, default=0.0,
                       help="Clip the gradient norm to this; 0 for no clipping (default: %(default)s).")
    train.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                       help="Random translations (crop with padding of 10%% of the side) and horizontal flips "
                            "(default: on for cifar10 only).")
    train.add_argument("--eval-every", type=_positive_int, default=None,
                       help="Steps between evaluations (test bits per dimension, sample grid, non-finite samples, "
                            "round-trip distances) and kept snapshots for the analysis (default: per data set).")
    train.add_argument("--checkpoint-every", type=_non_negative_int, default=200,
                       help="Steps between the checkpoints --resume continues from, besides epoch ends (default: "
                            "%(default)s).")
    add_analysis_args(parser)
    return parser


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill in the preset's values and the run folder; raise ValueError on bad combinations."""
    preset = PRESETS["quick" if args.preset == "quick" else args.dataset]
    if getattr(args, "analyze", None) is None:  # analysis only: unset values come from the analysed runs
        apply_preset(args, preset)
    check_model_args(args)
    args.models = list(dict.fromkeys(args.models))
    if args.out is None and getattr(args, "analyze", None) is None:
        args.out = args.save_dir / run_name(args)
    return args


def check_model_args(args: argparse.Namespace) -> None:
    """Raise ValueError for model flags that contradict each other or lie out of range."""
    if args.actnorm_max_scale and args.actnorm_max_scale <= 1:
        raise ValueError("--actnorm-max-scale must be > 1 (or 0 for no bound)")
    if args.actnorm_max_scale and args.actnorm_eps:
        raise ValueError("choose either --actnorm-eps or --actnorm-max-scale, not both")
    if not 0 < args.affine_eps < 1:
        raise ValueError("--affine-eps must lie in (0, 1)")
    if args.affine_max_scale <= 1:
        raise ValueError("--affine-max-scale must be > 1")


def run_name(args: argparse.Namespace) -> str:
    """A folder name that says what the run is, e.g. ``digits-affine-additive-l2-d8-h64-s0``."""
    parts = [args.dataset, *args.models, f"l{args.n_levels}", f"d{args.depth}", f"h{args.hidden_channels}"]
    parts += [f"anmax{args.actnorm_max_scale:g}"] if args.actnorm_max_scale else []
    parts += [f"aneps{args.actnorm_eps:g}"] if args.actnorm_eps else []
    parts += ["f64"] if args.dtype == "float64" else []
    parts += ["quick"] if args.preset == "quick" else []
    parts.append(f"s{args.seed}")
    return "-".join(parts)


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and resolve; bad combinations exit with a usage error like any bad flag."""
    return parse_and_resolve(build_parser(), resolve, argv)
