r"""Log-determinants of residual maps ``f(x) = x + g(x)`` with ``Lip(g) < 1``.

``log|det(I + J)| = sum_{k>=1} (-1)^{k+1} tr(J^k) / k`` (``J = dg/dx``; the series converges because the spectral
radius of ``J`` is below 1, and ``det(I + J) > 0``). :class:`LogDetEstimator` chooses how it is evaluated:

- ``"exact"``: brute force, ``slogdet(I + J)`` with the full Jacobian (``torch.func``; small inputs only).
- ``"series"``: the first ``n_terms`` terms (biased, deterministic apart from the probes).
- ``"roulette"``: the unbiased Russian-roulette estimator of Residual Flows: draw ``N`` (geometric or Poisson),
  keep the first ``n_exact_terms + N`` terms and weight term ``k > n_exact_terms`` by
  ``1 / P(N >= k - n_exact_terms)``; ``E[weight_k] = 1`` for every ``k``, so the estimate is unbiased.

Traces are Hutchinson estimates ``eps^T J^k eps`` with Gaussian or Rademacher probes (``trace="hutchinson"``,
vector-Jacobian products only), or exact traces of the matrix powers (``trace="exact"``, small inputs; isolates
the roulette's own randomness). ``N`` and the probes are drawn per sample, so samples stay independent.

``neumann_grad=True`` gives the memory-efficient gradient of Residual Flows: the value is computed without a graph
and the gradient comes from the surrogate ``w^T J eps`` with ``w = sum_k (-1)^{k-1} weight_k eps^T J^{k-1}``
(detached), whose gradient is the (unbiased) Neumann series for ``tr((I + J)^{-1} dJ)``. Unlike residual-flows,
the returned value is still the log-det estimate (residual-flows returns the surrogate, so its logged bits/dim is
not an estimate).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "ESTIMATORS",
    "LogDetEstimator",
    "batch_jacobian",
    "estimate_logdet",
    "roulette_weights",
    "series_logdet",
    "tail_probability",
]

#: The log-det estimators a residual block can use.
ESTIMATORS = ("exact", "series", "roulette")


@dataclass(frozen=True)
class LogDetEstimator:
    """How a residual block evaluates ``log|det(I + J_g)|`` (see the module docstring).

    Attributes:
        method: ``"exact"``, ``"series"`` or ``"roulette"``.
        n_terms: number of terms of the truncated series (``"series"``).
        dist: ``"geometric"`` or ``"poisson"`` (``"roulette"``).
        p: success probability of the geometric ``N``: ``P(N >= j) = (1 - p)^j``.
        rate: Poisson rate of ``N``.
        n_exact_terms: terms always kept in training mode; ``n_exact_terms_eval`` in eval mode (Residual Flows
            uses 2 and 20).
        n_samples: draws of ``N`` averaged per sample (their weights are averaged).
        n_probes: Hutchinson probes averaged per sample.
        probe: ``"gaussian"`` or ``"rademacher"``.
        trace: ``"hutchinson"`` or ``"exact"`` (traces of the exact matrix powers).
        neumann_grad: memory-efficient Neumann-series gradient (``"series"``/``"roulette"``).

    Example:
        >>> LogDetEstimator("roulette", dist="poisson").kind, LogDetEstimator().kind
        ('estimated', 'exact')
    """

    method: str = "exact"
    n_terms: int = 10
    dist: str = "poisson"
    p: float = 0.5
    rate: float = 2.0
    n_exact_terms: int = 2
    n_exact_terms_eval: int = 20
    n_samples: int = 1
    n_probes: int = 1
    probe: str = "gaussian"
    trace: str = "hutchinson"
    neumann_grad: bool = False

    def __post_init__(self) -> None:
        checks = [
            (self.method in ESTIMATORS, f"method must be one of {ESTIMATORS}, got {self.method!r}"),
            (self.dist in ("geometric", "poisson"), f"dist must be 'geometric' or 'poisson', got {self.dist!r}"),
            (0 < self.p < 1, f"p must be in (0, 1), got {self.p}"),
            (self.rate > 0, f"rate must be > 0, got {self.rate}"),
            (self.n_terms >= 1, f"n_terms must be >= 1, got {self.n_terms}"),
            (self.n_exact_terms >= 0 and self.n_exact_terms_eval >= 0, "n_exact_terms must be >= 0"),
            (self.n_samples >= 1 and self.n_probes >= 1, "n_samples and n_probes must be >= 1"),
            (self.probe in ("gaussian", "rademacher"), f"probe must be 'gaussian' or 'rademacher', got {self.probe!r}"),
            (self.trace in ("hutchinson", "exact"), f"trace must be 'hutchinson' or 'exact', got {self.trace!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"LogDetEstimator: {message}")

    @property
    def kind(self) -> str:
        """``"exact"`` for brute force, ``"estimated"`` otherwise (the contract's ``logdet_kind``)."""
        return "exact" if self.method == "exact" else "estimated"

    @classmethod
    def of(cls, spec: str | LogDetEstimator) -> LogDetEstimator:
        """An estimator from a method name (defaults otherwise) or an estimator."""
        return spec if isinstance(spec, LogDetEstimator) else cls(method=spec)


def tail_probability(dist: str, param: float, j: Tensor) -> Tensor:
    """``P(N >= j)`` for integer ``j >= 0`` (float64): geometric ``(1 - p)^j``, Poisson ``P(j, rate)``."""
    j = j.double()
    if dist == "geometric":
        return (1 - param) ** j
    # P(N >= j) for N ~ Poisson(rate) is the regularised lower incomplete gamma P(j, rate); 1 at j = 0
    return torch.where(j > 0, torch.special.gammainc(j.clamp_min(1), torch.full_like(j, param)), torch.ones_like(j))


def _draw_counts(est: LogDetEstimator, batch: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    shape = (batch, est.n_samples)
    if est.dist == "geometric":
        uniform = 1 - torch.rand(shape, generator=generator, dtype=torch.float64, device=device)  # in (0, 1]
        return torch.floor(torch.log(uniform) / math.log(1 - est.p)).long()
    return torch.poisson(torch.full(shape, est.rate, dtype=torch.float64, device=device), generator=generator).long()


def roulette_weights(counts: Tensor, n_exact: int, dist: str, param: float) -> Tensor:
    """Per-sample weights ``(B, K)`` of terms ``k = 1..K`` for draws ``counts`` of shape ``(B, S)``.

    ``weight_k = mean_s 1[N_s >= k - n_exact] / P(N >= k - n_exact)`` for ``k > n_exact`` and 1 below, with
    ``K = n_exact + max N``. Each weight has expectation 1, which makes the truncated series unbiased.
    """
    n_terms = n_exact + int(counts.max()) if counts.numel() else n_exact
    k = torch.arange(1, n_terms + 1, device=counts.device)
    j = (k - n_exact).clamp_min(0)
    kept = (counts.unsqueeze(-1) >= j).double().mean(1)  # (B, K)
    return kept / tail_probability(dist, param, j)


def batch_jacobian(net: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """The ``(B, D, D)`` Jacobians of a per-sample map ``net`` at each sample of ``x`` (``torch.func``; small ``D``).

    Differentiable, also inside other ``torch.func`` transforms.
    """
    batch, shape = x.shape[0], x.shape[1:]

    def single(v: Tensor) -> Tensor:
        return net(v.reshape(1, *shape)).reshape(-1)

    return torch.func.vmap(torch.func.jacrev(single))(x.reshape(batch, -1))


def _probe(est: LogDetEstimator, x: Tensor, generator: torch.Generator | None) -> Tensor:
    if est.probe == "gaussian":
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return torch.randint(0, 2, x.shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1


def _signs(n: int, like: Tensor) -> Tensor:
    k = torch.arange(1, n + 1, device=like.device)
    return torch.where(k % 2 == 1, 1.0, -1.0).to(like.dtype)


def series_logdet(
    vjp: Callable[[Tensor], Tensor], probe: Tensor, weights: Tensor, *, neumann_grad: bool = False
) -> Tensor:
    r"""``sum_k (-1)^{k+1} weights[:, k-1] (eps^T J^k eps) / k`` per sample, from vector-Jacobian products.

    Args:
        vjp: ``w -> w^T J`` (same shape as ``probe``).
        probe: ``eps``, shape ``(B, ...)``.
        weights: ``(B, K)`` per-sample weights of terms ``1..K`` (ones for the plain truncated series).
        neumann_grad: compute the value without a graph and attach the Neumann-series gradient.
    """
    n_terms = weights.shape[1]
    signs = _signs(n_terms, probe)
    coeff = (signs / torch.arange(1, n_terms + 1, device=probe.device)).to(probe.dtype) * weights.to(probe.dtype)
    flat_eps = probe.flatten(1)
    if not (neumann_grad and torch.is_grad_enabled()):  # without a graph the surrogate has nothing to carry
        total, w = probe.new_zeros(probe.shape[0]), probe
        for k in range(n_terms):
            w = vjp(w)
            total = total + coeff[:, k] * (w.flatten(1) * flat_eps).sum(1)
        return total
    with torch.no_grad():
        total, w = probe.new_zeros(probe.shape[0]), probe
        neumann = probe.new_zeros(probe.shape)  # sum_k (-1)^{k-1} weight_k eps^T J^{k-1}
        view = (-1,) + (1,) * (probe.dim() - 1)
        for k in range(n_terms):
            neumann = neumann + (signs[k] * weights[:, k].to(probe.dtype)).view(view) * w
            w = vjp(w)
            total = total + coeff[:, k] * (w.flatten(1) * flat_eps).sum(1)
    surrogate = (vjp(neumann.detach()).flatten(1) * flat_eps).sum(1)
    return total + surrogate - surrogate.detach()


def _exact_trace_series(jac: Tensor, weights: Tensor, neumann_grad: bool) -> Tensor:
    n_terms = weights.shape[1]
    signs = _signs(n_terms, jac)
    coeff = (signs / torch.arange(1, n_terms + 1, device=jac.device)).to(jac.dtype) * weights.to(jac.dtype)
    with torch.set_grad_enabled(torch.is_grad_enabled() and not neumann_grad):
        total, power = jac.new_zeros(jac.shape[0]), None
        neumann = torch.zeros_like(jac)
        eye = torch.eye(jac.shape[1], dtype=jac.dtype, device=jac.device).expand_as(jac)
        for k in range(n_terms):
            term = eye if power is None else power
            neumann = neumann + (signs[k] * weights[:, k].to(jac.dtype)).view(-1, 1, 1) * term
            power = jac if power is None else power @ jac
            total = total + coeff[:, k] * torch.diagonal(power, dim1=1, dim2=2).sum(1)
    if not neumann_grad:
        return total
    surrogate = torch.diagonal(neumann.detach() @ jac, dim1=1, dim2=2).sum(1)
    return total.detach() + surrogate - surrogate.detach()


def estimate_logdet(
    net: Callable[[Tensor], Tensor],
    x: Tensor,
    est: LogDetEstimator,
    *,
    training: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """``(g(x), estimate of log|det(I + dg/dx)|)`` per sample, with the estimator ``est``.

    ``training`` chooses ``n_exact_terms`` over ``n_exact_terms_eval`` for the roulette estimator.

    Example:
        >>> net = torch.nn.Linear(3, 3, bias=False)
        >>> with torch.no_grad():
        ...     _ = net.weight.copy_(0.3 * torch.eye(3))
        >>> gx, logdet = estimate_logdet(net, torch.randn(2, 3), LogDetEstimator("exact"))
        >>> torch.allclose(logdet, torch.full((2,), 3 * math.log(1.3)))
        True
    """
    batch = x.shape[0]
    if est.method == "roulette":
        n_exact = est.n_exact_terms if training else est.n_exact_terms_eval
        param = est.p if est.dist == "geometric" else est.rate
        weights = roulette_weights(_draw_counts(est, batch, generator, x.device), n_exact, est.dist, param)
    else:
        weights = torch.ones(batch, est.n_terms, dtype=torch.float64, device=x.device)

    if est.method == "exact" or est.trace == "exact":
        gx = net(x)
        jac = batch_jacobian(net, x)
        if est.method == "exact":
            eye = torch.eye(jac.shape[1], dtype=jac.dtype, device=jac.device)
            return gx, torch.linalg.slogdet(eye + jac)[1]
        return gx, _exact_trace_series(jac, weights, est.neumann_grad)

    gx, vjp_fn = torch.func.vjp(net, x)

    def vjp(w: Tensor) -> Tensor:
        return vjp_fn(w)[0]

    total = x.new_zeros(batch)
    for _ in range(est.n_probes):
        total = total + series_logdet(vjp, _probe(est, x, generator), weights, neumann_grad=est.neumann_grad)
    return gx, total / est.n_probes
