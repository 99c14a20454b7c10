"""Squeeze, factor-out (Split) and Partial: the multi-scale plumbing of Glow and RealNVP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base import Bounds, InvertibleModule, Relinearized, leaf, logdet_zeros
from .coupling import affine_box_bounds, batch_box
from .nets import ZeroConv2d, ZeroLinear, lipschitz_bound, net_bounds
from .scale import Exp

__all__ = ["Partial", "Split", "Squeeze"]


class Squeeze(InvertibleModule):
    r"""Space-to-channel reshape: ``(B, C, H, W) -> (B, C f^2, H/f, W/f)``.

    Output channel ``c f^2 + f dy + dx`` holds input channel ``c`` at offset ``(dy, dx)`` of each ``f x f`` block
    (the ordering of Glow, RealNVP and ``pixel_unshuffle``). A permutation of the entries: ``log|det J| = 0``,
    Lipschitz bounds ``(1, 1)``. :meth:`inverse` is the matching unsqueeze.

    Example:
        >>> Squeeze()(torch.zeros(1, 3, 4, 4))[0].shape
        torch.Size([1, 12, 2, 2])
    """

    def __init__(self, factor: int = 2) -> None:
        super().__init__(channels=None, ranks=(4,))
        if factor < 1:
            raise ValueError(f"Squeeze: factor must be >= 1, got {factor}")
        self.factor = factor

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h, w = x.shape[2:]
        if h % self.factor or w % self.factor:
            raise ValueError(
                f"Squeeze(factor={self.factor}) needs height and width divisible by {self.factor}, got {h}x{w}; "
                "pad the input (e.g. 28 -> 32) or use fewer levels"
            )
        if x.shape[0] == 0:  # pixel_unshuffle returns an empty batch unchanged in shape
            return x.new_empty(0, x.shape[1] * self.factor**2, h // self.factor, w // self.factor), logdet_zeros(x)
        return F.pixel_unshuffle(x, self.factor), logdet_zeros(x)

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        if y.shape[1] % (self.factor**2):
            raise ValueError(f"Squeeze.inverse needs channels divisible by {self.factor ** 2}, got {y.shape[1]}")
        if y.shape[0] == 0:
            c, h, w = y.shape[1:]
            return y.new_empty(0, c // self.factor**2, h * self.factor, w * self.factor), logdet_zeros(y)
        return F.pixel_shuffle(y, self.factor), logdet_zeros(y)

    def lipschitz_bounds(self) -> Bounds:
        return Bounds(1.0, 1.0)

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class Split(InvertibleModule):
    r"""Factor-out point of a multi-scale flow: channels ``x2 = x[:, C//2:]`` leave the flow here.

    The factored-out half is scored by the base distribution from here on, so later layers act only on
    ``x1 = x[:, :C//2]`` (wrap them in :class:`Partial`). The layer keeps every latent in its output, so the
    inverse reconstructs exactly.

    - ``learned=False`` (standard Gaussian prior for ``x2``): the identity map.
    - ``learned=True`` (Glow's Split2d): ``x2`` has the prior ``N(mu(x1), exp(logsd(x1))^2)`` with ``mu`` and
      ``logsd`` from a zero-initialised convolution of ``x1`` (a linear map for flat inputs), interleaved as
      ``h[:, 0::2]``, ``h[:, 1::2]``. Written as a bijection to a standard normal:
      ``eps2 = (x2 - mu(x1)) * exp(-logsd(x1))``, ``log|det J| = -sum logsd``; then ``log N(eps2; 0, I) +
      log|det J|`` is exactly Glow's split log-likelihood. Inverse ``x2 = mu(x1) + exp(logsd(x1)) * eps2``.
      Like an affine coupling it has no global Lipschitz bound; on a box it is bounded like one, with
      ``t = -mean``, ``s = exp(-logsd)`` (:meth:`box_bounds`).

    Example:
        >>> split = Split(4, learned=True)
        >>> y, logdet = split(torch.randn(2, 4, 3, 3))
        >>> y.shape, logdet.shape
        (torch.Size([2, 4, 3, 3]), torch.Size([2]))
    """

    def __init__(self, channels: int, *, learned: bool = True, image: bool = True) -> None:
        super().__init__(channels=channels, ranks=(4,) if image else (2,))
        if channels < 2:
            raise ValueError(f"Split needs at least 2 channels, got {channels}")
        self.kept = channels // 2
        out = 2 * (channels - self.kept)
        self.learned = learned
        self.prior: nn.Module | None = None
        if learned:
            self.prior = ZeroConv2d(self.kept, out) if image else ZeroLinear(self.kept, out)

    def _mean_logsd(self, x1: Tensor) -> tuple[Tensor, Tensor]:
        assert self.prior is not None
        h = self.prior(x1)
        return h[:, 0::2], h[:, 1::2]

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.prior is None:
            return x, logdet_zeros(x)
        x1, x2 = x[:, : self.kept], x[:, self.kept :]
        mean, logsd = self._mean_logsd(x1)
        return torch.cat([x1, (x2 - mean) * torch.exp(-logsd)], dim=1), -logsd.flatten(1).sum(1)

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        if self.prior is None:
            return y, logdet_zeros(y)
        y1, e2 = y[:, : self.kept], y[:, self.kept :]
        mean, logsd = self._mean_logsd(y1)
        return torch.cat([y1, mean + torch.exp(logsd) * e2], dim=1), logsd.flatten(1).sum(1)

    def lipschitz_bounds(self) -> Bounds:
        return Bounds(None, None) if self.learned else Bounds(1.0, 1.0)

    def box_bounds(self, lo: Tensor, hi: Tensor) -> Bounds:
        """Bounds of the Jacobian on the box ``[lo, hi]`` and of the inverse's on a box holding its image:
        :meth:`~invertible.AffineCoupling.box_bounds` of ``y2 = (x2 - mean) / sd``."""
        if self.prior is None:
            return self.lipschitz_bounds()
        lip = lipschitz_bound(self.prior)
        k = self.kept
        h = net_bounds(self.prior, lo.double()[:, :k], hi.double()[:, :k])
        if lip is None or h is None:
            return Bounds(None, None)
        t = (-h[1][:, 0::2], -h[0][:, 0::2])  # t = -mean
        s_lo, s_hi, dg = Exp().interval(-h[1][:, 1::2], -h[0][:, 1::2])  # s = exp(-logsd)
        return affine_box_bounds((lo.double()[:, k:], hi.double()[:, k:]), t, s_lo, s_hi, dg, lip, "glow")

    def _local_bounds(self, x: Tensor) -> Bounds:
        if not self._maps_as(Split):
            return super()._local_bounds(x)
        return self.box_bounds(*batch_box(x))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, learned={self.learned}"


class Partial(InvertibleModule):
    r"""Apply ``layer`` to the first ``channels`` channels and pass the rest through unchanged.

    After a :class:`Split`, a multi-scale flow continues on the kept channels only; the factored-out latents
    travel along untouched (a later :class:`Squeeze` reorders them with the rest, which keeps the active block
    leading). Math: ``y = (layer(x_a), x_b)``, ``log|det J| = log|det J_layer|``; Lipschitz bounds
    ``max(1, Lip)`` in each direction (block-diagonal Jacobian).

    Example:
        >>> from invertible import Permutation
        >>> part = Partial(Permutation(2, kind="reverse"), channels=2)
        >>> part(torch.tensor([[1.0, 2.0, 3.0]]))[0]
        tensor([[2., 1., 3.]])
    """

    def __init__(self, layer: InvertibleModule, channels: int) -> None:
        super().__init__(channels=None, ranks=layer.ranks)
        if layer.channels is not None and layer.channels != channels:
            raise ValueError(f"Partial: the layer expects {layer.channels} channels, not {channels}")
        self.layer = layer
        self.active = channels

    def _check(self, x: Tensor) -> None:
        if x.shape[1] < self.active:
            raise ValueError(f"Partial(channels={self.active}) got only {x.shape[1]} channels")

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(x)
        y, logdet = self.layer(x[:, : self.active])
        return torch.cat([y, x[:, self.active :]], dim=1), logdet

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        self._check(y)
        x, logdet = self.layer.inverse(y[:, : self.active])
        return torch.cat([x, y[:, self.active :]], dim=1), logdet

    def lipschitz_bounds(self) -> Bounds:
        fwd, inv = self.layer.lipschitz_bounds()
        return Bounds(None if fwd is None else max(1.0, fwd), None if inv is None else max(1.0, inv))

    def _local_bounds(self, x: Tensor) -> Bounds:
        if not self._maps_as(Partial):
            return super()._local_bounds(x)
        b = self.layer._local_bounds(x[:, : self.active])
        return Bounds(*(None if v is None else max(1.0, v) for v in b))

    def _relinearize(self, out: Tensor, direction: str, need_input_grad: bool) -> Relinearized:
        if not self._maps_as(Partial):
            return super()._relinearize(out, direction, need_input_grad)
        active, passive = out[:, : self.active], out[:, self.active :]
        inner = self.layer._relinearize(active, direction, need_input_grad)
        rest = leaf(passive, need_input_grad)
        with torch.enable_grad():
            result = torch.cat([inner.outputs[0], rest], dim=1)
        n = len(inner.leaves)
        rebuilt = torch.cat([inner.rebuilt, passive], dim=1)
        return Relinearized(rebuilt, (result, inner.outputs[1]), (*inner.leaves, rest),
                            lambda grads: torch.cat([inner.join(grads[:n]), grads[n]], dim=1))

    def inverse_atol(self) -> float:
        return self.layer.inverse_atol()

    @property
    def inverse_kind(self) -> str:  # type: ignore[override]
        return self.layer.inverse_kind

    @property
    def logdet_kind(self) -> str:  # type: ignore[override]
        return self.layer.logdet_kind

    def extra_repr(self) -> str:
        return f"channels={self.active}"
