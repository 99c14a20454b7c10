"""Coupling networks (Glow's conv net, MLPs), upper bounds on their Lipschitz constants, and interval bounds of
their outputs.

These are plain ``nn.Module`` maps ``h = net(x1)``, not invertible layers; they live beside the layers that use
them (couplings, learned splits), above :mod:`~invertible.layers.actnorm` (which :class:`NetActNorm` wraps).

- :func:`lipschitz_bound` walks an ``nn.Sequential`` and multiplies per-module bounds; ``None`` when it meets a
  module it cannot bound.
- :func:`interval_bounds` propagates a box through a network (interval arithmetic); :func:`net_bounds` falls
  back on the Lipschitz bound around the box's centre for networks it does not know.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .actnorm import ActNorm

__all__ = ["NetActNorm", "ZeroConv2d", "ZeroLinear", "conv_net", "interval_bounds", "lipschitz_bound", "mlp",
           "net_bounds"]


class ZeroConv2d(nn.Module):
    """3x3 convolution with zero-initialised weight and bias and a learned output scale ``exp(3 * logs)``.

    Glow's last coupling layer: the coupling starts as the identity (additive) or a constant scaling (affine).
    """

    def __init__(self, in_channels: int, out_channels: int, logscale_factor: float = 3.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.logs = nn.Parameter(torch.zeros(out_channels))
        self.logscale_factor = logscale_factor

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x) * torch.exp(self.logs * self.logscale_factor).view(1, -1, 1, 1)


class ZeroLinear(nn.Linear):
    """Linear layer with zero-initialised weight and bias."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features)
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)


class NetActNorm(nn.Module):
    """ActNorm used as a normalisation inside a coupling network (returns only the output)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.actnorm = ActNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.actnorm(x)[0]


def conv_net(
    in_channels: int, out_channels: int, hidden: int = 512, *, actnorm: bool = False, zero_init: bool = True
) -> nn.Sequential:
    """Glow's coupling network: conv3x3 -> ReLU -> conv1x1 -> ReLU -> conv3x3.

    Args:
        actnorm: the first two convolutions lose their bias and are followed by ActNorm (Glow; the paper's
            ``--use-actnorm-in-blocks``).
        zero_init: the last convolution is a :class:`ZeroConv2d` (the paper's ``--zero-init``); otherwise a plain
            3x3 convolution with PyTorch's default initialisation.
    """
    layers: list[nn.Module] = [nn.Conv2d(in_channels, hidden, 3, padding=1, bias=not actnorm)]
    layers += [NetActNorm(hidden)] if actnorm else []
    layers += [nn.ReLU(), nn.Conv2d(hidden, hidden, 1, bias=not actnorm)]
    layers += [NetActNorm(hidden)] if actnorm else []
    layers += [nn.ReLU()]
    layers += [ZeroConv2d(hidden, out_channels) if zero_init else nn.Conv2d(hidden, out_channels, 3, padding=1)]
    return nn.Sequential(*layers)


_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh, "silu": nn.SiLU}


def mlp(
    in_features: int,
    out_features: int,
    hidden: int = 64,
    *,
    layers: int = 2,
    zero_init: bool = True,
    activation: str = "relu",
) -> nn.Sequential:
    """``layers`` hidden layers of width ``hidden`` with an activation after each, then a linear output layer.

    The output layer is zero-initialised when ``zero_init`` (so couplings start near the identity).
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"mlp: activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    act = _ACTIVATIONS[activation]
    modules: list[nn.Module] = []
    width = in_features
    for _ in range(layers):
        modules += [nn.Linear(width, hidden), act()]
        width = hidden
    modules.append(ZeroLinear(width, out_features) if zero_init else nn.Linear(width, out_features))
    return nn.Sequential(*modules)


def _spectral_norm(matrix: Tensor) -> float:
    return float(torch.linalg.matrix_norm(matrix.detach().double(), ord=2))


def _conv_bound(conv: nn.Conv2d) -> float:
    # y[p] = W_mat @ stack_o(x[p + o]): each input entry appears in at most kh*kw stacks, so
    # ||y|| <= sqrt(kh * kw) * sigma_max(W_mat) * ||x|| (zero padding, any stride, groups=1).
    if conv.groups != 1:
        raise ValueError("lipschitz_bound: grouped convolutions are not supported")
    kh, kw = conv.kernel_size
    return math.sqrt(kh * kw) * _spectral_norm(conv.weight.reshape(conv.out_channels, -1))


def lipschitz_bound(net: nn.Module) -> float | None:
    """An upper bound on the Lipschitz constant (Euclidean norm) of ``net``, or ``None`` if unknown."""
    if isinstance(net, nn.Sequential):
        total = 1.0
        for module in net:
            bound = lipschitz_bound(module)
            if bound is None:
                return None
            total *= bound
        return total
    if isinstance(net, (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Identity)):
        return 1.0 if not isinstance(net, nn.LeakyReLU) else max(1.0, abs(net.negative_slope))
    if isinstance(net, nn.ELU):
        return max(1.0, net.alpha)
    if isinstance(net, nn.SiLU):
        return 1.1  # sup |d/dx x sigmoid(x)| = 1.0998...
    if isinstance(net, nn.Linear):
        return _spectral_norm(net.weight)
    if isinstance(net, nn.Conv2d):
        return _conv_bound(net)
    if isinstance(net, ZeroConv2d):
        with torch.no_grad():
            return _conv_bound(net.conv) * float(torch.exp(net.logs.double() * net.logscale_factor).max())
    if isinstance(net, NetActNorm):
        return net.actnorm.lipschitz_bounds().forward
    bound = getattr(net, "lipschitz_bound", None)
    return bound() if callable(bound) else None


_MONOTONE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.ELU, nn.Softplus, nn.Identity)
_SILU_ARGMIN, _SILU_MIN = -1.2784645427610738, -0.2784645427610738


