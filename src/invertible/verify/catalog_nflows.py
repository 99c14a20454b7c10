"""nflows 0.14 transforms (``nflows.transforms``), each wrapped by :class:`invertible.adapters.NFlows`."""

from __future__ import annotations

import torch

from ..adapters import NFlows
from .catalog import Built, context, entry, flat, image, initialised, jitter

#: unit round-offs per entry of a rational-quadratic spline's log-det: the formula our own splines declare
#: (the same Durkan et al. formula, log g' = 2 log s + log(...) - 2 log(denominator))
from ..layers.spline_math import SPLINE_LOGDET_ROUNDING as RQ  # noqa: E402


def _nt():  # type: ignore[no-untyped-def]
    import nflows.transforms as nt

    return nt


def _net(features_context: int | None = None):  # type: ignore[no-untyped-def]
    from nflows.nn.nets import ResidualNet

    return lambda c_in, c_out: ResidualNet(c_in, c_out, hidden_features=16, context_features=features_context,
                                           num_blocks=1)


def _mask(dims: int = 6) -> torch.Tensor:
    return torch.arange(dims) % 2


def _wrap(transform, **kind) -> NFlows:  # type: ignore[no-untyped-def]
    return NFlows(jitter(transform), **kind).double()


@entry("nflows", "AffineCouplingTransform")
def _affine_coupling() -> Built:
    return _wrap(_nt().AffineCouplingTransform(_mask(), _net())), flat(), None


@entry("nflows", "AffineCouplingTransform(context)")
def _affine_coupling_context() -> Built:
    return _wrap(_nt().AffineCouplingTransform(_mask(), _net(3))), flat(), context()


@entry("nflows", "AdditiveCouplingTransform")
def _additive_coupling() -> Built:
    return _wrap(_nt().AdditiveCouplingTransform(_mask(), _net())), flat(), None


@entry("nflows", "PiecewiseRationalQuadraticCouplingTransform")
def _rq_coupling() -> Built:
    t = _nt().PiecewiseRationalQuadraticCouplingTransform(_mask(), _net(), num_bins=4, tails="linear", tail_bound=3.0)
    return _wrap(t, logdet_rounding=RQ), flat(), None


@entry("nflows", "PiecewiseCubicCouplingTransform")
def _cubic_coupling() -> Built:
    t = _nt().PiecewiseCubicCouplingTransform(_mask(), _net(), num_bins=4, tails="linear", tail_bound=3.0)
    return _wrap(t), flat(), None


@entry("nflows", "MaskedAffineAutoregressiveTransform")
def _maf() -> Built:
    return _wrap(_nt().MaskedAffineAutoregressiveTransform(6, hidden_features=16)), flat(), None


@entry("nflows", "MaskedPiecewiseRationalQuadraticAutoregressiveTransform(context)")
def _rq_maf() -> Built:
    t = _nt().MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
        6, hidden_features=16, context_features=3, num_bins=4, tails="linear", tail_bound=3.0)
    return _wrap(t, logdet_rounding=RQ), flat(), context()


@entry("nflows", "LULinear")
def _lu() -> Built:
    return _wrap(_nt().LULinear(6, identity_init=False)), flat(), None


@entry("nflows", "QRLinear")
def _qr() -> Built:
    return _wrap(_nt().QRLinear(6, num_householder=4)), flat(), None


@entry("nflows", "SVDLinear")
def _svd() -> Built:
    return _wrap(_nt().SVDLinear(6, num_householder=4)), flat(), None


@entry("nflows", "NaiveLinear")
def _naive() -> Built:
    return _wrap(_nt().NaiveLinear(6)), flat(), None


@entry("nflows", "OneByOneConvolution")
def _one_by_one() -> Built:
    return _wrap(_nt().OneByOneConvolution(4, identity_init=False)), image(), None


@entry("nflows", "HouseholderSequence")
def _householder() -> Built:
    return _wrap(_nt().HouseholderSequence(6, num_transforms=3)), flat(), None


@entry("nflows", "RandomPermutation")
def _permutation() -> Built:
    return _wrap(_nt().RandomPermutation(6)), flat(), None


@entry("nflows", "ActNorm")
def _actnorm() -> Built:
    return initialised(NFlows(_nt().ActNorm(6)).double(), flat(scale=2.0, offset=1.0))


@entry("nflows", "BatchNorm (eval)")
def _batchnorm() -> Built:
    adapter, x, c = initialised(NFlows(_nt().BatchNorm(6)).double(), flat(scale=2.0, offset=1.0))
    return adapter, x, c


@entry("nflows", "SqueezeTransform")
def _squeeze() -> Built:
    return _wrap(_nt().SqueezeTransform()), image(), None


@entry("nflows", "Tanh")
def _tanh() -> Built:
    return _wrap(_nt().Tanh()), flat(scale=0.5), None


@entry("nflows", "LeakyReLU")
def _leaky() -> Built:
    return _wrap(_nt().LeakyReLU(negative_slope=0.2)), flat(), None


@entry("nflows", "Sigmoid")
def _sigmoid() -> Built:
    return _wrap(_nt().Sigmoid()), flat(), None


@entry("nflows", "PiecewiseRationalQuadraticCDF")
def _rq_cdf() -> Built:
    cdf = _nt().PiecewiseRationalQuadraticCDF([6], num_bins=4, tails="linear", tail_bound=3.0)
    return _wrap(cdf, logdet_rounding=RQ), flat(), None
