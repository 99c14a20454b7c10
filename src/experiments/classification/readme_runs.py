"""The classification commands of the original README, translated to this study's kebab-case flags.

The README's six commands (unregularized, NF-regularized, and FD-regularized with memory saving, each with 1x1
convolutions and with shuffles) plus the additive baselines (the original's default coupling). ``--save-dir`` is
left out: give ``--out`` or ``--save-dir`` when running them.

Example::

    >>> " ".join(README_RUNS["affine_conv_nf"])
    '--coupling affine --permutation conv --zero-init --use-prior --use-actnorm --no-inverse-svd --nf-coeff 1e-5'
"""

from __future__ import annotations

__all__ = ["BASELINES", "COMMON", "README_RUNS", "ALL_RUNS"]

#: Flags every README command shares.
COMMON = ["--zero-init", "--use-prior", "--use-actnorm", "--no-inverse-svd"]


def _affine(permutation: str, *extra: str) -> list[str]:
    return ["--coupling", "affine", "--permutation", permutation, *COMMON, *extra]


_FD = ("--fd-coeff", "1e-4", "--fd-inv-coeff", "1e-4", "--regularize-every", "10", "--mem-saving")

#: The README's six commands, in its order (the README's "NF coefficient 1e-4" heading for shuffle runs 1e-5).
README_RUNS: dict[str, list[str]] = {
    "affine_conv": _affine("conv"),
    "affine_shuffle": _affine("shuffle"),
    "affine_conv_nf": _affine("conv", "--nf-coeff", "1e-5"),
    "affine_shuffle_nf": _affine("shuffle", "--nf-coeff", "1e-5"),
    "affine_conv_fd": _affine("conv", *_FD),
    "affine_shuffle_fd": _affine("shuffle", *_FD),
}

#: Additive baselines with the same settings (the original's default coupling).
BASELINES: dict[str, list[str]] = {
    "additive_conv": ["--coupling", "additive", "--permutation", "conv", *COMMON],
    "additive_shuffle": ["--coupling", "additive", "--permutation", "shuffle", *COMMON],
}

ALL_RUNS: dict[str, list[str]] = {**README_RUNS, **BASELINES}
