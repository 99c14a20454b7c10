"""The shared part of the adapters: a foreign bijection seen through our layer contract.

:class:`Adapter` turns whatever a library calls its forward and inverse into ``y, logdet = layer(x)`` and
``x, logdet_inv = layer.inverse(y)`` (see :mod:`invertible.base`). Conditional maps take ``context`` in both
directions and pass it through untouched. An adapter converts nothing: the dtype, device and shape of what the
foreign code returns reach the contract checks as they are, so a library that computes a float64 call's log-det
in float32 is caught (the one normalisation is a scalar or per-entry log-det, summed or broadcast to one value
per sample, which several libraries document as their convention).

What the contract suite cannot infer from foreign code is declared: ``inverse_kind="iterative"`` with
``inverse_atol`` (the error, per entry, that the inverse's stopping rule allows in ``x``), ``logdet_kind=
"estimated"`` for a stochastic or truncated log-det, and ``bounds`` for known Lipschitz bounds.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..base import Bounds, InvertibleModule, _nested

__all__ = ["Adapter", "Callables", "per_sample_logdet"]

INVERSE_KINDS = ("analytic", "iterative")
LOGDET_KINDS = ("exact", "estimated")


def per_sample_logdet(logdet: Tensor | float, x: Tensor) -> Tensor:
    """One log-det per sample: a number, a 0-d or a one-element tensor (FrEIA's blocks whose log-det does not
    depend on the input) is broadcast, per-entry log-dets are summed per sample.

    A tensor keeps its own dtype and device (the contract checks compare them with the input's).

    Example:
        >>> x = torch.zeros(2, 3, dtype=torch.float64)
        >>> per_sample_logdet(0.0, x), per_sample_logdet(torch.ones(2, 3), x)
        (tensor([0., 0.], dtype=torch.float64), tensor([3., 3.]))
    """
    if not isinstance(logdet, Tensor):
        return torch.full((x.shape[0],), float(logdet), dtype=x.dtype, device=x.device)
    if logdet.dim() == 0 or (logdet.shape == (1,) and x.shape[0] != 1):
        return logdet.reshape(()).expand(x.shape[0]).contiguous()
    if logdet.dim() > 1 and logdet.shape[0] == x.shape[0]:
        return logdet.reshape(x.shape[0], -1).sum(1)
    return logdet


class Adapter(InvertibleModule):
    """Base of the adapters: subclasses implement ``_run(x, context, reverse) -> (output, logdet)``.

    Args:
        inverse_kind: ``"analytic"`` or ``"iterative"`` (then ``inverse_atol`` is the per-entry error in ``x``
            that the inverse's stopping rule allows; the contract checks allow it in every property).
        logdet_kind: ``"exact"`` or ``"estimated"`` (checked statistically, as a mean over draws).
        bounds: global Lipschitz bounds ``(forward, inverse)`` if known (``None`` where not).
        logdet_rounding: unit round-offs the analytic log-det spends per entry (1 for a sum of simple terms; a
            rational-quadratic spline's formula takes several), as our own layers declare it.
        ranks: the input ranks accepted (``(batch, D)``, ``(batch, C, L)``, ``(batch, C, H, W)``, ...).
    """

    def __init__(self, *, inverse_kind: str = "analytic", logdet_kind: str = "exact", inverse_atol: float = 0.0,
                 bounds: Bounds | tuple[float | None, float | None] = (None, None),
                 ranks: tuple[int, ...] = (2, 3, 4, 5), logdet_rounding: float = 1.0) -> None:
        super().__init__(channels=None, ranks=ranks)
        if inverse_kind not in INVERSE_KINDS or logdet_kind not in LOGDET_KINDS:
            raise ValueError(f"{type(self).__name__}: inverse_kind must be one of {INVERSE_KINDS} and logdet_kind "
                             f"one of {LOGDET_KINDS}, got {inverse_kind!r} and {logdet_kind!r}")
        if not inverse_atol >= 0 or (inverse_atol > 0 and inverse_kind != "iterative"):
            raise ValueError(f"{type(self).__name__}: inverse_atol={inverse_atol!r} must be >= 0, and is only "
                             "meaningful with inverse_kind='iterative'")
        self.inverse_kind = inverse_kind  # type: ignore[misc]  (per instance: the class says "analytic")
        self.logdet_kind = logdet_kind  # type: ignore[misc]
        self._atol = float(inverse_atol)
        if not logdet_rounding >= 1:
            raise ValueError(f"{type(self).__name__}: logdet_rounding={logdet_rounding!r} must be >= 1 (unit "
                             "round-offs per entry of the log-det)")
        self.logdet_rounding = float(logdet_rounding)  # type: ignore[misc]  (per instance)
        self.bounds = Bounds(*bounds)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        """``(f(x | context), log|det df/dx|)`` per sample."""
        with _nested() as outer:
            self._validate(x, "forward", outer)
            return self._run(x, context, False)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        """``(f^-1(y | context), log|det df^-1/dy|)`` per sample."""
        with _nested() as outer:
            self._validate(y, "inverse", outer)
            return self._run(y, context, True)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._run(x, None, False)

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self._run(y, None, True)

    def _run(self, x: Tensor, context: Tensor | None, reverse: bool) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must implement _run(x, context, reverse)")

    def lipschitz_bounds(self) -> Bounds:
        return self.bounds

    def inverse_atol(self) -> float:
        return self._atol


class Callables(Adapter):
    """A bijection given as two callables, ``forward(x[, context]) -> (y, logdet)`` and
    ``inverse(y[, context]) -> (x, logdet_inv)``.

    Modules the callables belong to (bound methods of an ``nn.Module``, or ``modules=``) are registered as
    submodules, so ``.double()``, ``state_dict()`` and the parameter checks see their tensors.

    Example:
        >>> import torch
        >>> from invertible.testing import check_invertible
        >>> scale = torch.tensor([2.0, 0.5], dtype=torch.float64)
        >>> layer = Callables(lambda x: (x * scale, scale.log().sum().expand(len(x))),
        ...                   lambda y: (y / scale, -scale.log().sum().expand(len(y))))
        >>> check_invertible(layer, torch.randn(3, 2, dtype=torch.float64)).ok
        True
    """

    def __init__(self, forward: Callable[..., Any], inverse: Callable[..., Any], *,
                 modules: tuple[nn.Module, ...] = (), **kind: Any) -> None:
        super().__init__(**kind)
        self.fns = (forward, inverse)
        owners = [getattr(f, "__self__", None) for f in (forward, inverse)]
        self.owners = nn.ModuleList(dict.fromkeys(m for m in (*owners, *modules) if isinstance(m, nn.Module)))

    def _run(self, x: Tensor, context: Tensor | None, reverse: bool) -> tuple[Tensor, Tensor]:
        fn = self.fns[reverse]
        y, logdet = fn(x) if context is None else fn(x, context)
        return y, per_sample_logdet(logdet, x)


def accepts_context(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` takes a ``context`` keyword (peers' layers differ: some conditional, some not)."""
    try:
        return "context" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
