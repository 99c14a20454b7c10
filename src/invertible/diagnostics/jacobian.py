"""Exact Jacobians (``torch.func``), their singular values, condition numbers and the log-det error.

These build the full ``D x D`` Jacobian of each sample, ``D`` reverse-mode passes per sample: exact, and the
ground truth for everything else, but only affordable for small ``D`` (a few thousand at most). For larger inputs
use the matrix-free estimates of :mod:`invertible.diagnostics.estimates`. For many samples of a tiny ``D`` (a grid
of 10^5 points in 2-D), :func:`batch_jacobian` (``batched=True``) needs only ``D`` reverse passes for the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..base import InvertibleModule, allow_nonfinite
from ._common import eval_mode

__all__ = ["JacobianStats", "batch_jacobian", "condition_number", "exact_jacobian", "jacobian_stats",
           "singular_values"]


def exact_jacobian(fn: Callable[[Tensor], Tensor], x: Tensor, *, chunk_size: int | None = None,
                   vectorize: bool = False, mode: str = "reverse") -> Tensor:
    """The exact ``(D_out, D)`` Jacobian of ``fn`` (a per-sample map on batches) at each sample: ``(B, D_out, D)``.

    Uses ``torch.func.jacrev`` one sample at a time (a Python loop is faster than ``vmap`` over the batch for conv
    flows); ``vectorize=True`` uses ``vmap`` over the batch instead (much faster for many samples of a small flat
    map). ``chunk_size`` limits how many reverse passes are vectorised at once, which bounds the memory.
    ``mode="forward"`` uses ``torch.func.jacfwd`` (forward-mode autodiff: the same derivative rounded another way,
    which the contract checker uses to estimate the error of a reverse-mode reference).

    Example:
        >>> import torch
        >>> a = torch.tensor([[2.0, 1.0], [0.0, 3.0]])
        >>> exact_jacobian(lambda v: v @ a.T, torch.zeros(1, 2))[0]
        tensor([[2., 1.],
                [0., 3.]])
    """
    shape = x.shape[1:]

    def single(v: Tensor) -> Tensor:
        return fn(v.reshape(1, *shape)).reshape(-1)

    if mode not in ("reverse", "forward"):
        raise ValueError(f"exact_jacobian: mode must be 'reverse' or 'forward', got {mode!r}")
    jac = (torch.func.jacrev(single, chunk_size=chunk_size) if mode == "reverse"
           else torch.func.jacfwd(single))
    if vectorize:
        return torch.func.vmap(jac)(x.reshape(x.shape[0], -1))
    return torch.stack([jac(x[i].reshape(-1)) for i in range(x.shape[0])])


def _svdvals(jac: Tensor) -> Tensor:
    """Singular values of a batch of matrices; NaN rows for the matrices that hold non-finite entries (which
    ``torch.linalg.svdvals`` refuses), so an exploded sample is counted instead of stopping the measurement."""
    finite = torch.isfinite(jac).flatten(-2).all(dim=-1)
    if bool(finite.all()):
        return torch.linalg.svdvals(jac)
    out = jac.new_full((*jac.shape[:-2], min(jac.shape[-2:])), float("nan"))
    if bool(finite.any()):
        out[finite] = torch.linalg.svdvals(jac[finite])
    return out


def batch_jacobian(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """The ``(B, D_out, D)`` Jacobians of a per-sample map at every sample, by ``D_out`` reverse passes of the batch.

    Row ``k`` of every sample's Jacobian is the gradient of ``sum_b fn(x)[b, k]`` with respect to ``x``, which is
    exact only when the samples do not interact (no batch statistics: run modules in eval mode, initialise
    data-dependent layers first). The cost is independent of the batch size in passes, so it suits many samples of
    a small ``D`` (2-D toys); for large ``D`` use :func:`exact_jacobian`. A sample whose output is not finite gets
    its own non-finite rows and leaves the others untouched.

    Example:
        >>> import torch
        >>> x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
        >>> batch_jacobian(lambda v: v * v.flip(1), x)[1]
        tensor([[4., 3.],
                [4., 3.]])
    """
    batch = x.shape[0]
    primal = x.detach().requires_grad_(True)
    with torch.enable_grad():
        y = fn(primal).reshape(batch, -1)
        rows = []
        for k in range(y.shape[1]):
            (grad,) = torch.autograd.grad(y[:, k].sum(), primal, retain_graph=k < y.shape[1] - 1,
                                          allow_unused=True)
            rows.append(torch.zeros_like(primal) if grad is None else grad)
    return torch.stack([r.reshape(batch, -1) for r in rows], dim=1)


def _jacobians(module: InvertibleModule, x: Tensor, inverse: bool, chunk_size: int | None, batched: bool = False
               ) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """``(y, logdet, J_f(x), logdet_inv, J_{f^-1}(y))`` with the Jacobians in float64."""
    with torch.no_grad(), allow_nonfinite():
        y, logdet = module(x)
        logdet_inv = module.inverse(y)[1] if inverse else None

    def jacobian(fn: Callable[[Tensor], Tensor], at: Tensor) -> Tensor:
        if batched:
            return batch_jacobian(fn, at).detach().double()
        return exact_jacobian(fn, at, chunk_size=chunk_size).detach().double()

    with allow_nonfinite():
        jac = jacobian(lambda v: module(v)[0], x)
        jac_inv = jacobian(lambda v: module.inverse(v)[0], y) if inverse else None
    return y, logdet, jac, logdet_inv, jac_inv


def singular_values(module: InvertibleModule, x: Tensor, *, direction: str = "forward",
                    chunk_size: int | None = None, vectorize: bool = False, eval: bool = True) -> Tensor:
    """Singular values (descending, float64, shape ``(B, D)``) of the exact Jacobian at each sample.

    ``direction="forward"``: of ``J_f`` at ``x``; ``direction="inverse"``: of ``J_{f^-1}`` at ``y = f(x)``. For the
    inverse Jacobian at an arbitrary ``y``, pass ``invertible.Inverse(module)`` and ``y``. ``chunk_size`` and
    ``vectorize`` go to :func:`exact_jacobian`.

    Example:
        >>> import torch, invertible
        >>> layer = invertible.ActNorm(2, data_init=False).double()
        >>> with torch.no_grad():
        ...     _ = layer.log_scale.copy_(torch.tensor([1.0, 2.0]).log())
        >>> singular_values(layer, torch.zeros(1, 2, dtype=torch.float64), direction="inverse")
        tensor([[1.0000, 0.5000]], dtype=torch.float64)
    """
    if direction not in ("forward", "inverse"):
        raise ValueError(f"singular_values: direction must be 'forward' or 'inverse', got {direction!r}")
    with eval_mode(module, eval):
        with torch.no_grad(), allow_nonfinite():
            y = module(x)[0]  # outside the transform: data-dependent layers initialise here
        with allow_nonfinite():
            if direction == "forward":
                jac = exact_jacobian(lambda v: module(v)[0], x, chunk_size=chunk_size, vectorize=vectorize)
            else:
                jac = exact_jacobian(lambda v: module.inverse(v)[0], y, chunk_size=chunk_size, vectorize=vectorize)
    return _svdvals(jac.detach().double())


def condition_number(module: InvertibleModule, x: Tensor, *, chunk_size: int | None = None) -> Tensor:
    """``sigma_max / sigma_min`` of the exact forward Jacobian at each sample, shape ``(B,)``, float64."""
    sv = singular_values(module, x, chunk_size=chunk_size)
    return sv[:, 0] / sv[:, -1]


@dataclass
class JacobianStats:
    """What the exact Jacobians say at each sample (float64; ``(B, D)`` singular values, ``(B,)`` the rest).

    Attributes:
        forward: singular values of ``J_f(x)``, descending.
        inverse: singular values of ``J_{f^-1}(y)`` at ``y = f(x)``, descending (``None`` if not computed).
            Analytically ``inverse = 1 / forward`` reversed; a difference measures how far the computed inverse is
            from the inverse of the computed forward.
        logdet: the module's own ``log|det J_f(x)|``; ``logabsdet``: ``slogdet`` of the exact Jacobian.
        logdet_inverse, logabsdet_inverse: the same for the inverse at ``y`` (``None`` if not computed).
    """

    forward: Tensor
    inverse: Tensor | None
    logdet: Tensor
    logabsdet: Tensor
    logdet_inverse: Tensor | None
    logabsdet_inverse: Tensor | None

    @property
    def sigma_max(self) -> Tensor:
        return self.forward[:, 0]

    @property
    def sigma_min(self) -> Tensor:
        return self.forward[:, -1]

    @property
    def condition_number(self) -> Tensor:
        """``sigma_max / sigma_min`` of the forward Jacobian."""
        return self.forward[:, 0] / self.forward[:, -1]

    @property
    def condition_number_inverse(self) -> Tensor | None:
        return None if self.inverse is None else self.inverse[:, 0] / self.inverse[:, -1]

    @property
    def logdet_error(self) -> Tensor:
        """``|logdet - log|det J_f||``: the analytic log-det against the exact Jacobian's."""
        return (self.logdet.double() - self.logabsdet).abs()

    @property
    def logdet_error_inverse(self) -> Tensor | None:
        if self.logdet_inverse is None or self.logabsdet_inverse is None:
            return None
        return (self.logdet_inverse.double() - self.logabsdet_inverse).abs()


