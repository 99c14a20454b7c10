"""Reconstruction error ``x - f^-1(f(x))`` per sample, with NaN/Inf counts, and repeated round trips (PAD).

Non-finite values are counted, not refused: the inverse runs inside :func:`invertible.allow_nonfinite`, so a
reconstruction that overflows shows up as Inf/NaN counts instead of an exception.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..base import InvertibleModule, allow_nonfinite
from ._common import eval_mode, flat_norm

__all__ = ["ReconstructionStats", "RoundTrips", "reconstruction_error", "repeated_round_trips"]


def _count(mask: Tensor) -> Tensor:
    return mask.reshape(mask.shape[0], -1).sum(dim=1)


@dataclass
class ReconstructionStats:
    """Per-sample reconstruction error of ``x_hat = f^-1(f(x))``; every field has shape ``(batch,)``.

    Attributes:
        l2: ``||x - x_hat||_2`` (Inf or NaN where the reconstruction is not finite).
        relative: ``l2 / ||x||_2``.
        max_abs: ``max_i |x_i - x_hat_i|``.
        nan, inf: number of NaN and of +-Inf entries of ``x_hat``.
        forward_nonfinite: number of non-finite entries of ``f(x)`` (usually 0: inverses explode, not forwards).
        entries: number of entries per sample (to turn counts into fractions).
    """

    l2: Tensor
    relative: Tensor
    max_abs: Tensor
    nan: Tensor
    inf: Tensor
    forward_nonfinite: Tensor
    entries: int

    @property
    def nonfinite(self) -> Tensor:
        """Non-finite entries of the reconstruction per sample."""
        return self.nan + self.inf

    def summary(self) -> dict[str, float]:
        """Batch statistics: mean/std/min/max of the finite L2 errors, worst relative and entry errors, and the
        fractions of samples and of entries whose reconstruction is not finite (the paper's NaN/Inf percentages).
        """
        finite = self.l2[torch.isfinite(self.l2)].double()
        stat = (lambda f: float(f(finite))) if finite.numel() else (lambda f: math.nan)
        bad = self.nonfinite
        return {
            "l2_mean": stat(torch.mean),
            "l2_std": stat(torch.std) if finite.numel() > 1 else 0.0 if finite.numel() else math.nan,
            "l2_min": stat(torch.min),
            "l2_max": stat(torch.max),
            "relative_max": float(self.relative.double().nan_to_num(nan=math.inf, posinf=math.inf).max()),
            "max_abs": float(self.max_abs.double().nan_to_num(nan=math.inf, posinf=math.inf).max()),
            "nan": float(self.nan.sum()),
            "inf": float(self.inf.sum()),
            "nonfinite_samples": float((bad > 0).double().mean()),
            "nonfinite_entries": float(bad.double().sum() / (bad.numel() * self.entries)),
        }


def _stats(x: Tensor, x_hat: Tensor, y: Tensor) -> ReconstructionStats:
    diff = (x_hat - x).reshape(x.shape[0], -1)
    l2 = diff.norm(dim=1)
    max_abs = diff.abs().amax(dim=1)
    # amax ignores nothing: a NaN entry makes it NaN, which is what a max error of a NaN reconstruction is
    return ReconstructionStats(
        l2=l2,
        relative=l2 / flat_norm(x).clamp_min(torch.finfo(x.dtype).tiny),
        max_abs=max_abs,
        nan=_count(torch.isnan(x_hat)),
        inf=_count(torch.isinf(x_hat)),
        forward_nonfinite=_count(~torch.isfinite(y)),
        entries=x[0].numel(),
    )


def reconstruction_error(module: InvertibleModule, x: Tensor, *, eval: bool = True) -> ReconstructionStats:
    """Reconstruction error of ``module`` at each sample of ``x`` (no gradients; eval mode unless ``eval=False``).

    Example:
        >>> import torch, invertible
        >>> from invertible.diagnostics import reconstruction_error
        >>> layer = invertible.ActNorm(2, data_init=False)
        >>> with torch.no_grad():
        ...     _ = layer.log_scale.fill_(-110.0)  # the scale exp(-110) underflows to 0 in float32
        >>> stats = reconstruction_error(layer, torch.ones(3, 2))
        >>> stats.nan.tolist(), stats.summary()["nonfinite_samples"]
        ([2, 2, 2], 1.0)
    """
    with eval_mode(module, eval), torch.no_grad(), allow_nonfinite():
        y, _ = module(x)
        x_hat, _ = module.inverse(y)
    return _stats(x, x_hat, y)


@dataclass
class RoundTrips:
    """Distances after ``k = 1 .. passes`` round trips ``x_k = f^-1(f(x_{k-1}))``, shape ``(passes, batch)``, float64.

    Attributes:
        l2: ``||x_k - x_0||_2``.
        mse: mean squared error ``mean_i (x_k - x_0)_i^2`` (the paper's ``l2_0``/``l2_9`` are ``mse[0]``/``mse[8]``
            averaged over the batch).
        pad: mean absolute distance in pixel units, ``mean_i |p(x_k)_i - p(x_0)_i|`` with ``p = to_pixels``
            (the paper's PAD after 9 passes is ``pad[8].mean()`` with ``p(x) = (x + 0.5) * 255``).
        nonfinite: number of non-finite entries of ``x_k``.
    """

    l2: Tensor
    mse: Tensor
    pad: Tensor
    nonfinite: Tensor


def repeated_round_trips(
    module: InvertibleModule,
    x: Tensor,
    passes: int = 9,
    *,
    to_pixels: Callable[[Tensor], Tensor] | None = None,
    eval: bool = True,
) -> RoundTrips:
    """Apply forward then inverse ``passes`` times, each time to the previous reconstruction (the paper's PAD).

    Args:
        module: the flow.
        x: inputs ``x_0``.
        passes: number of round trips (9 in the paper).
        to_pixels: maps model space to pixel units for the PAD, e.g. ``lambda x: (x + 0.5) * 255`` for Glow's
            ``[-0.5, 0.5)`` range; the identity by default.
        eval: run the module in eval mode.

    Example:
        >>> import torch, invertible
        >>> from invertible.diagnostics import repeated_round_trips
        >>> flow = invertible.Sequential(invertible.ActNorm(4), invertible.Permutation(4)).double()
        >>> trips = repeated_round_trips(flow, torch.randn(5, 4, dtype=torch.float64), passes=9)
        >>> trips.pad.shape, bool(trips.pad.max() < 1e-12)
        (torch.Size([9, 5]), True)
    """
    if passes < 1:
        raise ValueError(f"repeated_round_trips: passes must be >= 1, got {passes}")
    to_pixels = to_pixels if to_pixels is not None else (lambda t: t)
    batch = x.shape[0]
    rows: dict[str, list[Tensor]] = {"l2": [], "mse": [], "pad": [], "nonfinite": []}
    current = x
    # distances in float64: a float32 pixel map (x + 0.5) * 255 would round away the differences it measures
    x64 = x.detach().double()
    pixels0 = to_pixels(x64).reshape(batch, -1)
    with eval_mode(module, eval), torch.no_grad(), allow_nonfinite():
        for _ in range(passes):
            current = module.inverse(module(current)[0])[0]
            diff = (current.double() - x64).reshape(batch, -1)
            rows["l2"].append(diff.norm(dim=1))
            rows["mse"].append(diff.pow(2).mean(dim=1))
            rows["pad"].append((to_pixels(current.double()).reshape(batch, -1) - pixels0).abs().mean(dim=1))
            rows["nonfinite"].append(_count(~torch.isfinite(current)))
    return RoundTrips(**{k: torch.stack(v) for k, v in rows.items()})