def _ibp(module: nn.Module, c: Tensor, r: Tensor) -> tuple[Tensor, Tensor] | None:
    """Centre/radius interval propagation; ``None`` for a module it does not know."""
    if isinstance(module, nn.Sequential):
        for m in module:
            out = _ibp(m, c, r)
            if out is None:
                return None
            c, r = out
        return c, r
    if isinstance(module, nn.Linear):
        w = module.weight.double()
        b = None if module.bias is None else module.bias.double()
        return F.linear(c, w, b), F.linear(r, w.abs())
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            return None
        args = (module.stride, module.padding, module.dilation, module.groups)
        w = module.weight.double()
        b = None if module.bias is None else module.bias.double()
        return F.conv2d(c, w, b, *args), F.conv2d(r, w.abs(), None, *args)
    if isinstance(module, ZeroConv2d):
        out = _ibp(module.conv, c, r)
        if out is None:
            return None
        scale = torch.exp(module.logs.double() * module.logscale_factor).view(1, -1, 1, 1)
        return out[0] * scale, out[1] * scale
    if isinstance(module, NetActNorm):
        layer = module.actnorm
        view = (1, -1, *([1] * (c.dim() - 2)))
        scale = layer.scale().double().view(view)
        return (c + layer.bias.double().view(view)) * scale, r * scale
    lo, hi = c - r, c + r
    if isinstance(module, _MONOTONE) or (isinstance(module, nn.LeakyReLU) and module.negative_slope >= 0):
        lo, hi = module(lo), module(hi)
    elif isinstance(module, nn.SiLU):
        f_lo, f_hi = F.silu(lo), F.silu(hi)
        inside = (lo <= _SILU_ARGMIN) & (hi >= _SILU_ARGMIN)
        lo = torch.where(inside, torch.full_like(lo, _SILU_MIN), torch.minimum(f_lo, f_hi))
        hi = torch.maximum(f_lo, f_hi)
    else:
        return None
    return (lo + hi) / 2, (hi - lo) / 2


def interval_bounds(net: nn.Module, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor] | None:
    """Entrywise bounds ``[lo', hi']`` of ``net(x)`` over the box ``lo <= x <= hi`` (float64).

    Interval arithmetic in centre/radius form through ``nn.Sequential`` stacks of ``Linear``, ``Conv2d`` (zero
    padding), :class:`ZeroConv2d` and :class:`NetActNorm`, and the activations ReLU, LeakyReLU, Tanh, Sigmoid,
    ELU, Softplus and SiLU. Returns ``None`` for any other module.

    Example:
        >>> net = nn.Sequential(nn.Linear(1, 1), nn.ReLU())
        >>> with torch.no_grad():
        ...     _ = net[0].weight.fill_(-2.0), net[0].bias.fill_(1.0)
        >>> interval_bounds(net, torch.tensor([[0.0]]), torch.tensor([[1.0]]))
        (tensor([[0.]], dtype=torch.float64), tensor([[1.]], dtype=torch.float64))
    """
    lo, hi = lo.detach().double(), hi.detach().double()
    with torch.no_grad():
        out = _ibp(net, (lo + hi) / 2, (hi - lo) / 2)
    return None if out is None else (out[0] - out[1], out[0] + out[1])


def net_bounds(net: nn.Module, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor] | None:
    """Interval bounds of ``net`` on the box: :func:`interval_bounds`, or, for a network it does not know,
    ``net(centre) +- Lip(net) * radius`` from :func:`lipschitz_bound` (``None`` if neither applies)."""
    out = interval_bounds(net, lo, hi)
    if out is not None:
        return out
    lip = lipschitz_bound(net)
    if lip is None:
        return None
    centre, radius = (lo + hi) / 2, float(((hi - lo) / 2).double().norm())
    with torch.no_grad():
        param = next(net.parameters(), None)
        h = net(centre.to(param.dtype) if param is not None else centre).double()
    return h - lip * radius, h + lip * radius
