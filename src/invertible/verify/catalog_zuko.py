"""zuko 1.6 transformations (lazy transforms of ``zuko.flows`` and ``zuko.transforms``), each wrapped by
:class:`invertible.adapters.Zuko`."""

from __future__ import annotations

import torch

from ..adapters import Zuko
from .catalog import Built, context, entry, flat, jitter

#: unit round-offs per entry of a rational-quadratic spline's log-det: the formula our own splines declare
#: (the same Durkan et al. formula, log g' = 2 log s + log(...) - 2 log(denominator))
from ..layers.spline_math import SPLINE_LOGDET_ROUNDING as RQ  # noqa: E402


def _zf():  # type: ignore[no-untyped-def]
    import zuko

    return zuko


def _wrap(transform, **kind) -> Zuko:  # type: ignore[no-untyped-def]
    return Zuko(jitter(transform), **kind).double()


@entry("zuko", "MaskedAutoregressiveTransform(affine)")
def _maf() -> Built:
    t = _zf().flows.MaskedAutoregressiveTransform(6, hidden_features=(16, 16))
    return _wrap(t), flat(), None


@entry("zuko", "MaskedAutoregressiveTransform(affine, context)")
def _maf_context() -> Built:
    t = _zf().flows.MaskedAutoregressiveTransform(6, context=3, hidden_features=(16, 16))
    return _wrap(t), flat(), context()


@entry("zuko", "MaskedAutoregressiveTransform(rational-quadratic spline)")
def _nsf() -> Built:
    z = _zf()
    t = z.flows.MaskedAutoregressiveTransform(6, univariate=z.transforms.MonotonicRQSTransform,
                                              shapes=[(8,), (8,), (7,)], hidden_features=(16, 16))
    return _wrap(t, logdet_rounding=RQ), flat(), None


@entry("zuko", "GeneralCouplingTransform(affine)")
def _coupling() -> Built:
    return _wrap(_zf().flows.GeneralCouplingTransform(6, hidden_features=(16, 16))), flat(), None


@entry("zuko", "GeneralCouplingTransform(spline, context)")
def _coupling_spline() -> Built:
    z = _zf()
    t = z.flows.GeneralCouplingTransform(6, context=3, univariate=z.transforms.MonotonicRQSTransform,
                                         shapes=[(8,), (8,), (7,)], hidden_features=(16, 16))
    return _wrap(t, logdet_rounding=RQ), flat(), context()


@entry("zuko", "ElementWiseTransform(affine)")
def _elementwise() -> Built:
    return _wrap(_zf().flows.ElementWiseTransform(6)), flat(), None


@entry("zuko", "SOSPF transform (sum-of-squares polynomial)", "an iterative inverse (bisection to zuko's documented "
       "absolute tolerance eps=1e-6: inverse_atol=1e-6)")
def _sospf() -> Built:
    t = _zf().flows.SOSPF(6, transforms=1, hidden_features=(16, 16)).transform
    return _wrap(t, inverse_kind="iterative", inverse_atol=1e-6), flat(), None


@entry("zuko", "BPF transform (Bernstein polynomial)", "an iterative inverse (bisection, eps=1e-6: "
       "inverse_atol=1e-6)")
def _bpf() -> Built:
    t = _zf().flows.BPF(6, transforms=1, hidden_features=(16, 16)).transform
    return _wrap(t, inverse_kind="iterative", inverse_atol=1e-6), flat(), None


@entry("zuko", "NAF transform (monotonic neural network)", "an iterative inverse (bisection, eps=1e-6: "
       "inverse_atol=1e-6)")
def _naf() -> Built:
    t = _zf().flows.NAF(6, transforms=1, hidden_features=(16, 16)).transform
    return _wrap(t, inverse_kind="iterative", inverse_atol=1e-6), flat(), None


@entry("zuko", "CNF transform (free-form Jacobian, exact trace)", "an iterative inverse (an adaptive ODE solver "
       "with atol=1e-6, rtol=1e-5: inverse_atol=1e-5)")
def _cnf() -> Built:
    t = _zf().flows.FFJTransform(6, hidden_features=(16, 16), exact=True)
    return _wrap(t, inverse_kind="iterative", inverse_atol=1e-5), flat(), None


@entry("zuko", "RotationTransform")
def _rotation() -> Built:
    z = _zf()
    g = torch.Generator().manual_seed(4)
    return _wrap(z.lazy.UnconditionalTransform(z.transforms.RotationTransform, torch.randn(6, 6, generator=g))), \
        flat(), None


@entry("zuko", "LULinearTransform")
def _lu() -> Built:
    z = _zf()
    g = torch.Generator().manual_seed(4)
    lu = torch.eye(6) + 0.3 * torch.randn(6, 6, generator=g)
    return _wrap(z.lazy.UnconditionalTransform(z.transforms.LULinearTransform, lu)), flat(), None


@entry("zuko", "PermutationTransform")
def _permutation() -> Built:
    z = _zf()
    t = z.lazy.UnconditionalTransform(z.transforms.PermutationTransform, torch.randperm(6), buffer=True)
    return _wrap(t), flat(), None


@entry("zuko", "SoftclipTransform")
def _softclip() -> Built:
    z = _zf()
    return _wrap(z.lazy.UnconditionalTransform(z.transforms.SoftclipTransform, bound=3.0)), flat(), None
