"""Coupling masks: which entries are kept is exactly what the mask says, and bad masks are refused by name.

The contract suite already runs every mask through round trips and exact-Jacobian log-dets (catalogue entries
``mask=checkerboard`` and the 0/3/6 channel mask); here the partition itself is pinned: the entries marked
"conditions" come out unchanged and the others change (couplings built with random weights), and the Jacobian
has no path from a transformed entry to a kept one. Negative control: the same checks read against the opposite
mask fail.
"""

from __future__ import annotations

import pytest
import torch

import invertible
from invertible.layers.masks import ChannelMask, Checkerboard


def _layer(kind: str, mask: object, swap: bool = False) -> invertible.InvertibleModule:
    torch.manual_seed(0)
    net = "mlp" if kind == "vector" else "conv"
    return invertible.AffineCoupling(6, hidden=8, net=net, mask=mask, swap=swap, zero_init=False).double()


def _kept(layer: invertible.InvertibleModule, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        y, _ = layer(x)
    return (y - x).abs() == 0


@pytest.mark.parametrize("swap", [False, True])
def test_a_channel_mask_keeps_exactly_its_conditioning_channels(swap: bool) -> None:
    mask = [1, 0, 0, 1, 1, 0]
    for kind, shape in (("vector", (5, 6)), ("image", (5, 6, 4, 4))):
        layer = _layer(kind, mask, swap)
        kept = _kept(layer, torch.randn(*shape, dtype=torch.float64))
        conditions = torch.tensor(mask) == (1 if swap else 0)
        view = (1, 6) + (1,) * (len(shape) - 2)
        expected = conditions.view(view).expand(shape)
        assert torch.equal(kept, expected), kind
        assert not torch.equal(kept, ~expected)  # control: the opposite mask is not what happened


@pytest.mark.parametrize("swap", [False, True])
def test_a_checkerboard_keeps_every_other_pixel_at_every_channel(swap: bool) -> None:
    layer = _layer("image", "checkerboard", swap)
    x = torch.randn(3, 6, 4, 6, dtype=torch.float64)
    kept = _kept(layer, x)
    h, w = torch.arange(4)[:, None], torch.arange(6)[None, :]
    transformed = (h + w) % 2 == (0 if swap else 1)
    assert torch.equal(kept, (~transformed).expand_as(kept))
    # no path from a transformed entry to a kept one: those Jacobian entries are exactly zero
    x1 = x[:1]
    jac = torch.autograd.functional.jacobian(lambda v: layer(v)[0], x1).reshape(x1.numel(), x1.numel())
    rows = (~transformed).expand(6, 4, 6).reshape(-1)
    cols = transformed.expand(6, 4, 6).reshape(-1)
    assert float(jac[rows][:, cols].abs().max()) == 0.0
    assert float(jac[~rows][:, cols].abs().max()) > 0  # control: transformed entries do depend on each other


def test_checkerboard_on_vectors_alternates_channels() -> None:
    layer = _layer("vector", "checkerboard")
    kept = _kept(layer, torch.randn(4, 6, dtype=torch.float64))
    assert torch.equal(kept[0], torch.tensor([True, False] * 3))


@pytest.mark.parametrize("mask, message", [
    ([1, 0, 1], r"must hold 6 values"),
    ([0, 2, 0, 1, 0, 1], r"each 0 \(conditions\) or 1 \(transformed\)"),
    ([1] * 6, r"at least one conditioning \(0\) and one transformed \(1\)"),
    ([0] * 6, r"at least one conditioning \(0\) and one transformed \(1\)"),
    ("stripes", r"'checkerboard' or a 0/1 channel mask"),
])
def test_bad_masks_are_refused_by_name(mask: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        invertible.AffineCoupling(6, hidden=4, mask=mask)


def test_a_one_pixel_checkerboard_is_refused() -> None:
    with pytest.raises(ValueError, match="no conditioning entry.*use a channel mask"):
        Checkerboard(3).split(torch.zeros(1, 3, 1, 1))


def test_a_saved_mask_without_both_kinds_is_refused_and_changes_nothing() -> None:
    part = ChannelMask([0, 1, 0, 1])
    state = part.state_dict()
    state["mask"] = torch.ones(4, dtype=torch.bool)
    with pytest.raises(ValueError, match="at least one conditioning"):
        part.load_state_dict(state)
    assert part.mask.int().tolist() == [0, 1, 0, 1]
    good = ChannelMask([1, 1, 0, 0])
    part.load_state_dict(good.state_dict())
    x1, x2 = part.split(torch.arange(4.0).view(1, 4))
    assert x1.tolist() == [[2.0, 3.0]] and x2.tolist() == [[0.0, 1.0]]  # the loaded mask's indices are in use
