r"""Regularizers that keep a flow locally invertible on the data (the paper's §4 remedies).

- :func:`nf_term`: the normalizing-flow (negative log-likelihood) term. Its log-det part penalises
  contraction, i.e. small singular values, which bounds ``Lip(F^-1)`` on the data.
- :func:`forward_fd` and :func:`inverse_fd`: finite-difference estimates of the squared Frobenius norm of the
  Jacobian of ``F`` and of ``F^-1``. With a random direction ``d``, ``(F(x + eps d) - F(x)) / eps ~ J d``, and
  ``E ||J d||^2`` is proportional to ``||J||_F^2``: no double backprop, and it works with memory-saving
  gradients.

Two variants of the finite-difference terms (``variant=``):

``"intended"`` (default): one unit direction per sample (uniform on the sphere), the squared difference
quotient, averaged over the batch: ``mean_i ||F(x_i + eps d_i) - F(x_i)||^2 / eps^2``, whose expectation tends
to ``mean_i ||J(x_i)||_F^2 / D`` as ``eps -> 0`` (``D`` entries per sample).

``"original"`` (the paper's code): Gaussian directions normalised per *feature* across the batch (each feature
column has unit norm over the batch, so each sample's direction has norm about ``sqrt(D / B)``), the squared
difference divided by ``eps`` (not ``eps^2``), summed over the batch:
``sum_i ||F(x_i + eps d_i) - F(x_i)||^2 / eps``, whose expectation tends to ``eps * mean_i ||J(x_i)||_F^2``.
Its inverse term is ``sum_i ||x_i - F^-1(F(x_i) + eps d'_i)||^2 / eps``. (The original code computed ``F^-1``
without a graph, so without memory saving the inverse term never reached the parameters; here both terms
always do.)

Every term takes ``coeff`` and returns ``coeff * term``, a scalar that ``backward()`` reaches the flow's
parameters through, whether ``flow`` is a plain flow or a :class:`~invertible.memory.MemorySaving` wrapper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .base import InvertibleModule
from .models.flow import standard_normal_log_prob

__all__ = ["FD_VARIANTS", "Regularization", "fd_direction", "forward_fd", "inverse_fd", "nf_term"]

#: The finite-difference variants: the intended form (default) and the original code's.
FD_VARIANTS = ("intended", "original")


def _check_variant(variant: str) -> None:
    if variant not in FD_VARIANTS:
        raise ValueError(f"variant must be one of {FD_VARIANTS}, got {variant!r}")


def nf_term(z: Tensor, logdet: Tensor, coeff: float = 1.0, *, prior: bool = True, levels: int | None = None
            ) -> Tensor:
    r"""``-coeff * mean_i objective_i``: the negative log-likelihood, with a coefficient.

    ``objective_i = log|det J(x_i)| + log N(z_i; 0, I) - D log(levels)``; the Gaussian term only with
    ``prior`` (the paper's ``--use-prior``), the discretisation constant only with ``levels`` (the paper's
    classifier uses 256; it changes the value, not the gradient). The sum runs over all ``D`` entries per
    sample (no per-dimension normalisation), as in the paper, so ``coeff = 1e-5`` means what it meant there.

    Example:
        >>> z, logdet = torch.zeros(2, 3), torch.tensor([1.0, 3.0])
        >>> round(float(nf_term(z, logdet, prior=False)), 4)
        -2.0
    """
    objective = logdet
    if prior:
        objective = objective + standard_normal_log_prob(z)
    if levels is not None:
        objective = objective - z[0].numel() * math.log(levels)
    return -coeff * objective.mean()


def fd_direction(like: Tensor, variant: str = "intended", generator: torch.Generator | None = None) -> Tensor:
    """Random directions shaped like ``like``: unit norm per sample (``"intended"``) or per feature across the
    batch (``"original"``).

    Example:
        >>> d = fd_direction(torch.zeros(5, 3, 2, 2))
        >>> torch.allclose(d.flatten(1).norm(dim=1), torch.ones(5))
        True
    """
    _check_variant(variant)
    d = torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)
    dim = 0 if variant == "original" else tuple(range(1, d.dim()))
    return d / torch.linalg.vector_norm(d, dim=dim, keepdim=True)


def _reduce(diff: Tensor, eps: float, variant: str) -> Tensor:
    sq = diff.flatten(1).pow(2).sum(1)
    return sq.mean() / eps**2 if variant == "intended" else sq.sum() / eps


def _prepare(x: Tensor, eps: float, variant: str, direction: Tensor | None, like: Tensor,
             generator: torch.Generator | None) -> Tensor:
    _check_variant(variant)
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if direction is None:
        return fd_direction(like, variant, generator)
    if direction.shape != like.shape:
        raise ValueError(f"direction has shape {tuple(direction.shape)}, expected {tuple(like.shape)}")
    return direction


def forward_fd(flow: InvertibleModule, x: Tensor, *, z: Tensor | None = None, coeff: float = 1.0,
               eps: float = 0.1, variant: str = "intended", direction: Tensor | None = None,
               generator: torch.Generator | None = None) -> Tensor:
    r"""Forward finite-difference term: ``coeff * mean_i ||F(x_i + eps d_i) - F(x_i)||^2 / eps^2`` (intended).

    ``z = F(x)`` may be passed to reuse the training forward pass (gradients then flow through it too);
    ``direction`` (shaped like ``x``) replaces the random draw. See the module docstring for ``variant``.

    Example:
        >>> import invertible
        >>> flow = invertible.ActNorm(3, data_init=False)
        >>> with torch.no_grad():
        ...     _ = flow.log_scale.fill_(math.log(2.0))
        >>> round(float(forward_fd(flow, torch.randn(4, 3)).detach()), 4)  # ||J||_F^2 / D = 4
        4.0
    """
    d = _prepare(x, eps, variant, direction, x, generator)
    if z is None:
        z = flow(x)[0]
    z_eps = flow(x + eps * d)[0]
    return coeff * _reduce(z_eps - z, eps, variant)


def inverse_fd(flow: InvertibleModule, x: Tensor, *, z: Tensor | None = None, coeff: float = 1.0,
               eps: float = 0.1, variant: str = "intended", direction: Tensor | None = None,
               generator: torch.Generator | None = None) -> Tensor:
    r"""Inverse finite-difference term: ``coeff * mean_i ||F^-1(z_i + eps d_i) - x_i||^2 / eps^2`` (intended).

    ``z = F(x)`` (computed if not given); the difference is taken against the input ``x`` itself, as in the
    paper, so a reconstruction error is penalised too. Gradients reach the parameters through ``F^-1`` and
    through ``z``. ``direction`` is shaped like ``z``.

    Example:
        >>> import invertible
        >>> flow = invertible.ActNorm(3, data_init=False)
        >>> with torch.no_grad():
        ...     _ = flow.log_scale.fill_(math.log(2.0))
        >>> round(float(inverse_fd(flow, torch.randn(4, 3)).detach()), 4)  # ||J^-1||_F^2 / D = 1/4
        0.25
    """
    if z is None:
        z = flow(x)[0]
    d = _prepare(x, eps, variant, direction, z, generator)
    x_eps = flow.inverse(z + eps * d)[0]
    return coeff * _reduce(x_eps - x, eps, variant)


@dataclass
class Regularization:
    """The paper's regularization schedule: which terms, how strong, how often.

    The fields mirror the flags ``--nf-coeff``, ``--fd-coeff``, ``--fd-inv-coeff``, ``--regularize-every`` and
    the finite-difference variant.

    Example:
        >>> import invertible
        >>> flow = invertible.ActNorm(3, data_init=False)
        >>> reg = Regularization(nf_coeff=1e-5, fd_coeff=1e-4, fd_inv_coeff=1e-4, every=10)
        >>> x = torch.randn(4, 3)
        >>> z, logdet = flow(x)
        >>> sorted(reg.terms(flow, x, z, logdet, step=20)), reg.terms(flow, x, z, logdet, step=21)
        (['fd', 'fd_inv', 'nf'], {})
    """

    nf_coeff: float = 0.0
    fd_coeff: float = 0.0
    fd_inv_coeff: float = 0.0
    every: int = 1
    eps: float = 0.1
    variant: str = "intended"
    prior: bool = True
    levels: int | None = None

    def __post_init__(self) -> None:
        _check_variant(self.variant)
        if self.every < 1:
            raise ValueError(f"Regularization: every must be >= 1, got {self.every}")

    def active(self, step: int) -> bool:
        """Whether any term applies at ``step`` (the terms apply when ``step % every == 0``)."""
        return step % self.every == 0 and (self.nf_coeff > 0 or self.fd_coeff > 0 or self.fd_inv_coeff > 0)

    def terms(self, flow: InvertibleModule, x: Tensor, z: Tensor, logdet: Tensor, step: int = 0,
              generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The active terms at ``step`` by name (``"nf"``, ``"fd"``, ``"fd_inv"``), each already multiplied by
        its coefficient; add their sum to the loss. ``z, logdet = flow(x)`` from the training forward pass."""
        if not self.active(step):
            return {}
        out: dict[str, Tensor] = {}
        if self.nf_coeff > 0:
            out["nf"] = nf_term(z, logdet, self.nf_coeff, prior=self.prior, levels=self.levels)
        if self.fd_coeff > 0:
            out["fd"] = forward_fd(flow, x, z=z, coeff=self.fd_coeff, eps=self.eps, variant=self.variant,
                                   generator=generator)
        if self.fd_inv_coeff > 0:
            out["fd_inv"] = inverse_fd(flow, x, z=z, coeff=self.fd_inv_coeff, eps=self.eps,
                                       variant=self.variant, generator=generator)
        return out