def jacobian_stats(module: InvertibleModule, x: Tensor, *, inverse: bool = True, chunk_size: int | None = None,
                   eval: bool = True, batched: bool = False) -> JacobianStats:
    """Exact singular values of the forward and inverse Jacobians, condition numbers and log-det errors.

    ``batched=True`` builds the Jacobians with :func:`batch_jacobian` (``D`` reverse passes for the whole batch
    instead of ``D`` per sample): the fast choice for many samples of a small ``D``; the module must treat samples
    independently (eval mode does, for every layer of this library).

    Example:
        >>> import torch, invertible
        >>> layer = invertible.AffineCoupling(4, hidden=8, net="mlp", zero_init=False).double()
        >>> stats = jacobian_stats(layer, torch.randn(3, 4, dtype=torch.float64))
        >>> bool(stats.logdet_error.max() < 1e-12), stats.condition_number.shape
        (True, torch.Size([3]))
    """
    with eval_mode(module, eval):
        _, logdet, jac, logdet_inv, jac_inv = _jacobians(module, x, inverse, chunk_size, batched)
    return JacobianStats(
        forward=_svdvals(jac),
        inverse=None if jac_inv is None else _svdvals(jac_inv),
        logdet=logdet.detach(),
        logabsdet=torch.linalg.slogdet(jac)[1],
        logdet_inverse=None if logdet_inv is None else logdet_inv.detach(),
        logabsdet_inverse=None if jac_inv is None else torch.linalg.slogdet(jac_inv)[1],
    )
