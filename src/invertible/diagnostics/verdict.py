"""The one definition of *numerically non-invertible*, used by every study, results page, report and the README.

A flow ``f`` is **numerically non-invertible on a set of inputs** ``X`` when, for at least one ``x`` in ``X``, the
reconstruction ``x_hat = f^-1(f(x))``, computed in the working precision (the dtype the model and the inputs are
in), either

- holds a NaN or an Inf entry, or
- is off by more than ``rtol`` relative to the input: ``||x - x_hat||_2 > rtol * ||x||_2``
  (``rtol`` = :data:`NONINVERTIBLE_RTOL` = 1e-2 unless stated: a reconstruction off by more than 1 % of the input
  no longer identifies it, whereas a healthy float32 flow reconstructs to about ``1e-6``).

Otherwise ``f`` is numerically invertible on ``X``. Every input of ``X`` is reconstructed: the verdict is never
taken from a few chosen inputs. The condition number ``kappa = sigma_max / sigma_min`` of the Jacobian is a
*precursor*: a large ``kappa`` says that round-off may be amplified by up to ``kappa``, not that it was. It is
reported beside the verdict, at the worst-reconstructed inputs and at fixed inputs, and never decides it.

Example:
    >>> import torch, invertible
    >>> from invertible.diagnostics import invertibility_verdict
    >>> layer = invertible.ActNorm(2, data_init=False)
    >>> verdict = invertibility_verdict(layer, torch.randn(100, 2), kappa_at=0)
    >>> verdict.invertible, verdict.nonfinite, verdict.above_rtol
    (True, 0, 0)
    >>> with torch.no_grad():
    ...     _ = layer.log_scale.fill_(-110.0)  # the scale exp(-110) underflows to 0 in float32
    >>> invertibility_verdict(layer, torch.randn(100, 2), kappa_at=0).reason
    'non-finite reconstruction of 100 of 100 inputs'
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..base import InvertibleModule, allow_nonfinite
from ._common import eval_mode
from .estimates import extreme_singular_values
from .jacobian import jacobian_stats

__all__ = [
    "NONINVERTIBLE_RTOL",
    "ConditionAt",
    "InvertibilityVerdict",
    "invertibility_verdict",
    "judge_reconstructions",
]

#: Relative reconstruction error ``||x - f^-1(f(x))|| / ||x||`` above which a flow is numerically non-invertible.
NONINVERTIBLE_RTOL = 1e-2


@dataclass
class ConditionAt:
    """Local conditioning at chosen inputs, measured on a float64 copy of the flow (the map's own conditioning,
    free of the working precision's round-off); every tensor has one entry per chosen input.

    Attributes:
        indices: positions of the inputs in the evaluated set.
        relative_error: their reconstruction errors in the working precision (Inf where non-finite).
        lipschitz_forward: ``sigma_max(J_f(x))``, the local Lipschitz constant of ``f``.
        lipschitz_inverse: ``sigma_max(J_{f^-1}(f(x)))``, the local Lipschitz constant of ``f^-1``.
        kappa_forward: condition number of ``J_f(x)``.
        kappa_inverse: condition number of the computed inverse's Jacobian ``J_{f^-1}(f(x))`` (analytically equal
            to ``kappa_forward``; a difference shows the float64 inverse itself losing accuracy). With the
            matrix-free method both are ``lipschitz_forward * lipschitz_inverse``.
        method: ``"exact"`` (SVD of exact Jacobians) or ``"lanczos"`` (matrix-free estimates).
    """

    indices: list[int]
    relative_error: list[float]
    lipschitz_forward: list[float]
    lipschitz_inverse: list[float]
    kappa_forward: list[float]
    kappa_inverse: list[float]
    method: str

    def worst_kappa(self) -> float:
        """The largest forward condition number among the inputs (NaN counts as +Inf); NaN when there are none."""
        values = [math.inf if math.isnan(v) else v for v in self.kappa_forward]
        return max(values) if values else math.nan


@dataclass
class InvertibilityVerdict:
    """Whether a flow is numerically invertible on a set of inputs, why, and the precursors beside it.

    Attributes:
        invertible: ``False`` means numerically non-invertible (see the module docstring for the definition).
        reason: one sentence saying which criterion decided (or that none fired).
        n: number of inputs evaluated (all of the set).
        nonfinite: inputs whose reconstruction holds a NaN or an Inf.
        above_rtol: inputs whose reconstruction is finite but off by more than ``rtol`` relative.
        worst_relative: the largest relative error (Inf when a reconstruction is non-finite).
        worst_index: the input it belongs to.
        rtol: the threshold used.
        dtype: the working precision.
        at_worst: conditioning at the worst-reconstructed inputs (``None`` if not measured).
        at_fixed: conditioning at fixed inputs (``None`` if not measured).
    """

    invertible: bool
    reason: str
    n: int
    nonfinite: int
    above_rtol: int
    worst_relative: float
    worst_index: int
    rtol: float
    dtype: str
    at_worst: ConditionAt | None = None
    at_fixed: ConditionAt | None = None
    relative_errors: Tensor | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """``"invertible"`` or ``"non-invertible"``: the word every table uses."""
        return "invertible" if self.invertible else "non-invertible"

    def to_dict(self) -> dict[str, Any]:
        """Every number of the verdict as plain JSON data (the per-input errors are left out)."""
        out: dict[str, Any] = {k: getattr(self, k) for k in
                               ("invertible", "reason", "n", "nonfinite", "above_rtol", "worst_relative",
                                "worst_index", "rtol", "dtype")}
        for key in ("at_worst", "at_fixed"):
            value = getattr(self, key)
            out[key] = None if value is None else dict(value.__dict__)
        return out

    def __str__(self) -> str:
        parts = [f"{self.label} on {self.n} inputs ({self.dtype}, rtol {self.rtol:g}): {self.reason}"]
        if self.at_worst is not None and self.at_worst.indices:
            parts.append(f"kappa at the worst-reconstructed input {self.at_worst.kappa_forward[0]:.3g}")
        if self.at_fixed is not None and self.at_fixed.indices:
            parts.append(f"largest kappa at {len(self.at_fixed.indices)} fixed inputs "
                         f"{self.at_fixed.worst_kappa():.3g}")
        return "; ".join(parts)


def judge_reconstructions(relative: Tensor, nonfinite: Tensor, *, rtol: float = NONINVERTIBLE_RTOL,
                          dtype: torch.dtype | str = "unknown") -> InvertibilityVerdict:
    """The verdict from per-input errors computed elsewhere (e.g. accumulated over a data loader in training).

    Args:
        relative: relative reconstruction error of every input of the set, shape ``(n,)`` (NaN/Inf allowed).
        nonfinite: per input, whether (or how many entries) its reconstruction is not finite, shape ``(n,)``.
        rtol: the threshold on the relative error.
        dtype: the working precision, for the record.

    Example:
        >>> import torch
        >>> judge_reconstructions(torch.tensor([1e-7, 0.3]), torch.tensor([0, 0])).reason
        '1 of 2 reconstructions off by more than 0.01 relative (worst 0.3 at input 1)'
    """
    if not rtol > 0 or not math.isfinite(rtol):
        raise ValueError(f"judge_reconstructions: rtol must be a positive finite number, got {rtol}")
    relative = relative.detach().reshape(-1).double().cpu()
    bad = nonfinite.detach().reshape(-1).cpu() > 0
    if relative.shape != bad.shape:
        raise ValueError(f"judge_reconstructions: {relative.numel()} relative errors but {bad.numel()} "
                         "non-finite flags; give one of each per input")
    n = relative.numel()
    if n == 0:
        raise ValueError("judge_reconstructions: no inputs; a verdict needs at least one reconstruction")
    bad = bad | ~torch.isfinite(relative)
    relative = torch.where(bad, torch.full_like(relative, math.inf), relative)
    worst_index = int(torch.argmax(relative))
    worst = float(relative[worst_index])
    n_bad = int(bad.sum())
    above = int((relative[~bad] > rtol).sum())
    if n_bad:
        reason = f"non-finite reconstruction of {n_bad} of {n} inputs"
        if above:
            reason += f"; {above} more off by more than {rtol:g} relative"
    elif above:
        reason = (f"{above} of {n} reconstructions off by more than {rtol:g} relative "
                  f"(worst {worst:.3g} at input {worst_index})")
    else:
        reason = f"every reconstruction within {rtol:g} relative (worst {worst:.3g})"
    name = str(dtype).replace("torch.", "")
    return InvertibilityVerdict(n_bad == 0 and above == 0, reason, n, n_bad, above, worst, worst_index, rtol, name,
                                relative_errors=relative)


def _batches(inputs: Tensor | Iterable[Any], batch_size: int) -> Iterable[Tensor]:
    if isinstance(inputs, Tensor):
        for start in range(0, inputs.shape[0], batch_size):
            yield inputs[start : start + batch_size]
        return
    for item in inputs:
        yield item[0] if isinstance(item, (tuple, list)) else item


def _relative_errors(module: InvertibleModule, inputs: Tensor | Iterable[Any], batch_size: int
                     ) -> tuple[Tensor, Tensor, list[Tensor], torch.dtype]:
    errors, flags, kept = [], [], []
    dtype = None
    with eval_mode(module), torch.no_grad(), allow_nonfinite():
        for x in _batches(inputs, batch_size):
            if not isinstance(x, Tensor) or x.dim() < 1:
                raise TypeError("invertibility_verdict: inputs must be a tensor (batch first) or an iterable of "
                                f"tensors or (tensor, label) pairs; got an item of type {type(x).__name__}")
            if x.shape[0] == 0:
                continue
            dtype = x.dtype
            x_hat = module.inverse(module(x)[0])[0]
            flat, flat_hat = x.reshape(x.shape[0], -1), x_hat.reshape(x.shape[0], -1)
            nonfinite = (~torch.isfinite(flat_hat)).sum(dim=1)
            l2 = (flat_hat - flat).double().norm(dim=1)
            errors.append(l2 / flat.double().norm(dim=1).clamp_min(torch.finfo(torch.float64).tiny))
            flags.append(nonfinite)
            kept.append(x.detach())
    if dtype is None:
        raise ValueError("invertibility_verdict: the input set is empty")
    return torch.cat(errors), torch.cat(flags), kept, dtype


def _take(kept: list[Tensor], indices: Sequence[int]) -> Tensor:
    sizes = [t.shape[0] for t in kept]
    rows = []
    for index in indices:
        for part, size in zip(kept, sizes):
            if index < size:
                rows.append(part[index : index + 1])
                break
            index -= size
    return torch.cat(rows)


def _condition_at(module: InvertibleModule, x: Tensor, indices: list[int], relative: Tensor, method: str,
                  max_exact_dims: int) -> ConditionAt:
    flow = copy.deepcopy(module).double()
    x64 = x.double()
    if method == "auto":
        method = "exact" if x64[0].numel() <= max_exact_dims else "lanczos"
    if method == "exact":
        stats = jacobian_stats(flow, x64)
        assert stats.inverse is not None
        lip_f, lip_i = stats.forward[:, 0], stats.inverse[:, 0]
        kappa_f, kappa_i = stats.condition_number, stats.condition_number_inverse
        assert kappa_i is not None
    elif method == "lanczos":
        est = extreme_singular_values(flow, x64, method="lanczos", generator=torch.Generator().manual_seed(0))
        lip_f, lip_i = est.sigma_max, 1.0 / est.sigma_min
        kappa_f = kappa_i = est.condition_number
    else:
        raise ValueError(f"invertibility_verdict: kappa_method must be 'auto', 'exact' or 'lanczos', got {method!r}")
    as_list = lambda t: [float(v) for v in t.reshape(-1)]  # noqa: E731
    return ConditionAt(list(indices), [float(relative[i]) for i in indices], as_list(lip_f), as_list(lip_i),
                       as_list(kappa_f), as_list(kappa_i), method)


def invertibility_verdict(
    module: InvertibleModule,
    inputs: Tensor | Iterable[Any],
    *,
    rtol: float = NONINVERTIBLE_RTOL,
    batch_size: int = 256,
    kappa_at: int = 3,
    fixed: Sequence[int] | None = None,
    kappa_method: str = "auto",
    max_exact_dims: int = 1024,
) -> InvertibilityVerdict:
    """Reconstruct every input, decide whether ``module`` is numerically non-invertible on them, and measure
    the condition number at the worst-reconstructed and at fixed inputs.

    Args:
        module: a flow following the layer contract, in its working precision (its dtype decides the verdict's).
        inputs: the whole set: a tensor (batch first), or an iterable of tensors or ``(tensor, label)`` pairs
            (a data loader).
        rtol: the threshold on the relative reconstruction error.
        batch_size: batch size when ``inputs`` is a tensor.
        kappa_at: how many worst-reconstructed inputs (and, unless ``fixed`` is given, how many of the first
            inputs) get their condition number measured; 0 skips the Jacobians.
        fixed: positions of fixed inputs to measure (default: the first ``kappa_at``).
        kappa_method: ``"exact"``, ``"lanczos"`` (matrix-free) or ``"auto"`` (exact up to ``max_exact_dims``
            entries per input).

    The module runs in eval mode (restored afterwards), without gradients, with non-finite values counted
    rather than refused.
    """
    if kappa_at < 0:
        raise ValueError(f"invertibility_verdict: kappa_at must be >= 0, got {kappa_at}")
    if batch_size < 1:
        raise ValueError(f"invertibility_verdict: batch_size must be >= 1, got {batch_size}")
    relative, nonfinite, kept, dtype = _relative_errors(module, inputs, batch_size)
    verdict = judge_reconstructions(relative, nonfinite, rtol=rtol, dtype=dtype)
    n = verdict.n
    if kappa_at == 0:
        return verdict
    order = torch.argsort(verdict.relative_errors, descending=True, stable=True)  # type: ignore[arg-type]
    worst = [int(i) for i in order[: min(kappa_at, n)]]
    chosen = list(fixed) if fixed is not None else list(range(min(kappa_at, n)))
    out_of_range = [i for i in chosen if not 0 <= i < n]
    if out_of_range:
        raise ValueError(f"invertibility_verdict: fixed inputs {out_of_range} are outside the set of {n} inputs")
    errors = verdict.relative_errors
    assert errors is not None
    with eval_mode(module):
        verdict.at_worst = _condition_at(module, _take(kept, worst), worst, errors, kappa_method, max_exact_dims)
        if chosen:
            verdict.at_fixed = _condition_at(module, _take(kept, chosen), chosen, errors, kappa_method,
                                             max_exact_dims)
    return verdict
