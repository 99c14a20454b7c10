r"""Matrix-free estimates of the extreme singular values of a flow's Jacobian (Golub-Kahan-Lanczos on JVP/VJP).

For inputs too large for an exact Jacobian (a 3 x 32 x 32 image has ``D = 3072``), the largest singular value of
``J = J_f(x)`` is estimated by Golub-Kahan-Lanczos bidiagonalisation, which touches ``J`` only through
vector-Jacobian products (``torch.func.vjp``, one graph kept) and Jacobian-vector products (by default the VJP of
that VJP, one double-backward pass): after ``k`` steps ``J V_k = U_k B_k`` with ``B_k`` a ``k x k`` upper
bidiagonal matrix whose singular values approximate those of ``J``. The smallest singular value converges slowly
that way, so it is taken from the inverse map instead: ``sigma_min(J_f(x)) = 1 / sigma_max(J_{f^-1}(f(x)))``,
again a largest-value problem.

Guarantees of the estimate ``theta`` with residual ``r`` (both returned per sample):
    - ``theta <= sigma_max`` (the singular values of ``B_k`` interlace those of ``J``), so the estimate approaches
      from below;
    - some singular value of ``J`` lies in ``[theta - r, theta + r]`` (``r = beta_k |p_k|``, the norm of the
      Ritz triple's residual); the iteration stops when ``r <= rtol * theta`` for every sample.

Samples are independent (the Jacobian of a batch is block diagonal), so one batched JVP/VJP advances the
iteration of every sample at once. Full reorthogonalisation keeps the bases orthogonal in float32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..base import InvertibleModule, allow_nonfinite
from ._common import eval_mode
from .jacobian import singular_values

__all__ = ["ExtremeSingularValues", "SingularValueEstimate", "estimate_sigma_max", "extreme_singular_values"]


@dataclass
class SingularValueEstimate:
    """Estimate of ``sigma_max`` per sample (float64, shape ``(B,)``).

    Attributes:
        value: the estimate ``theta`` (a lower bound on ``sigma_max`` up to round-off).
        residual: ``r``: some singular value lies within ``r`` of ``theta``.
        iterations: bidiagonalisation steps taken (each one JVP and one VJP of the whole batch).
        converged: whether ``residual <= rtol * value``.
    """

    value: Tensor
    residual: Tensor
    iterations: int
    converged: Tensor


def _unit(t: Tensor) -> tuple[Tensor, Tensor]:
    norm = t.norm(dim=1)
    return t / norm.clamp_min(torch.finfo(t.dtype).tiny)[:, None], norm


def _reorthogonalize(w: Tensor, basis: list[Tensor]) -> Tensor:
    if not basis:
        return w
    q = torch.stack(basis, dim=1)  # (B, k, D)
    for _ in range(2):  # classical Gram-Schmidt twice is as good as modified, and batched
        w = w - torch.einsum("bk,bkd->bd", torch.einsum("bkd,bd->bk", q, w), q)
    return w


def _restart(w: Tensor, norm: Tensor, basis: list[Tensor], scale: Tensor, generator: torch.Generator | None
             ) -> tuple[Tensor, Tensor]:
    """Where the new direction vanished (an invariant subspace was found), continue with a fresh orthogonal one."""
    dead = norm <= 1e3 * torch.finfo(w.dtype).eps * scale
    if not bool(dead.any()):
        return w, norm
    fresh = torch.randn(w.shape, generator=generator, dtype=w.dtype, device="cpu").to(w.device)
    fresh, _ = _unit(_reorthogonalize(fresh, basis))
    w = torch.where(dead[:, None], fresh, w / norm.clamp_min(torch.finfo(w.dtype).tiny)[:, None])
    return w, torch.where(dead, torch.zeros_like(norm), norm)


def _bidiagonal(alphas: list[Tensor], betas: list[Tensor]) -> Tensor:
    k = len(alphas)
    b = torch.diag_embed(torch.stack(alphas, dim=1).double())
    if k > 1:
        b = b + torch.diag_embed(torch.stack(betas[: k - 1], dim=1).double(), offset=1)
    return b


def estimate_sigma_max(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    max_iter: int = 40,
    rtol: float = 1e-2,
    generator: torch.Generator | None = None,
    jvp_mode: str = "reverse",
) -> SingularValueEstimate:
    """Largest singular value of the Jacobian of ``fn`` (a per-sample map on batches) at each sample of ``x``.

    Args:
        fn: the map, e.g. ``lambda v: module(v)[0]``; it must support ``torch.func.jvp`` and ``torch.func.vjp``.
        x: the points, ``(B, ...)``.
        max_iter: the most bidiagonalisation steps (each one JVP and one VJP of the batch).
        rtol: stop when every sample's residual is at most ``rtol`` times its estimate.
        generator: draws the random start vectors (seed 0 when not given, so the estimate is reproducible).
        jvp_mode: how ``J v`` is computed: ``"reverse"`` (the VJP of the VJP, reusing one graph; needs double
            backward) or ``"forward"`` (``torch.func.jvp``, forward-mode AD; recomputes the map each time).

    Example:
        >>> import torch
        >>> a = torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64))
        >>> est = estimate_sigma_max(lambda v: v @ a, torch.zeros(2, 100, dtype=torch.float64), rtol=1e-6)
        >>> [round(v, 6) for v in est.value.tolist()], bool(est.converged.all())
        ([100.0, 100.0], True)
    """
    if max_iter < 1:
        raise ValueError(f"estimate_sigma_max: max_iter must be >= 1, got {max_iter}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    batch, in_shape = x.shape[0], x.shape[1:]
    primal = x.detach()
    with torch.no_grad():
        fn(primal)  # outside the transforms: data-dependent layers initialise here
    y, vjp_fn = torch.func.vjp(fn, primal)
    out_shape = y.shape[1:]
    if jvp_mode == "reverse":
        # u -> J^T u is linear, so its VJP with cotangent v is J v: one double-backward pass on the kept graph,
        # several times faster than forward-mode AD through convolutions on CPU
        _, jvp_fn = torch.func.vjp(lambda u: vjp_fn(u)[0], torch.zeros_like(y))

        def jvp(v: Tensor) -> Tensor:
            return jvp_fn(v.reshape(batch, *in_shape))[0].reshape(batch, -1).detach()
    elif jvp_mode == "forward":

        def jvp(v: Tensor) -> Tensor:
            return torch.func.jvp(fn, (primal,), (v.reshape(batch, *in_shape),))[1].reshape(batch, -1).detach()
    else:
        raise ValueError(f"estimate_sigma_max: jvp_mode must be 'reverse' or 'forward', got {jvp_mode!r}")

    def vjp(u: Tensor) -> Tensor:
        return vjp_fn(u.reshape(batch, *out_shape))[0].reshape(batch, -1).detach()

    start = torch.randn((batch, int(primal[0].numel())), generator=generator, dtype=x.dtype, device="cpu")
    v, _ = _unit(start.to(x.device))
    vs, us, alphas, betas = [v], [], [], []
    u, alpha = _unit(jvp(v))
    us.append(u)
    alphas.append(alpha)
    theta = residual = torch.zeros(batch, dtype=torch.float64, device=x.device)
    for step in range(1, max_iter + 1):
        w = _reorthogonalize(vjp(u) - alpha[:, None] * v, vs)
        w, beta = _unit(w)
        w, beta = _restart(w, beta, vs, torch.stack(alphas).amax(0), generator)
        betas.append(beta)
        left, sv, _ = torch.linalg.svd(_bidiagonal(alphas, betas))
        theta = sv[:, 0]
        residual = beta.double() * left[:, -1, 0].abs()
        if bool((residual <= rtol * theta).all()) or step == max_iter:
            break
        v = w
        vs.append(v)
        u, alpha = _unit(_reorthogonalize(jvp(v) - beta[:, None] * u, us))
        u, alpha = _restart(u, alpha, us, torch.stack(alphas).amax(0), generator)
        us.append(u)
        alphas.append(alpha)
    return SingularValueEstimate(theta, residual, step, residual <= rtol * theta)


@dataclass
class ExtremeSingularValues:
    """``sigma_max`` and ``sigma_min`` of ``J_f`` per sample (float64, shape ``(B,)``) and how they were found.

    Attributes:
        method: ``"exact"`` (SVD of the exact Jacobian) or ``"lanczos"`` (matrix-free).
        forward, inverse: the Lanczos estimates of ``sigma_max(J_f)`` and ``sigma_max(J_{f^-1}) = 1/sigma_min``
            (``None`` for the exact method).
    """

    sigma_max: Tensor
    sigma_min: Tensor
    method: str
    forward: SingularValueEstimate | None = None
    inverse: SingularValueEstimate | None = None

    @property
    def condition_number(self) -> Tensor:
        return self.sigma_max / self.sigma_min

    @property
    def inverse_lipschitz(self) -> Tensor:
        """``1 / sigma_min``: the local Lipschitz constant of the inverse."""
        return 1.0 / self.sigma_min


def extreme_singular_values(
    module: InvertibleModule,
    x: Tensor,
    *,
    method: str = "auto",
    max_exact_dims: int = 1024,
    max_iter: int = 40,
    rtol: float = 1e-2,
    generator: torch.Generator | None = None,
    eval: bool = True,
) -> ExtremeSingularValues:
    """``sigma_max`` and ``sigma_min`` of the forward Jacobian at each sample, exactly or matrix-free.

    Args:
        method: ``"exact"`` (full Jacobians and SVDs), ``"lanczos"`` (:func:`estimate_sigma_max`), or ``"auto"``:
            exact when the entries per sample are at most ``max_exact_dims``. Both take ``sigma_max`` from the
            forward map and ``1 / sigma_min`` as the largest singular value of the inverse map's Jacobian at
            ``f(x)``: a largest singular value is computed to full relative accuracy, whereas the smallest one of
            the forward Jacobian is lost in round-off once the condition number nears ``1 / eps``.
        max_iter, rtol, generator: passed to :func:`estimate_sigma_max`.

    Example:
        >>> import torch, invertible
        >>> flow = invertible.Sequential(invertible.ActNorm(6), invertible.Invertible1x1Conv(6)).double()
        >>> x = torch.randn(2, 6, dtype=torch.float64)
        >>> exact = extreme_singular_values(flow, x, method="exact")
        >>> est = extreme_singular_values(flow, x, method="lanczos", rtol=1e-8)
        >>> bool(torch.allclose(est.sigma_max, exact.sigma_max)), bool(torch.allclose(est.sigma_min, exact.sigma_min))
        (True, True)
    """
    if method not in ("auto", "exact", "lanczos"):
        raise ValueError(f"extreme_singular_values: method must be 'auto', 'exact' or 'lanczos', got {method!r}")
    if method == "auto":
        method = "exact" if x[0].numel() <= max_exact_dims else "lanczos"
    with eval_mode(module, eval):
        if method == "exact":
            sv = singular_values(module, x, eval=False)
            sv_inv = singular_values(module, x, direction="inverse", eval=False)
            return ExtremeSingularValues(sv[:, 0], 1.0 / sv_inv[:, 0], "exact")
        with torch.no_grad(), allow_nonfinite():
            y = module(x)[0]
        with allow_nonfinite():
            fwd = estimate_sigma_max(lambda v: module(v)[0], x, max_iter=max_iter, rtol=rtol, generator=generator)
            inv = estimate_sigma_max(lambda v: module.inverse(v)[0], y, max_iter=max_iter, rtol=rtol,
                                     generator=generator)
    return ExtremeSingularValues(fwd.value, 1.0 / inv.value, "lanczos", fwd, inv)
