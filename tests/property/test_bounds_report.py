"""Bounds never below measured values, over the registry (hypothesis), and the stability report's pointer.

``test_contract.py`` already holds each example's own ``lipschitz_bounds()`` against its measured singular values.
What is new here: local bounds (finite where global ones do not exist, e.g. affine couplings), the composed model
bounds, the per-layer report, and the report naming a layer that was made ill-conditioned on purpose.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from invertible import ActNorm, AffineCoupling, Invertible1x1Conv, InvertibleModule, Partial, Sequential
from invertible.bounds import local_bounds, model_bounds, stability_report
from invertible.diagnostics import singular_values
from invertible.nets import ZeroConv2d
from invertible.testing import get_example
from invertible.testing import strategies as its

NAMES = its.example_names()
SEQUENTIAL = [n for n in NAMES if issubclass(get_example(n).layer or object, Sequential)]
RTOL = 1e-9


def _measured(module: InvertibleModule, x: torch.Tensor) -> tuple[float, float]:
    sv = singular_values(module, x)
    return float(sv[:, 0].max()), float((1 / sv[:, -1]).max())


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_local_bounds_are_not_below_measured_singular_values(name: str, data: st.DataObject) -> None:
    module, x = data.draw(its.examples(name))
    module.eval()
    bounds = local_bounds(module, x)
    fwd, inv = _measured(module, x)
    if bounds.forward is not None:
        assert fwd <= bounds.forward * (1 + RTOL), (fwd, bounds)
    if bounds.inverse is not None:
        assert inv <= bounds.inverse * (1 + RTOL), (inv, bounds)
    glob = module.lipschitz_bounds()
    # a local bound exists wherever a global one does (it may be tighter, never missing)
    assert (glob.forward is None or bounds.forward is not None) and (glob.inverse is None or bounds.inverse is not None)


@pytest.mark.parametrize("name", SEQUENTIAL)
@settings(max_examples=4)  # a model and all its layers measured exactly per example
@given(data=st.data())
def test_composed_bounds_and_the_per_layer_report_hold_on_models(name: str, data: st.DataObject) -> None:
    module, x = data.draw(its.examples(name))
    report = stability_report(module, x)
    assert report.violations() == []
    for a, b in zip(report.bounds, module.lipschitz_bounds()):  # the same product, maybe in another order
        assert (a is None and b is None) or a == pytest.approx(b, rel=1e-12)
    assert model_bounds(module) == module.lipschitz_bounds()
    fwd, inv = _measured(module, x)
    assert report.sigma_max == pytest.approx(fwd, rel=1e-9) and report.inverse_lipschitz == pytest.approx(inv, rel=1e-6)
    for bound, measured in ((report.local.forward, fwd), (report.local.inverse, inv),
                            (report.bounds.forward, fwd), (report.bounds.inverse, inv)):
        assert bound is None or measured <= bound * (1 + RTOL)
    # every layer's measurement is that layer's own Jacobian at its own input
    assert len(report.layers) == sum(1 for _ in _leaves(module))


def _leaves(module: InvertibleModule):  # type: ignore[no-untyped-def]
    for layer in module:  # type: ignore[attr-defined]
        if isinstance(layer, Sequential):
            yield from _leaves(layer)
        else:
            yield layer


def _inner(layer: InvertibleModule) -> InvertibleModule:
    return layer.layer if isinstance(layer, Partial) else layer  # type: ignore[return-value]


def _can_sabotage(layer: InvertibleModule) -> bool:
    inner = _inner(layer)
    return ((isinstance(inner, ActNorm) and inner.max_scale is None and inner.eps == 0)
            or isinstance(inner, Invertible1x1Conv)
            or (isinstance(inner, AffineCoupling) and inner.scale_fn in ("sigmoid", "exp")))


def _sabotage(layer: InvertibleModule) -> None:
    """Make one layer's inverse explode: ``1 / sigma_min`` of at least ``e^12``."""
    inner = _inner(layer)
    with torch.no_grad():
        if isinstance(inner, ActNorm):
            inner.log_scale[0] = -12.0
        elif isinstance(inner, Invertible1x1Conv):
            if inner.lu:
                inner.log_s[0] = -12.0
            else:
                inner.weight[:, 0] *= 1e-6
        else:
            last = list(inner.net.modules())[-1] if not isinstance(inner.net[-1], ZeroConv2d) else inner.net[-1]
            if isinstance(last, ZeroConv2d):
                last.logs.zero_()  # output scale 1, so that the bias below is the raw scale's offset
                last = last.conv
            last.bias[1::2] = -25.0  # the raw scales: s = sigmoid(-23) or exp(-25), up to the weights' part


@pytest.mark.parametrize("name", SEQUENTIAL)
@settings(max_examples=4)
@given(data=st.data())
def test_the_report_names_the_layer_made_ill_conditioned(name: str, data: st.DataObject) -> None:
    module, x = data.draw(its.examples(name))
    module.eval()
    with torch.no_grad():
        module(x)  # data-dependent initialisation first, so that it cannot undo the sabotage
    leaves = list(_leaves(module))
    candidates = [i for i, layer in enumerate(leaves) if _can_sabotage(layer)]
    assert candidates, f"{name} has no layer this test can make ill-conditioned"
    index = data.draw(st.sampled_from(candidates))
    _sabotage(leaves[index])
    report = stability_report(module, x, whole_model=False)
    assert report.exploding_layer.split(":")[0] == str(index), str(report)
    assert report.worst_inverse.inverse_lipschitz > 1e5
    assert report.violations() == []
