"""The Glow flags shared by the studies that train Glows (``glow``, ``flowgan``): the architecture and the stability
analysis, and the model names of a comparison (``additive``, ``affine``, ``affine-<scale function>``)."""

from __future__ import annotations

import argparse

from invertible.layers import SCALE_FNS
from invertible.models import PERMUTATIONS

from ..cli import finite_float, non_negative_float, positive_float, positive_int

__all__ = ["ModelSpec", "add_analysis_args", "add_model_args", "check_model_args", "model_name", "model_spec"]


class ModelSpec(argparse.Namespace):
    """What a model name means: the coupling and, for affine couplings, the scale function."""

    coupling: str
    scale_fn: str | None


def model_spec(name: str) -> ModelSpec:
    """Parse a model name: ``additive``, ``affine`` (the original's ``sigmoid(h + 2) + eps``) or
    ``affine-<scale function>`` with a scale function of :data:`invertible.layers.SCALE_FNS`.

    Example::

        >>> model_spec("affine-tanh_exp").scale_fn
        'tanh_exp'
    """
    if name == "additive":
        return ModelSpec(coupling="additive", scale_fn=None)
    if name == "affine":
        return ModelSpec(coupling="affine", scale_fn="sigmoid_eps")
    if name.startswith("affine-") and name[len("affine-"):] in SCALE_FNS:
        return ModelSpec(coupling="affine", scale_fn=name[len("affine-"):])
    raise argparse.ArgumentTypeError(
        f"unknown model {name!r}: use additive, affine, or affine-<scale> with <scale> one of {', '.join(SCALE_FNS)}")


def model_name(text: str) -> str:
    """An argparse type: a valid model name (see :func:`model_spec`)."""
    model_spec(text)
    return text


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The Glow architecture flags."""
    model = parser.add_argument_group("model (Glow)")
    model.add_argument("--n-levels", "--L", type=positive_int, default=None,
                       help="Number of levels (squeeze, K steps, split); the image side is padded to a multiple of "
                            "2^levels (default: per data set).")
    model.add_argument("--depth", "--K", type=positive_int, default=None,
                       help="Flow steps per level (default: per data set).")
    model.add_argument("--hidden-channels", type=positive_int, default=None,
                       help="Width of each coupling network (default: per data set).")
    model.add_argument("--flow-permutation", choices=list(PERMUTATIONS), default="reverse",
                       help="Channel mixing before each coupling: 1x1 convolution (conv, lu) or a fixed permutation "
                            "(shuffle, reverse; the original's MLE and FlowGAN runs use reverse) (default: "
                            "%(default)s).")
    model.add_argument("--affine-eps", type=non_negative_float, default=0.01,
                       help="The eps of the affine scale sigmoid(h + shift) + eps (and of the symmetric scale), in "
                            "(0, 1) (default: %(default)s).")
    model.add_argument("--affine-scale-eps", type=finite_float, default=2.0,
                       help="The shift inside the sigmoid scales, sigmoid(h + shift) (default: %(default)s).")
    model.add_argument("--affine-max-scale", type=positive_float, default=5.0,
                       help="The bound M > 1 of the tanh_exp scale exp(log(M) tanh(h)) (the original's gaffine) "
                            "(default: %(default)s).")
    model.add_argument("--actnorm-eps", type=non_negative_float, default=0.0,
                       help="Constant added to every ActNorm scale, exp(logs) + eps (default: %(default)s).")
    model.add_argument("--actnorm-max-scale", type=non_negative_float, default=0.0,
                       help="Bound M > 1 on every ActNorm scale and its inverse, exp(log(M) tanh(logs)); 0 for none "
                            "(default: %(default)s).")
    model.add_argument("--no-learn-top", action="store_true",
                       help="Use N(0, I) at the top instead of a learned per-channel Gaussian.")
    model.add_argument("--no-coupling-actnorm", action="store_true",
                       help="Leave out the ActNorms after the first two convolutions of each coupling network.")
    model.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                       help="Precision of training and of the stability measurements (default: %(default)s).")


def add_analysis_args(parser: argparse.ArgumentParser) -> None:
    """The stability analysis flags."""
    group = parser.add_argument_group("stability analysis")
    group.add_argument("--analysis-samples", type=positive_int, default=None,
                       help="Images per probe set (test data, own samples, Gaussian and Rademacher noise, OOD) "
                            "(default: per data set).")
    group.add_argument("--jacobian-samples", type=positive_int, default=None,
                       help="Images per probe set whose exact Jacobian is taken (condition number, log-det error) "
                            "(default: per data set).")
    group.add_argument("--ood", default="auto",
                       help="Out-of-distribution probe set: a data set name (resized to the data's shape), "
                            "'photos' (crops of the photos shipped with scikit-learn), 'none', or 'auto' (the first "
                            "available of a list per data set) (default: %(default)s).")


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
