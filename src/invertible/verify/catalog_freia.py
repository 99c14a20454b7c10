"""FrEIA 0.2 layers (``FrEIA.modules``), each wrapped by :class:`invertible.adapters.FrEIA`."""

from __future__ import annotations

import torch

from ..adapters import FrEIA
from .catalog import DT, Built, context, conv, entry, flat, image, initialised, jitter, mlp


def _fm():  # type: ignore[no-untyped-def]
    import FrEIA.modules as fm

    return fm


def _wrap(module, **kind) -> FrEIA:  # type: ignore[no-untyped-def]
    return FrEIA(jitter(module), **kind).double()


@entry("FrEIA", "AllInOneBlock(permute_soft=True)")
def _all_in_one_soft() -> Built:
    return _wrap(_fm().AllInOneBlock([(6,)], subnet_constructor=mlp, permute_soft=True)), flat(), None


@entry("FrEIA", "AllInOneBlock(permute_soft=False)")
def _all_in_one_hard() -> Built:
    return _wrap(_fm().AllInOneBlock([(6,)], subnet_constructor=mlp)), flat(), None


@entry("FrEIA", "AllInOneBlock(conv, learned_householder_permutation=2)")
def _all_in_one_householder() -> Built:
    block = _fm().AllInOneBlock([(4, 4, 4)], subnet_constructor=conv, learned_householder_permutation=2)
    return _wrap(block), image(), None


@entry("FrEIA", "NICECouplingBlock")
def _nice() -> Built:
    return _wrap(_fm().NICECouplingBlock([(6,)], subnet_constructor=mlp)), flat(), None


@entry("FrEIA", "RNVPCouplingBlock")
def _rnvp() -> Built:
    return _wrap(_fm().RNVPCouplingBlock([(6,)], subnet_constructor=mlp)), flat(), None


@entry("FrEIA", "GLOWCouplingBlock(conv)")
def _glow() -> Built:
    return _wrap(_fm().GLOWCouplingBlock([(4, 4, 4)], subnet_constructor=conv)), image(), None


@entry("FrEIA", "GINCouplingBlock")
def _gin() -> Built:
    return _wrap(_fm().GINCouplingBlock([(6,)], subnet_constructor=mlp)), flat(), None


@entry("FrEIA", "AffineCouplingOneSided")
def _one_sided() -> Built:
    return _wrap(_fm().AffineCouplingOneSided([(6,)], subnet_constructor=mlp)), flat(), None


@entry("FrEIA", "GLOWCouplingBlock(conditional)")
def _glow_conditional() -> Built:
    block = _fm().GLOWCouplingBlock([(6,)], dims_c=[(3,)], subnet_constructor=mlp)
    return _wrap(block), flat(), context()


@entry("FrEIA", "ConditionalAffineTransform")
def _conditional_affine() -> Built:
    block = _fm().ConditionalAffineTransform([(6,)], dims_c=[(3,)], subnet_constructor=mlp)
    return _wrap(block), flat(), context()


@entry("FrEIA", "PermuteRandom")
def _permute() -> Built:
    return _wrap(_fm().PermuteRandom([(6,)], seed=0)), flat(), None


@entry("FrEIA", "FixedLinearTransform")
def _fixed_linear() -> Built:
    g = torch.Generator().manual_seed(4)
    m = torch.eye(6) + 0.3 * torch.randn(6, 6, generator=g)
    return _wrap(_fm().FixedLinearTransform([(6,)], M=m, b=torch.randn(6, generator=g))), flat(), None


@entry("FrEIA", "Fixed1x1Conv")
def _fixed_conv() -> Built:
    g = torch.Generator().manual_seed(4)
    m = torch.eye(4) + 0.3 * torch.randn(4, 4, generator=g)
    return _wrap(_fm().Fixed1x1Conv([(4, 4, 4)], M=m)), image(), None


@entry("FrEIA", "ActNorm")
def _actnorm() -> Built:
    return initialised(FrEIA(_fm().ActNorm([(4, 4, 4)])).double(), image())


@entry("FrEIA", "IResNetLayer", "an iterative inverse (50 fixed-point steps, no tolerance: inverse_atol=1e-6) and "
       "a stochastic log-det (a 20-term power series with Hutchinson traces), as its docstring describes")
def _iresnet() -> Built:
    block = _fm().IResNetLayer([(6,)], internal_size=16, spectral_norm_max=0.7)
    block.lipschitz_correction()  # the contraction FrEIA's docs ask for (in float32: it draws its probes in the
    # default dtype, so after .double() it raises a dtype error)
    adapter = FrEIA(block, inverse_kind="iterative", inverse_atol=1e-6, logdet_kind="estimated")
    return adapter.double(), flat(), None


@entry("FrEIA", "InvAutoAct")
def _inv_auto_act() -> Built:
    return _wrap(_fm().InvAutoAct([(6,)])), flat(), None


@entry("FrEIA", "InvAutoActTwoSided")
def _inv_auto_act_two_sided() -> Built:
    return _wrap(_fm().InvAutoActTwoSided([(6,)])), flat(), None


@entry("FrEIA", "LearnedElementwiseScaling")
def _learned_scaling() -> Built:
    return _wrap(_fm().LearnedElementwiseScaling([(6,)])), flat(), None


@entry("FrEIA", "InvAutoFC")
def _inv_auto_fc() -> Built:
    return _wrap(_fm().InvAutoFC([(6,)])), flat(), None


@entry("FrEIA", "InvAutoConv2D")
def _inv_auto_conv() -> Built:
    return _wrap(_fm().InvAutoConv2D([(4, 4, 4)])), image(), None


@entry("FrEIA", "InvertibleSigmoid")
def _sigmoid() -> Built:
    return _wrap(_fm().InvertibleSigmoid([(6,)])), flat(), None


@entry("FrEIA", "IRevNetDownsampling")
def _irevnet_down() -> Built:
    return _wrap(_fm().IRevNetDownsampling([(4, 4, 4)])), image(), None


@entry("FrEIA", "HaarDownsampling")
def _haar() -> Built:
    return _wrap(_fm().HaarDownsampling([(4, 4, 4)])), image(), None


@entry("FrEIA", "OrthogonalTransform")
def _orthogonal() -> Built:
    # as built: its weight is orthogonal and its inverse the transpose (noise would make the transpose wrong; FrEIA
    # re-projects the weight onto the orthogonal matrices every 256 training steps)
    return FrEIA(_fm().OrthogonalTransform([(6,)])).double(), flat(), None


@entry("FrEIA", "HouseholderPerm")
def _householder() -> Built:
    return _wrap(_fm().HouseholderPerm([(6,)], n_reflections=3)), flat(), None


__all__: list[str] = []
_ = DT
