"""Invertible 1x1 convolution (Glow): a learned linear map of the channels, dense or LU-decomposed."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..base import Bounds, InvertibleModule, numel_per_channel, per_sample

__all__ = ["Invertible1x1Conv"]


def _same_values(saved: list[Tensor], current: list[Tensor]) -> bool:
    """Whether ``current`` holds exactly the values (and dtypes, devices) of ``saved``."""
    return len(saved) == len(current) and all(
        a.dtype == b.dtype and a.device == b.device and a.shape == b.shape and torch.equal(a, b)
        for a, b in zip(saved, current))


class Invertible1x1Conv(InvertibleModule):
    r"""Channel mixing ``y = W x`` at every position, with ``W`` an invertible ``C x C`` matrix.

    Math:
        forward ``y = W x``; inverse ``x = W^{-1} y``; ``log|det J| = n log|det W|`` with ``n`` positions per
        channel. Lipschitz bounds: ``sigma_max(W)`` forward, ``1 / sigma_min(W)`` inverse.

    Parametrisations:
        - dense (``lu=False``): ``W`` is the parameter ``weight``; ``log|det W|`` by ``slogdet``.
        - LU (``lu=True``, Glow's ``LU_decomposed``): ``W = P L (U + diag(sign_s * exp(log_s)))`` with ``P`` a
          fixed permutation (buffer), ``L`` unit lower triangular and ``U`` strictly upper triangular, so
          ``log|det W| = sum(log_s)`` costs nothing.

    ``W`` starts as a random orthogonal matrix (the QR factor of a Gaussian matrix). The inverse matrix is cached
    when no gradient is needed, keyed on a copy of the parameters and buffers themselves (not on version
    counters, which writes through ``p.data`` do not move): any change of their values, dtype or device (an
    optimiser step, ``p.data.copy_(...)``, ``load_state_dict``, ``.to()``) recomputes it. The cache pays for
    itself: at Glow's 48-96 channels computing ``W^{-1}`` takes about a fifth to a third of a whole inverse pass,
    the comparison a few per cent.

    Args:
        channels: number of channels ``C``.
        lu: use the LU parametrisation.
        generator: random generator for the initial orthogonal matrix.

    Example:
        >>> layer = Invertible1x1Conv(4, lu=True)
        >>> x = torch.randn(2, 4, 3, 3)
        >>> y, logdet = layer(x)
        >>> bool(torch.allclose(layer.inverse(y)[0], x, atol=1e-5))
        True
    """

    def __init__(self, channels: int, *, lu: bool = False, generator: torch.Generator | None = None) -> None:
        super().__init__(channels=channels, ranks=(2, 3, 4))
        self.lu = lu
        q = torch.linalg.qr(torch.randn(channels, channels, generator=generator, dtype=torch.float64))[0]
        if lu:
            p, lower, upper = torch.linalg.lu(q)
            s = torch.diagonal(upper)
            self.register_buffer("perm", p.float())
            self.register_buffer("sign_s", torch.sign(s).float())
            self.lower = nn.Parameter(torch.tril(lower, -1).float())
            self.upper = nn.Parameter(torch.triu(upper, 1).float())
            self.log_s = nn.Parameter(torch.log(torch.abs(s)).float())
        else:
            self.weight = nn.Parameter(q.float())
        self._cache: tuple[list[Tensor], Tensor] | None = None

    def weight_matrix(self) -> Tensor:
        """The matrix ``W``."""
        if not self.lu:
            return self.weight
        eye = torch.eye(self.channels, dtype=self.lower.dtype, device=self.lower.device)
        lower = torch.tril(self.lower, -1) + eye
        upper = torch.triu(self.upper, 1) + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.perm @ lower @ upper

    def logabsdet(self) -> Tensor:
        """``log|det W|``."""
        return self.log_s.sum() if self.lu else torch.linalg.slogdet(self.weight)[1]

    def _inverse_matrix_uncached(self) -> Tensor:
        if not self.lu:
            return torch.linalg.inv(self.weight)
        eye = torch.eye(self.channels, dtype=self.lower.dtype, device=self.lower.device)
        lower = torch.tril(self.lower, -1) + eye
        upper = torch.triu(self.upper, 1) + torch.diag(self.sign_s * torch.exp(self.log_s))
        # W^-1 = U^-1 L^-1 P^T
        lower_inv_pt = torch.linalg.solve_triangular(lower, self.perm.T, upper=False, unitriangular=True)
        return torch.linalg.solve_triangular(upper, lower_inv_pt, upper=True)

    def inverse_matrix(self) -> Tensor:
        """``W^{-1}``, cached while no gradient is needed and the parameters hold the same values."""
        tensors = [t.detach() for t in (*self.parameters(), *self.buffers())]
        if (torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters())) or any(
                torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors):
            return self._inverse_matrix_uncached()
        if self._cache is None or not _same_values(self._cache[0], tensors):
            self._cache = ([t.clone() for t in tensors], self._inverse_matrix_uncached())
        return self._cache[1]

    def _after_load(self, prefix: str) -> None:
        self._cache = None

    @staticmethod
    def _mix(matrix: Tensor, x: Tensor) -> Tensor:
        if x.dim() == 2:
            return x @ matrix.T
        # a batched matmul over the positions: for a few dozen channels about twice as fast as F.conv2d with a
        # 1x1 kernel in forward and backward on CPU (benchmarks/layers.py), and the same map
        return torch.einsum("ij,bj...->bi...", matrix, x)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._mix(self.weight_matrix(), x), per_sample(numel_per_channel(x) * self.logabsdet(), x)

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self._mix(self.inverse_matrix(), y), per_sample(-numel_per_channel(y) * self.logabsdet(), y)

    def lipschitz_bounds(self) -> Bounds:
        with torch.no_grad():
            sv = torch.linalg.svdvals(self.weight_matrix().double())
        return Bounds(float(sv.max()), float(1.0 / sv.min()))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, lu={self.lu}"
