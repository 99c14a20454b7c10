"""Registered examples of the residual-flow family: ``ResidualBlock``, ``ResidualFlow``, ``DenseResidualFlow``.

Every example uses the exact (brute-force) log-det, so the shared suite checks log-dets exactly, and a tight
fixed-point tolerance (``atol=1e-13``, ``rtol`` at its floor of ``32 eps``), so round trips are checked at the
level of the conditioning. The hypothesis spaces draw the exactly normalised spectral norms only: with
``method="power"`` the normalisation refreshes ``u``/``v`` whenever a weight changes, which finite differences
in ``gradcheck`` see and the analytic gradient (``u``, ``v`` held constant, as in residual-flows) does not;
power iteration is covered by the fixed configurations and by ``tests/numerical/test_residual_*``. The models'
spaces always include ActNorm layers (the stability-report property makes one of them ill-conditioned). ``size``
(and ``channels`` of ``residual_flow``) let the mpmath reference rebuild the examples tiny.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...base import InvertibleModule
from ...layers.activations import make_activation
from ...layers.residual import ResidualBlock
from ...layers.spectral_norm import SpectralNormConv2d, SpectralNormLinear
from ...models import DenseResidualFlow, ResidualFlow
from ..registry import randomize_, register
from .core import input_shape, sample_input

SHAPES = ("image", "flat")
ACTIVATIONS = ("swish", "maxmin", "lcube", "softplus", "elu", "fullsort")
INVERSE = {"atol": 1e-15, "rtol": 0.0}


def _space(**choices: Any) -> Any:
    from hypothesis import strategies as st

    from ..strategies import batch_sizes, scales, seeds

    space = {"batch": batch_sizes(), "seed": seeds(), "scale": scales()}
    space.update({k: st.sampled_from(v) for k, v in choices.items()})
    return space


def _branch(kind: str, channels: int, size: int, hidden: int, activation: str, coeff: float, method: str,
            padding_mode: str, generator: torch.Generator) -> nn.Sequential:
    sn: dict[str, Any] = {"coeff": coeff, "method": method, "atol": 1e-6, "rtol": 0.0, "generator": generator}
    if kind == "image":
        spatial = {"input_size": (size, size), "padding_mode": padding_mode}
        return nn.Sequential(
            SpectralNormConv2d(channels, hidden, 3, **spatial, **sn), make_activation(activation),
            SpectralNormConv2d(hidden, hidden, 1, **sn), make_activation(activation),
            SpectralNormConv2d(hidden, channels, 3, **spatial, **sn),
        )
    return nn.Sequential(
        make_activation(activation), SpectralNormLinear(channels, hidden, **sn), make_activation(activation),
        SpectralNormLinear(hidden, channels, **sn),
    )


@register("residual_block", layer=ResidualBlock,
          configs=[{"kind": k, "method": m} for k in SHAPES for m in ("exact", "power")]
          + [{"kind": "flat", "activation": a} for a in ACTIVATIONS[1:]]
          + [{"inverse_grad": "unrolled"}, {"newton_refine": True},
             {"kind": "image", "padding_mode": "circular", "size": 3}],  # a 3x3 kernel needs a circular grid >= 3
          space=lambda: _space(kind=SHAPES, activation=ACTIVATIONS, coeff=(0.5, 0.9, 0.97),
                               inverse_grad=("auto", "unrolled"), newton_refine=(False, True)))
def residual_block(kind: str = "flat", method: str = "exact", activation: str = "swish", coeff: float = 0.9,
                   inverse_grad: str = "auto", newton_refine: bool = False, padding_mode: str = "zeros",
                   size: int = 4, batch: int = 3, seed: int = 0, scale: float = 1.0) -> tuple[InvertibleModule, Any]:
    generator = torch.Generator().manual_seed(seed)
    channels, size, hidden = (2, size, 6) if kind == "image" else (4, 1, 8)
    net = _branch(kind, channels, size, hidden, activation, coeff, method, padding_mode, generator)
    block = ResidualBlock(net, channels=channels, ranks=(4,) if kind == "image" else (2,),
                          inverse_grad=inverse_grad, newton_refine=newton_refine, **INVERSE)
    randomize_(block, 0.3, seed)
    return block.double(), sample_input(input_shape(kind, batch, channels, size), seed, scale)


@register("residual_flow", layer=ResidualFlow,
          configs=[{}, {"sn_method": "power"}, {"logit": False}, {"actnorm": False, "first_preact": True},
                   {"levels": 3, "channels": 1, "size": 4}],  # three levels need a size divisible by 4
          space=lambda: _space(logit=(True, False), coeff=(0.7, 0.98)))
def residual_flow(logit: bool = True, actnorm: bool = True, first_preact: bool = False, coeff: float = 0.9,
                  sn_method: str = "exact", levels: int = 2, channels: int = 3, size: int = 4, batch: int = 2,
                  seed: int = 0, scale: float = 1.0) -> tuple[InvertibleModule, Any]:
    # two levels: a conv block, squeeze, the fully connected tail; three: a conv block on every level
    blocks = (1, 0) if levels == 2 else (1, 1, 1)
    shape = (batch, channels, size, size)
    model = ResidualFlow(shape[1:], blocks=blocks, hidden=6, fc_blocks=1, fc_hidden=6, coeff=coeff,
                         actnorm=actnorm, first_preact=first_preact, logit=0.05 if logit else None, logdet="exact",
                         sn_method=sn_method, sn_atol=1e-6, sn_rtol=0.0, seed=seed, **INVERSE)
    randomize_(model, 0.1, seed)
    if logit:  # the logit transform is defined on [0, 1]
        generator = torch.Generator().manual_seed(seed)
        return model.double(), torch.rand(shape, generator=generator, dtype=torch.float64)
    return model.double(), sample_input(shape, seed, scale)


@register("dense_residual_flow", layer=DenseResidualFlow,
          configs=[{}, {"actnorm": False}, {"dim": 2, "sn_method": "power"}, {"zero_init_last": True}],
          space=lambda: _space(dim=(1, 2, 3, 5), coeff=(0.5, 0.8, 0.97)))
def dense_residual_flow(dim: int = 3, actnorm: bool = True, coeff: float = 0.8, sn_method: str = "exact",
                        zero_init_last: bool = False, batch: int = 3, seed: int = 0, scale: float = 1.0
                        ) -> tuple[InvertibleModule, Any]:
    model = DenseResidualFlow(dim, blocks=2, hidden=(8, 8), coeff=coeff, actnorm=actnorm, sn_method=sn_method,
                              sn_atol=1e-6, sn_rtol=0.0, zero_init_last=zero_init_last, seed=seed, **INVERSE)
    if not zero_init_last:
        randomize_(model, 0.2, seed)
    return model.double(), sample_input((batch, dim), seed, scale)
