"""Masked autoregressive transforms: the autoregressive property from the exact Jacobian, the masks from the
degrees, and the cost of the sequential inverse.

The property is checked on the map itself, not on the masks: ``d theta_i / d x_j`` (the MADE's output) and
``d y_i / d x_j`` (the layer) must be exactly zero unless ``x_j`` comes before ``x_i`` in the order the layer
was built with (``y_i`` may also depend on ``x_i``), and the Jacobian must be triangular once the entries are
sorted in that order. A MADE with one mask entry flipped fails it (negative control).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor

from invertible import MADE, MaskedAffineAutoregressive, MaskedSplineAutoregressive
from invertible.testing import check_invertible, exact_jacobian, randomize_

F64 = torch.float64


def degrees_of(order: list[int]) -> Tensor:
    """``deg[order[t]] = t + 1``: the position of each entry in the order, computed here from the order given."""
    degrees = torch.empty(len(order), dtype=torch.long)
    for t, i in enumerate(order):
        degrees[i] = t + 1
    return degrees


def autoregressive_violations(fn, x: Tensor, degrees: Tensor, strict: bool) -> list[str]:  # type: ignore[no-untyped-def]
    """Entries ``[i, j]`` of the exact Jacobian of ``fn`` (rows flattened to ``(D, ...)``) that are not zero although
    ``x_j`` does not come before ``x_i`` (``strict``: ``j == i`` counts too, as for the MADE's parameters)."""
    features = x.shape[1]
    jac = exact_jacobian(lambda v: fn(v).reshape(v.shape[0], features, -1).transpose(1, 2).reshape(v.shape[0], -1),
                         x).reshape(x.shape[0], -1, features, features).abs().amax(dim=(0, 1))
    later = degrees[None, :] >= degrees[:, None] if strict else degrees[None, :] > degrees[:, None]
    jac, bad = jac.detach(), (jac != 0) & later
    return [f"d[{i}]/dx[{j}] = {float(jac[i, j]):.3g} but x[{j}] (degree {int(degrees[j])}) does not come before "
            f"entry {i} (degree {int(degrees[i])})" for i, j in bad.nonzero().tolist()]


def _layer(kind: str, features: int, order: list[int], layers: int, hidden: int, seed: int):  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    if kind == "affine":
        module = MaskedAffineAutoregressive(features, hidden=hidden, layers=layers, order=order, zero_init=False)
    else:
        module = MaskedSplineAutoregressive(features, bins=3, bound=2.0, hidden=hidden, layers=layers, order=order,
                                            zero_init=False)
    return randomize_(module, 0.3, seed).double()


ORDERS = {"forward": lambda d: list(range(d)), "reverse": lambda d: list(range(d))[::-1],
          "shuffle": lambda d: torch.randperm(d, generator=torch.Generator().manual_seed(d)).tolist()}
SHAPES = [(1, 1, 4), (2, 2, 3), (5, 2, 8), (6, 1, 4), (7, 3, 9)]  # (features, hidden layers, width)


@pytest.mark.parametrize("kind", ["affine", "spline"])
@pytest.mark.parametrize("order_name", list(ORDERS))
@pytest.mark.parametrize("features, layers, hidden", SHAPES)
def test_jacobian_is_triangular_in_the_order(kind: str, order_name: str, features: int, layers: int,
                                             hidden: int) -> None:
    order = ORDERS[order_name](features)
    module = _layer(kind, features, order, layers, hidden, seed=features)
    degrees = degrees_of(order)
    assert torch.equal(module.made.degrees, degrees)
    x = 1.5 * torch.randn(4, features, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert autoregressive_violations(module.made, x, degrees, strict=True) == []
    assert autoregressive_violations(lambda v: module(v)[0], x, degrees, strict=False) == []
    # not vacuous: each entry depends on its own input, and on most earlier ones (a ReLU that is off at every
    # sample can cut a path)
    jac = exact_jacobian(lambda v: module(v)[0], x)
    assert bool((jac.diagonal(dim1=1, dim2=2).abs() > 0).all())
    if features > 1:
        earlier = degrees[None, :] < degrees[:, None]
        assert float((jac.abs().amax(dim=0)[earlier] > 0).double().mean()) >= 0.5
    sorted_jac = jac[:, order][:, :, order]
    assert bool((sorted_jac.triu(diagonal=1) == 0).all())


def _broken(made: MADE) -> MADE:
    """Flip one mask entry of the first layer: hidden unit ``k`` (degree ``m``) now sees an input ``j`` of degree
    at least ``m + 2``, so the parameters of an entry of degree ``m + 1`` (< ``deg_j``) depend on ``x_j``."""
    broken = copy.deepcopy(made)
    first = broken.masked_layers()[0]
    hidden_degrees = torch.arange(first.mask.shape[0]) % max(made.features - 1, 1) + 1
    k, j = ((hidden_degrees[:, None] + 2 <= made.degrees[None, :]) & (first.mask == 0)).nonzero()[0].tolist()
    with torch.no_grad():
        first.mask[k, j] = 1.0
        first.weight[k, j] = 3.0  # a nonzero weight on the new connection
    return broken


def test_negative_control_a_broken_mask_fails_the_property() -> None:
    module = _layer("spline", 5, [2, 0, 4, 1, 3], layers=2, hidden=8, seed=1)
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(2), dtype=F64)
    degrees = degrees_of([2, 0, 4, 1, 3])
    assert autoregressive_violations(module.made, x, degrees, strict=True) == []
    module.made = _broken(module.made)
    assert autoregressive_violations(module.made, x, degrees, strict=True)
    assert autoregressive_violations(lambda v: module(v)[0], x, degrees, strict=False)
    with pytest.raises(ValueError, match="not autoregressive"):
        module.made.check_masks()


def test_masks_follow_the_degree_rules() -> None:
    """Recomputed here from the documented rules: hidden degrees ``k mod max(D - 1, 1) + 1``; input ``i`` feeds
    hidden ``k`` iff ``m_k >= deg_i``; hidden to hidden iff the degree does not decrease; hidden ``k`` feeds the
    parameters of entry ``i`` iff ``deg_i > m_k``; output unit ``i * params + j``."""
    order = [3, 1, 0, 2]
    made = MADE(4, params=5, hidden=7, layers=3, order=order)
    degrees = degrees_of(order)
    hidden = torch.tensor([k % 3 + 1 for k in range(7)])
    masks = [m.mask for m in made.masked_layers()]
    assert len(masks) == 4
    assert torch.equal(masks[0], (hidden[:, None] >= degrees[None, :]).to(masks[0].dtype))
    for mask in masks[1:3]:
        assert torch.equal(mask, (hidden[:, None] >= hidden[None, :]).to(mask.dtype))
    out = torch.tensor([int(degrees[u // 5]) for u in range(20)])
    assert torch.equal(masks[3], (out[:, None] > hidden[None, :]).to(masks[3].dtype))


def test_a_state_dict_with_broken_masks_is_refused_and_changes_nothing() -> None:
    module = _layer("affine", 4, [0, 1, 2, 3], layers=2, hidden=6, seed=3)
    state = copy.deepcopy(module.state_dict())
    bad = copy.deepcopy(state)
    bad["made.net.0.mask"] = torch.ones_like(bad["made.net.0.mask"])
    bad["made.net.0.weight"] = bad["made.net.0.weight"] + 1.0
    with pytest.raises(ValueError, match="MADE cannot load this state dict: the masks connect input"):
        module.load_state_dict(bad)
    for key, value in module.state_dict().items():
        assert torch.equal(value, state[key]), key
    bad_degrees = copy.deepcopy(state)
    bad_degrees["made.degrees"] = torch.tensor([4, 3, 2, 1])  # the masks of the order 0, 1, 2, 3 under another order
    with pytest.raises(ValueError, match="not autoregressive"):
        module.load_state_dict(bad_degrees)


@pytest.mark.parametrize("kind", ["affine", "spline"])
def test_the_inverse_runs_one_made_pass_per_entry(kind: str) -> None:
    """Forward: 1 pass; inverse: exactly ``D`` passes (the sequential inverse the docstrings state)."""
    features = 6
    module = _layer(kind, features, list(range(features)), layers=2, hidden=8, seed=0)
    calls = []
    module.made.register_forward_hook(lambda *args: calls.append(1))
    x = torch.randn(5, features, generator=torch.Generator().manual_seed(0), dtype=F64)
    y, _ = module(x)
    assert len(calls) == 1
    calls.clear()
    module.inverse(y)
    assert len(calls) == features


def test_iaf_is_the_inverse_wrapper() -> None:
    """An inverse autoregressive flow is ``Inverse(MAF)``: its forward is the sequential direction."""
    from invertible import Inverse

    module = Inverse(_layer("spline", 3, [1, 2, 0], layers=1, hidden=4, seed=5))
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    check_invertible(module, x)
