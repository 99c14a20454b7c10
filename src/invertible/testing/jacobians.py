"""Jacobians for the contract checks, for any module: ``torch.func`` first, plain autograd when it cannot trace.

``torch.func.jacrev`` refuses code that is fine under ordinary autograd, and foreign layers are full of it:
in-place writes into a captured tensor inside ``forward`` (``out[:, mask] = ...``, ``log_det += ...``),
``x.requires_grad = True`` or ``requires_grad_()`` inside a transform (FrEIA's i-ResNet), ``.data`` updates of a
data-dependent initialisation. :func:`jacobians` then falls back on ``torch.autograd.functional.jacobian`` (one
reverse pass per output entry) and says so.

Neither sees through ``torch.no_grad()`` regions or ``detach()`` inside the map (an iterative solver run without
a graph, then differentiated through its last step only): the result is a Jacobian, but not the map's.
:func:`derivative_mismatch` compares ``J v`` with central differences of the map along a random direction, so a
derivative that is not the map's is noticed instead of feeding wrong singular values and log-dets to the checks.

Example:
    >>> import torch
    >>> a = torch.tensor([[2.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
    >>> x = torch.ones(3, 2, dtype=torch.float64)
    >>> jac, how = jacobians(lambda v, c: v @ a.T, x, None)
    >>> how, bool(torch.equal(jac[0], a))
    ('torch.func', True)
    >>> def frozen(v, c):  # the second output does not carry its derivative
    ...     with torch.no_grad():
    ...         w = v[:, 1:] * 3
    ...     return torch.cat([v[:, :1] * 2, w], 1)
    >>> jac, how = jacobians(frozen, x, None)
    >>> float(derivative_mismatch(frozen, x, None, jac).max()) > 0.1
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .grad_mode import no_grad_unless_needed

__all__ = ["JacobianError", "MISMATCH_RTOL", "derivative_mismatch", "jacobians"]

#: A Jacobian whose ``J v`` differs from the map's central differences by more than this (relative) at every
#: step size tried is not the map's derivative. Wrong derivatives from a ``no_grad`` region are off by O(1);
#: central differences of a smooth float64 map agree to ~1e-8, of a map that rounds to float32 inside to ~1e-4.
MISMATCH_RTOL = 1e-2
#: Step sizes of the central differences, relative to ``1 + max|x_i|`` (the smaller one avoids a kink nearby,
#: the larger one rounding inside float32 internals; the smaller mismatch counts).
FD_STEPS = (1e-3, 1e-5)

Map = Callable[[Tensor, "Tensor | None"], Tensor]


class JacobianError(RuntimeError):
    """Neither ``torch.func`` nor ``torch.autograd`` could differentiate the map."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def jacobians(fn: Map, x: Tensor, context: Tensor | None) -> tuple[Tensor, str]:
    """The ``(B, D_out, D)`` Jacobians of the per-sample map ``fn(x, context)`` at each sample, and how they were
    computed: ``"torch.func"``, or ``"torch.autograd (...)"`` naming why ``torch.func`` could not trace the map.

    Raises:
        JacobianError: when plain autograd fails as well (both errors in the message).
        torch.linalg.LinAlgError: from inside the map (a singular matrix), unchanged.
    """
    shape, batch = x.shape[1:], x.shape[0]

    def single(i: int) -> Callable[[Tensor], Tensor]:
        ctx = None if context is None else context[i : i + 1]
        return lambda v: fn(v.reshape(1, *shape), ctx).reshape(-1)

    try:
        return torch.stack([torch.func.jacrev(single(i))(x[i].reshape(-1)) for i in range(batch)]), "torch.func"
    except torch.linalg.LinAlgError:
        raise
    except Exception as err:  # torch.func raises RuntimeError, NotImplementedError, ValueError, ... on what it refuses
        refused = err
    try:
        with torch.enable_grad():
            jac = torch.stack([torch.autograd.functional.jacobian(single(i), x[i].reshape(-1).detach().clone())
                               for i in range(batch)])
    except torch.linalg.LinAlgError:
        raise
    except Exception as err:
        raise JacobianError(f"torch.func could not trace the map ({_first_line(refused)}) and torch.autograd could "
                            f"not differentiate it ({_first_line(err)})") from err
    return jac.detach(), f"torch.autograd (torch.func could not trace the map: {_first_line(refused)})"


def _rows(context: Tensor | None, i: int) -> Tensor | None:
    return None if context is None else context[i : i + 1]


def _difference(fn: Map, plus: Tensor, minus: Tensor, context: Tensor | None, size: int) -> Tensor:
    """``fn(plus) - fn(minus)`` as one row, or NaN where a step left the map's domain (the map raised: a layer
    that checks its input range, e.g. a logit refusing values above 1)."""
    try:
        return (fn(plus, context) - fn(minus, context)).reshape(1, -1).detach()
    except Exception:  # a refused step says nothing about the derivative at x
        return torch.full((1, size), torch.nan, dtype=plus.dtype, device=plus.device)


def derivative_mismatch(fn: Map, x: Tensor, context: Tensor | None, jac: Tensor, seed: int = 0) -> Tensor:
    """Per sample, ``||J v - (f(x + h v) - f(x - h v)) / 2h|| / (||J v|| + ||fd||)`` along a random unit ``v``,
    the smallest over the step sizes :data:`FD_STEPS` (0 where no step gives finite differences: a domain edge,
    or a step the map refuses by raising).

    ``fn`` runs on one sample at a time, as the Jacobians were built (so a map that mixes samples, which batch
    independence catches, does not look like a wrong derivative); ``jac`` is ``(B, D_out, D)``.
    """
    batch = x.shape[0]
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(x.device, x.dtype)
    v = v / v.reshape(batch, -1).norm(dim=1).reshape(batch, *([1] * (x.dim() - 1)))
    jv = torch.einsum("bij,bj->bi", jac.to(x.dtype), v.reshape(batch, -1))
    scale = 1 + x.reshape(batch, -1).abs().amax(1)
    best = torch.full((batch,), torch.inf, dtype=torch.float64, device=x.device)
    with no_grad_unless_needed():
        for step in FD_STEPS:
            h = (step * scale).reshape(batch, *([1] * (x.dim() - 1)))
            plus, minus = x + h * v, x - h * v
            fd = torch.cat([_difference(fn, plus[i : i + 1], minus[i : i + 1], _rows(context, i), jv.shape[1])
                            for i in range(batch)]) / (2 * h.reshape(batch, 1))
            rel = ((fd - jv).norm(dim=1) / (jv.norm(dim=1) + fd.norm(dim=1) + 1e-300)).double()
            rel = torch.where(torch.isfinite(rel), rel, torch.full_like(rel, torch.inf))
            best = torch.minimum(best, rel)
    return torch.where(torch.isfinite(best), best, torch.zeros_like(best))
