r"""Masked autoregressive transforms for vectors (MAF): a MADE conditioner with affine or spline transforms.

``y_i = tau(x_i; theta_i(x_<i))``, where ``x_<i`` are the entries before ``i`` in the autoregressive order and
``theta`` comes from one pass of a MADE network (Germain et al. 2015), whose weight masks are built from degrees:
input ``i`` has degree ``deg_i`` (its position in the order, 1..D), hidden unit ``k`` a degree ``m_k`` in
``1..max(D - 1, 1)`` (assigned cyclically), and the masks allow ``input i -> hidden k`` iff ``m_k >= deg_i``,
``hidden -> hidden`` iff the degree does not decrease, and ``hidden k -> output of i`` iff ``deg_i > m_k``. Every
path from ``x_j`` to ``theta_i`` therefore has ``deg_j <= m <= ... < deg_i``, so the Jacobian ``dy/dx`` is
triangular in the order (:meth:`MADE.connectivity` checks this from the masks).

The forward (density) direction is one network pass; the inverse (sampling) direction is **sequential**: ``x``
is rebuilt one entry at a time in the order, one network pass per entry (``D`` passes; measured in
``tests/numerical/test_autoregressive.py``: the inverse costs about ``D`` times the forward). Wrap a layer in
:class:`~invertible.Inverse` for an inverse autoregressive flow (IAF: fast sampling, sequential density).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base import Bounds, InvertibleModule
from ..nets import lipschitz_bound
from .spline_math import SPLINE_LOGDET_ROUNDING, SplineSettings, rq_forward, rq_inverse

__all__ = ["MADE", "MaskedAffineAutoregressive", "MaskedLinear", "MaskedSplineAutoregressive"]

AFFINE_SCALES = ("exp", "tanh_exp")


class MaskedLinear(nn.Module):
    """``y = (W * M) x + b`` with a fixed 0/1 mask ``M`` (a buffer, saved in the state dict).

    Not an ``nn.Linear`` subclass on purpose: a mask can raise the spectral norm above ``||W||``, so bounds and
    interval propagation written for plain linear layers must not apply. :meth:`lipschitz_bound` is
    ``||W * M||_2``.
    """

    def __init__(self, mask: Tensor, zero_init: bool = False) -> None:
        super().__init__()
        out_features, in_features = mask.shape
        layer = nn.Linear(in_features, out_features)  # PyTorch's default initialisation
        self.weight = nn.Parameter(torch.zeros_like(layer.weight) if zero_init else layer.weight.detach().clone())
        self.bias = nn.Parameter(torch.zeros_like(layer.bias) if zero_init else layer.bias.detach().clone())
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)

    def lipschitz_bound(self) -> float:
        return float(torch.linalg.matrix_norm((self.weight * self.mask).detach().double(), ord=2))

    def extra_repr(self) -> str:
        return f"in_features={self.mask.shape[1]}, out_features={self.mask.shape[0]}"


def _connectivity(masks: list[Tensor], features: int, params: int) -> Tensor:
    paths = torch.eye(features, dtype=torch.float64)
    for mask in masks:
        paths = (mask.detach().double().cpu() @ paths > 0).double()
    return paths.view(features, params, features).amax(dim=1) > 0


def _violation(degrees: Tensor, masks: list[Tensor], params: int) -> str | None:
    """What breaks the autoregressive property of masks under ``degrees`` (``None`` if nothing does)."""
    degrees = degrees.detach().cpu()
    bad = _connectivity(masks, degrees.numel(), params) & (degrees[None, :] >= degrees[:, None])
    if not bool(bad.any()):
        return None
    i, j = (int(v) for v in bad.nonzero()[0])
    return (f"the masks connect input {j} (degree {int(degrees[j])}) to the parameters of entry {i} (degree "
            f"{int(degrees[i])}): not autoregressive in the order; rebuild the masks from the degrees")


def _order(order: str | list[int] | Tensor, features: int) -> list[int]:
    if isinstance(order, str):
        if order not in ("forward", "reverse"):
            raise ValueError(f"order must be 'forward', 'reverse' or a permutation of range({features}), got {order!r}")
        return list(range(features)) if order == "forward" else list(range(features - 1, -1, -1))
    perm = [int(i) for i in (order.tolist() if isinstance(order, Tensor) else order)]
    if sorted(perm) != list(range(features)):
        raise ValueError(f"order must be a permutation of range({features}) (the entries in the order they are "
                         f"generated), got {perm}")
    return perm


class MADE(nn.Module):
    """Masked autoencoder for distribution estimation: ``theta = MADE(x)`` with ``theta_i`` depending on ``x_<i``.

    Args:
        features: ``D``, the number of input entries.
        params: raw parameters per entry (the output has shape ``(B, D, params)``).
        hidden: width of each hidden layer.
        layers: number of hidden layers (ReLU after each).
        order: the autoregressive order: ``"forward"`` (``0, 1, ..., D-1``), ``"reverse"``, or a permutation
            listing the entries in the order they are generated.
        zero_init: zero-initialise the output layer (the transform starts at its identity parameters).

    Output unit ``i * params + j`` is parameter ``j`` of entry ``i``. The degrees are buffers (``degrees``).

    Example:
        >>> made = MADE(3, params=2, hidden=8)
        >>> made(torch.randn(4, 3)).shape
        torch.Size([4, 3, 2])
        >>> made.connectivity().int()  # [i, j] = 1 where theta_i may depend on x_j
        tensor([[0, 0, 0],
                [1, 0, 0],
                [1, 1, 0]], dtype=torch.int32)
    """

    def __init__(self, features: int, params: int, *, hidden: int = 64, layers: int = 2,
                 order: str | list[int] | Tensor = "forward", zero_init: bool = True) -> None:
        super().__init__()
        if features < 1 or params < 1 or hidden < 1 or layers < 1:
            raise ValueError(f"MADE: features, params, hidden and layers must be >= 1, got {features}, {params}, "
                             f"{hidden}, {layers}")
        perm = _order(order, features)
        degrees = torch.empty(features, dtype=torch.long)
        degrees[perm] = torch.arange(1, features + 1)
        self.features, self.params = features, params
        self.register_buffer("degrees", degrees)
        hidden_degrees = torch.arange(hidden) % max(features - 1, 1) + 1
        modules: list[nn.Module] = []
        previous = degrees
        for _ in range(layers):
            modules += [MaskedLinear(hidden_degrees[:, None] >= previous[None, :]), nn.ReLU()]
            previous = hidden_degrees
        out_degrees = degrees.repeat_interleave(params)
        modules.append(MaskedLinear(out_degrees[:, None] > previous[None, :], zero_init=zero_init))
        self.net = nn.Sequential(*modules)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``theta`` of shape ``(B, D, params)``; ``context`` is reserved for conditional flows (must be None)."""
        if context is not None:
            raise NotImplementedError("MADE: context inputs are not supported yet")
        return self.net(x).view(x.shape[0], self.features, self.params)

    def masked_layers(self) -> list[MaskedLinear]:
        return [m for m in self.net if isinstance(m, MaskedLinear)]

    def connectivity(self) -> Tensor:
        """Boolean ``(D, D)``: entry ``[i, j]`` is True where a path of unmasked weights leads from ``x_j`` to
        some parameter of entry ``i``."""
        return _connectivity([m.mask for m in self.masked_layers()], self.features, self.params)

    def check_masks(self) -> None:
        """Raise ``ValueError`` if the masks let some ``theta_i`` depend on an ``x_j`` that is not before ``i``."""
        problem = _violation(self.degrees, [m.mask for m in self.masked_layers()], self.params)
        if problem:
            raise ValueError(f"MADE: {problem}")

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Refuse, before anything is loaded, a state dict whose masks and degrees are not autoregressive."""
        degrees = state_dict.get(prefix + "degrees", self.degrees)
        masks = [state_dict.get(f"{prefix}net.{i}.mask", m.mask) for i, m in enumerate(self.net)
                 if isinstance(m, MaskedLinear)]
        own = [m.mask for m in self.masked_layers()]
        if degrees.shape == self.degrees.shape and all(a.shape == b.shape for a, b in zip(masks, own)):
            problem = _violation(degrees, masks, self.params)
            if problem:
                raise ValueError(f"MADE cannot load this state dict: {problem}")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def lipschitz_bound(self) -> float | None:
        return lipschitz_bound(self.net)


class _Autoregressive(InvertibleModule):
    """One MADE pass forward; ``D`` passes (one per entry, in the order) inverse."""

    def __init__(self, features: int, params: int, hidden: int, layers: int, order: str | list[int] | Tensor,
                 zero_init: bool) -> None:
        super().__init__(channels=features, ranks=(2,))
        self.made = MADE(features, params, hidden=hidden, layers=layers, order=order, zero_init=zero_init)

    def _validate(self, x: Tensor, direction: str, outer: bool) -> None:
        try:
            super()._validate(x, direction, outer)
        except ValueError as err:
            if isinstance(x, Tensor) and x.dim() != 2:
                raise ValueError(f"{err}; autoregressive layers act on flat vectors: flatten images first "
                                 "(x.flatten(1)) or use SplineCoupling(net='conv')") from None
            raise

    def _transform(self, x: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
        """Elementwise ``(tau(x; theta), log tau')``; ``x`` ``(B, n)``, ``theta`` ``(B, n, params)``."""
        raise NotImplementedError

    def _untransform(self, y: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
        """Elementwise ``(tau^-1(y; theta), log tau'(tau^-1(y)))``."""
        raise NotImplementedError

    def raw_params(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``theta`` ``(B, D, params)``; ``theta_i`` depends on the entries before ``i`` only."""
        return self.made(x, context)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, logd = self._transform(x, self.raw_params(x))
        return y, logd.sum(dim=1)

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.zeros_like(y)
        logdet = y.new_zeros(y.shape[0])
        order = torch.argsort(self.made.degrees).tolist()
        for i in order:  # theta_i needs x_<i only, which earlier steps filled in
            theta = self.raw_params(x)[:, i : i + 1]
            xi, logd = self._untransform(y[:, i : i + 1], theta)
            x = torch.cat([x[:, :i], xi, x[:, i + 1 :]], dim=1)
            logdet = logdet - logd[:, 0]
        return x, logdet


def _affine_scale(h: Tensor, fn: str, max_scale: float) -> tuple[Tensor, Tensor]:
    log_s = h if fn == "exp" else math.log(max_scale) * torch.tanh(h)
    return torch.exp(log_s), log_s


class MaskedAffineAutoregressive(_Autoregressive):
    r"""Masked affine autoregressive transform (MAF): ``y_i = x_i s_i + t_i`` with ``(t_i, s_i)`` from ``x_<i``.

    Math:
        forward ``y_i = x_i s_i + t_i`` (one MADE pass), ``s_i = exp(h_i)`` (``"exp"``, MAF) or
        ``exp(log(M) tanh(h_i))`` (``"tanh_exp"``, in ``(1/M, M)``), ``(t_i, h_i) = MADE(x)_i``; inverse
        ``x_i = (y_i - t_i) / s_i`` for ``i`` in the order, **sequentially** (``D`` MADE passes);
        ``log|det J| = sum_i log s_i`` (the Jacobian is triangular in the order). No global Lipschitz bound
        exists (the off-diagonal entries contain ``x_i ds_i/dx_j``, unbounded in ``x_i``), so
        ``lipschitz_bounds()`` is ``(None, None)``, as for affine couplings.

    Args:
        features: ``D``.
        hidden, layers, order, zero_init: the MADE (:class:`MADE`).
        scale_fn: ``"exp"`` or ``"tanh_exp"``.
        max_scale: ``M`` of ``"tanh_exp"``.

    Example:
        >>> layer = MaskedAffineAutoregressive(3, hidden=8, zero_init=False).double()
        >>> x = torch.randn(4, 3, dtype=torch.float64)
        >>> y, logdet = layer(x)
        >>> x_back, logdet_inv = layer.inverse(y)  # three MADE passes
        >>> bool(torch.allclose(x_back, x, atol=1e-12)) and bool(torch.allclose(logdet_inv, -logdet))
        True
    """

    def __init__(self, features: int, *, hidden: int = 64, layers: int = 2, order: str | list[int] | Tensor =
                 "forward", zero_init: bool = True, scale_fn: str = "exp", max_scale: float = 2.0) -> None:
        if scale_fn not in AFFINE_SCALES:
            raise ValueError(f"MaskedAffineAutoregressive: scale_fn must be one of {AFFINE_SCALES}, got {scale_fn!r}")
        if scale_fn == "tanh_exp" and not max_scale > 1:
            raise ValueError(f"MaskedAffineAutoregressive: max_scale must be > 1, got {max_scale}")
        super().__init__(features, 2, hidden, layers, order, zero_init)
        self.scale_fn, self.max_scale = scale_fn, max_scale

    def _transform(self, x: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
        s, log_s = _affine_scale(theta[..., 1], self.scale_fn, self.max_scale)
        return x * s + theta[..., 0], log_s

    def _untransform(self, y: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
        s, log_s = _affine_scale(theta[..., 1], self.scale_fn, self.max_scale)
        return (y - theta[..., 0]) / s, log_s

    def extra_repr(self) -> str:
        return f"features={self.channels}, scale_fn={self.scale_fn!r}"


class MaskedSplineAutoregressive(_Autoregressive):
    r"""Masked rational-quadratic spline autoregressive transform: ``y_i = g(x_i; theta_i(x_<i))``.

    Math:
        forward ``y_i = g(x_i; theta_i)`` (:mod:`~invertible.layers.spline_math`, one MADE pass with
        ``3K - 1`` parameters per entry); inverse ``x_i = g^-1(y_i; theta_i)`` for ``i`` in the order,
        **sequentially** (``D`` MADE passes); ``log|det J| = sum_i log g'(x_i)``. The Jacobian is
        ``G + A`` with ``G = diag(g')`` and ``A`` strictly triangular in the order, ``||A|| <= a = C Lip(MADE)``
        (``C`` the parameter sensitivity of ``settings.global_bounds()``, ``Lip(MADE)`` the product of the
        masked weights' spectral norms). Hence ``Lip(f) <= upper + a`` and, since
        ``J^-1 = (I + G^-1 A)^-1 G^-1`` with ``G^-1 A`` nilpotent,
        ``Lip(f^-1) <= (sum_{j=0}^{D-1} (a / lower)^j) / lower``: global bounds for any parameters, growing
        geometrically with ``D`` (a sequential inverse can amplify errors at every step).

    Args:
        features: ``D``.
        bins, bound, min_width, min_height, min_derivative, max_derivative: the spline
            (:class:`~invertible.layers.spline_math.SplineSettings`).
        hidden, layers, order, zero_init: the MADE (:class:`MADE`).

    Example:
        >>> layer = MaskedSplineAutoregressive(3, bins=4, hidden=8, zero_init=False).double()
        >>> x = 2 * torch.randn(4, 3, dtype=torch.float64)
        >>> y, logdet = layer(x)
        >>> x_back, logdet_inv = layer.inverse(y)
        >>> bool(torch.allclose(x_back, x, atol=1e-10)) and bool(torch.allclose(logdet_inv, -logdet))
        True
    """

    logdet_rounding = SPLINE_LOGDET_ROUNDING

    def rounding_floor(self) -> float:
        return float(self.settings.bound)

    def __init__(self, features: int, *, bins: int = 8, bound: float = 3.0, min_width: float = 1e-3,
                 min_height: float = 1e-3, min_derivative: float = 1e-3, max_derivative: float = 1e3,
                 hidden: int = 64, layers: int = 2, order: str | list[int] | Tensor = "forward",
                 zero_init: bool = True) -> None:
        settings = SplineSettings(bins, bound, min_width, min_height, min_derivative, max_derivative)
        super().__init__(features, settings.params, hidden, layers, order, zero_init)
        self.settings = settings

    def _transform(self, x: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
        return rq_forward(x, self.settings.knots(theta))

    def _untransform(self, y: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
        return rq_inverse(y, self.settings.knots(theta))

    def lipschitz_bounds(self) -> Bounds:
        lip = self.made.lipschitz_bound()
        if lip is None:
            return Bounds(None, None)
        bounds = self.settings.global_bounds()
        a = bounds.sensitivity * lip
        ratio = a / bounds.lower
        d = self.channels
        if ratio == 1:
            series = float(d)
        elif ratio > 1 and d * math.log(ratio) > 700:  # beyond float64: a bound, but no useful one
            series = math.inf
        else:
            series = (ratio**d - 1) / (ratio - 1)
        return Bounds(bounds.upper + a, series / bounds.lower)

    def extra_repr(self) -> str:
        s = self.settings
        return f"features={self.channels}, bins={s.bins}, bound={s.bound}"
