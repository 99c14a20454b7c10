r"""The statistical check of stochastic log-dets (``logdet_kind == "estimated"``).

A stochastic estimator (Russian roulette, Hutchinson traces) is right when it is right *on average*: its mean over
``n`` independent draws at a fixed input must contain the exact ``log|det J|``. Per sample ``i`` and direction,
with ``m_i`` the mean of the draws and ``s_i`` their standard deviation, the check asks

    ``|m_i - logdet_exact_i| <= z s_i / sqrt(n) + tol_i``

where ``z = Phi^-1(1 - alpha / (2 k))`` is the two-sided normal quantile at the family-wise false-alarm rate
``alpha`` spread over the ``k`` comparisons (samples times directions, a Bonferroni bound), and ``tol_i`` the
deterministic log-det tolerance of the error model (the rounding of one evaluation). An unbiased estimator fails
with probability at most ``alpha`` (up to the normal approximation of the mean of ``n`` draws); a biased one fails
once its bias exceeds the interval, whose half-width shrinks like ``1 / sqrt(n)``. A truncated series whose draws
do not vary (exact traces) is compared within ``tol_i`` alone.

The draws run under a forked, seeded random state, so a check is reproducible and leaves the caller's generator
as it was (estimators with a generator of their own draw from it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ALPHA", "DRAWS", "EstimateCheck", "check_estimates", "normal_quantile"]

#: Draws of the estimator per sample and direction.
DRAWS = 200
#: Family-wise false-alarm rate of the statistical check (over all samples and both directions).
ALPHA = 1e-6


def normal_quantile(p: float) -> float:
    """``Phi^-1(p)`` of the standard normal distribution.

    Example:
        >>> round(normal_quantile(0.975), 4)
        1.96
    """
    return float(torch.special.ndtri(torch.tensor(p, dtype=torch.float64)))


@dataclass
class EstimateCheck:
    """One direction's statistical comparison (per-sample float64 tensors of shape ``(B,)``)."""

    label: str
    error: Tensor  # |mean of the draws - exact|
    half_width: Tensor  # z * standard error + deterministic tolerance
    standard_error: Tensor
    draws: int
    z: float

    def worst(self) -> int:
        ratio = torch.nan_to_num(self.error / self.half_width, nan=math.inf)
        return int(torch.argmax(ratio))

    @property
    def ok(self) -> bool:
        return bool((self.error <= self.half_width).all())

    def describe(self) -> str:
        i = self.worst()
        return (f"the mean of {self.draws} draws of the {self.label} estimate is {float(self.error[i]):.3g} off the "
                f"exact value at sample {i}, outside its confidence interval of +-{float(self.half_width[i]):.3g} "
                f"(z = {self.z:.2f} standard errors of {float(self.standard_error[i]):.3g}, plus rounding): the "
                "estimator is biased")


def check_estimates(draw: Callable[[], Tensor], exact: Tensor, tolerance: Tensor, *, label: str, comparisons: int,
                    draws: int = DRAWS, alpha: float = ALPHA, seed: int = 0) -> EstimateCheck:
    """Compare the mean of ``draws`` calls of ``draw()`` (each a ``(B,)`` log-det estimate) with ``exact``.

    Args:
        comparisons: how many such comparisons share the false-alarm rate ``alpha`` (samples times directions).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(1)
        >>> exact = torch.zeros(3, dtype=torch.float64)
        >>> unbiased = lambda: torch.randn(3, generator=g, dtype=torch.float64)
        >>> check_estimates(unbiased, exact, torch.zeros(3), label="log-det", comparisons=3).ok
        True
        >>> biased = lambda: 0.5 + torch.randn(3, generator=g, dtype=torch.float64)
        >>> check_estimates(biased, exact, torch.zeros(3), label="log-det", comparisons=3).ok
        False
    """
    if draws < 2:
        raise ValueError(f"check_estimates: need at least 2 draws, got {draws}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        samples = torch.stack([draw().detach().double() for _ in range(draws)])
    mean = samples.mean(0)
    se = samples.std(0) / math.sqrt(draws)
    z = normal_quantile(1 - alpha / (2 * max(comparisons, 1)))
    error = (mean - exact.double()).abs()
    return EstimateCheck(label, error, z * se + tolerance.double(), se, draws, z)
