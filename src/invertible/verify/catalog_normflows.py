"""normflows 1.7.3 flows (``normflows.flows``), each wrapped by :class:`invertible.adapters.NormFlows`."""

from __future__ import annotations

import torch

from ..adapters import NormFlows
from .catalog import Built, context, entry, flat, image, initialised, jitter

#: unit round-offs per entry of a rational-quadratic spline's log-det: the formula our own splines declare
#: (the same Durkan et al. formula, log g' = 2 log s + log(...) - 2 log(denominator))
from ..layers.spline_math import SPLINE_LOGDET_ROUNDING as RQ  # noqa: E402


def _nf():  # type: ignore[no-untyped-def]
    import normflows as nf

    return nf


def _wrap(flow, **kind) -> NormFlows:  # type: ignore[no-untyped-def]
    return NormFlows(jitter(flow), **kind).double()


def _mlp(sizes: list[int], init_zeros: bool = True):  # type: ignore[no-untyped-def]
    return _nf().nets.MLP(sizes, init_zeros=init_zeros)


@entry("normflows", "AffineCouplingBlock")
def _affine_coupling() -> Built:
    return _wrap(_nf().flows.AffineCouplingBlock(_mlp([3, 16, 6]))), flat(), None


@entry("normflows", "AffineCouplingBlock(scale_map='sigmoid')")
def _affine_coupling_sigmoid() -> Built:
    return _wrap(_nf().flows.AffineCouplingBlock(_mlp([3, 16, 6]), scale_map="sigmoid")), flat(), None


@entry("normflows", "MaskedAffineFlow")
def _masked_affine() -> Built:
    b = (torch.arange(6) % 2).float()
    flow = _nf().flows.MaskedAffineFlow(b, t=_mlp([6, 16, 6]), s=_mlp([6, 16, 6]))
    return _wrap(flow), flat(), None


@entry("normflows", "GlowBlock")
def _glow_block() -> Built:
    return _wrap(_nf().flows.GlowBlock(4, 8, init_zeros=False)), image(), None


@entry("normflows", "Invertible1x1Conv(use_lu=True)")
def _conv_lu() -> Built:
    return _wrap(_nf().flows.Invertible1x1Conv(4, use_lu=True)), image(), None


@entry("normflows", "Invertible1x1Conv(use_lu=False)")
def _conv_dense() -> Built:
    return _wrap(_nf().flows.Invertible1x1Conv(4, use_lu=False)), image(), None


@entry("normflows", "InvertibleAffine(use_lu=True)")
def _invertible_affine() -> Built:
    return _wrap(_nf().flows.InvertibleAffine(6, use_lu=True)), flat(), None


@entry("normflows", "LULinearPermute")
def _lu_linear_permute() -> Built:
    return _wrap(_nf().flows.LULinearPermute(6, identity_init=False)), flat(), None


@entry("normflows", "Permute(shuffle)")
def _permute() -> Built:
    return _wrap(_nf().flows.Permute(6, mode="shuffle")), flat(), None


@entry("normflows", "ActNorm")
def _actnorm() -> Built:
    return initialised(NormFlows(_nf().flows.ActNorm((6,))).double(), flat(scale=2.0, offset=1.0))


@entry("normflows", "Squeeze")
def _squeeze() -> Built:
    return _wrap(_nf().flows.Squeeze()), image(), None


@entry("normflows", "CoupledRationalQuadraticSpline")
def _rq_coupling() -> Built:
    flow = _nf().flows.CoupledRationalQuadraticSpline(6, 1, 16, num_bins=4)
    return _wrap(flow, logdet_rounding=RQ), flat(), None


@entry("normflows", "AutoregressiveRationalQuadraticSpline(context)")
def _rq_autoregressive() -> Built:
    flow = _nf().flows.AutoregressiveRationalQuadraticSpline(6, 1, 16, num_context_channels=3, num_bins=4)
    return _wrap(flow, logdet_rounding=RQ), flat(), context()


@entry("normflows", "MaskedAffineAutoregressive")
def _maf() -> Built:
    return _wrap(_nf().flows.MaskedAffineAutoregressive(6, 16)), flat(), None


@entry("normflows", "Residual", "an iterative inverse (residual-flows' fixed point; its rule stops at a squared step "
       "below atol + rtol |y| = 1e-5 + 1e-5 |y|, so steps up to about 5e-3: inverse_atol=5e-3) and a stochastic "
       "log-det (Russian-roulette power series, unbiased by construction)")
def _residual() -> Built:
    net = _nf().nets.LipschitzMLP([6, 16, 6], init_zeros=False, lipschitz_const=0.7)
    flow = _nf().flows.Residual(net, reverse=False, reduce_memory=False)
    adapter = NormFlows(flow, inverse_kind="iterative", inverse_atol=5e-3, logdet_kind="estimated")
    return initialised(adapter.double(), flat())


@entry("normflows", "NormalizingFlow.forward_and_log_det",
       declared="wrapped with Callables(flow.forward_and_log_det, flow.inverse_and_log_det): the model-level API "
                "that normflows' training objectives call")
def _normalizing_flow() -> Built:
    from ..adapters import Callables

    nf = _nf()
    flows = [nf.flows.AffineCouplingBlock(_mlp([3, 16, 6])), nf.flows.Permute(6, mode="swap"),
             nf.flows.AffineCouplingBlock(_mlp([3, 16, 6]))]
    model = jitter(nf.NormalizingFlow(nf.distributions.DiagGaussian(6), flows))
    return Callables(model.forward_and_log_det, model.inverse_and_log_det).double(), flat(), None
