"""Reference maps of the coupling networks' parts: convolutions, linear layers, activations, Glow's ZeroConv2d.

Each factory reads the module's parameters (exactly, as ``mpf``) and returns a map of one sample. Only the
configurations the library builds are supported (stride 1, no dilation, no groups, zero padding); anything else
raises instead of being approximated.
"""

from __future__ import annotations

import mpmath
import numpy as np
from mpmath import mp, mpf
from torch import nn

from ..layers.nets import NetActNorm, ZeroConv2d, ZeroLinear
from .arith import MPArray, conv2d, elementwise, from_tensor, linear, per_channel, sigmoid
from .registry import Builder, NetMap, register_net_reference

__all__: list[str] = []


@register_net_reference(nn.Sequential)
def _sequential(module: nn.Module, builder: Builder) -> NetMap:
    parts = [builder.net(child) for child in module]

    def run(x: MPArray) -> MPArray:
        for part in parts:
            x = part(x)
        return x

    return run


def _conv_map(conv: nn.Conv2d) -> NetMap:
    if conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1 or conv.padding_mode != "zeros":
        raise NotImplementedError(f"the reference conv2d supports stride 1, dilation 1, groups 1 and zero padding "
                                  f"only, got {conv}")
    if isinstance(conv.padding, str):
        raise NotImplementedError(f"the reference conv2d needs integer padding, got {conv.padding!r}")
    weight = from_tensor(conv.weight)
    bias = None if conv.bias is None else from_tensor(conv.bias)
    padding = (int(conv.padding[0]), int(conv.padding[1]))
    return lambda x: conv2d(x, weight, bias, padding)


@register_net_reference(nn.Conv2d)
def _conv(module: nn.Module, builder: Builder) -> NetMap:
    return _conv_map(module)  # type: ignore[arg-type]


@register_net_reference(nn.Linear, ZeroLinear)
def _linear(module: nn.Module, builder: Builder) -> NetMap:
    weight = from_tensor(module.weight)
    bias = None if module.bias is None else from_tensor(module.bias)
    return lambda x: linear(x, weight, bias)


@register_net_reference(ZeroConv2d)
def _zero_conv(module: nn.Module, builder: Builder) -> NetMap:
    # Glow's last layer: conv3x3(x) * exp(logscale_factor * logs) per output channel
    conv = _conv_map(module.conv)
    factor = mpf(float(module.logscale_factor))
    gain = np.array([mp.exp(factor * v) for v in from_tensor(module.logs)], dtype=object)
    return lambda x: conv(x) * per_channel(gain, x.ndim)


@register_net_reference(NetActNorm)
def _net_actnorm(module: nn.Module, builder: Builder) -> NetMap:
    actnorm = builder.layer(module.actnorm)
    return lambda x: actnorm(x)[0]


_relu = elementwise(lambda v: v if v > 0 else mpf(0))
_tanh = elementwise(lambda v: mp.tanh(v))
_silu = elementwise(lambda v: v / (1 + mp.exp(-v)))


@register_net_reference(nn.ReLU)
def _relu_ref(module: nn.Module, builder: Builder) -> NetMap:
    return _relu


@register_net_reference(nn.Tanh)
def _tanh_ref(module: nn.Module, builder: Builder) -> NetMap:
    return _tanh


@register_net_reference(nn.SiLU)
def _silu_ref(module: nn.Module, builder: Builder) -> NetMap:
    return _silu


@register_net_reference(nn.Sigmoid)
def _sigmoid_ref(module: nn.Module, builder: Builder) -> NetMap:
    return sigmoid


@register_net_reference(nn.Identity)
def _identity_ref(module: nn.Module, builder: Builder) -> NetMap:
    return lambda x: x


@register_net_reference(nn.ELU)
def _elu_ref(module: nn.Module, builder: Builder) -> NetMap:
    alpha = mpf(float(module.alpha))
    return elementwise(lambda v: v if v > 0 else alpha * mpmath.expm1(v))


@register_net_reference(nn.LeakyReLU)
def _leaky_ref(module: nn.Module, builder: Builder) -> NetMap:
    slope = mpf(float(module.negative_slope))
    return elementwise(lambda v: v if v > 0 else slope * v)
