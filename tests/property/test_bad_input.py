"""Bad input gets a clear error that names the layer and the problem, and changes nothing."""

from __future__ import annotations

import pytest
import torch

import invertible
from invertible import ActNorm, AffineCoupling, Invertible1x1Conv, Logit, Permutation, Sequential, Squeeze
from invertible.models import Glow


@pytest.mark.parametrize(
    "layer, x, message",
    [
        (ActNorm(3), torch.randn(2, 3, 4, 4, 1), r"ActNorm.forward expects input of shape \(batch, 3"),
        (ActNorm(3), torch.randn(2, 4, 4, 4), r"expects input of shape .* got \(2, 4, 4, 4\)"),
        (AffineCoupling(4, hidden=4), torch.randn(2, 4),
         r"AffineCoupling.forward expects input of shape \(batch, 4, H, W\)"),
        (Squeeze(), torch.randn(1, 1, 7, 7), r"divisible by 2, got 7x7; pad the input"),
        (Squeeze(), torch.randn(2, 3), r"Squeeze.forward expects input of shape \(batch, C, H, W\)"),
        (Logit(), torch.full((1, 2), 1.5), r"inputs in \[0, 1\]"),
    ],
)
def test_wrong_shapes_and_values_are_refused(layer: invertible.InvertibleModule, x: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        layer(x)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_inputs_are_refused_in_both_directions(bad: float) -> None:
    flow = Sequential(ActNorm(2, data_init=False), Permutation(2, kind="reverse"))
    x = torch.zeros(3, 2)
    x[1, 0] = bad
    for call in (flow, flow.inverse):
        with pytest.raises(ValueError, match=r"non-finite input.*sample 1|sample 1.*non-finite"):
            call(x)


def test_allow_nonfinite_lets_diagnostics_through() -> None:
    flow = Sequential(ActNorm(2, data_init=False), Permutation(2, kind="reverse"))
    x = torch.tensor([[1.0, float("inf")]])
    with invertible.allow_nonfinite():
        y, _ = flow(x)
    assert torch.isinf(y[0, 0]) and y[0, 1] == 1.0
    with pytest.raises(ValueError):  # the switch does not outlive the block
        flow(x)


@pytest.mark.parametrize("make", [lambda n: Permutation(n), lambda n: Invertible1x1Conv(n),
                                  lambda n: Invertible1x1Conv(n, lu=True), lambda n: ActNorm(n)])
def test_state_dict_of_another_size_is_refused_by_name(make) -> None:  # type: ignore[no-untyped-def]
    small, big = make(3), make(5)
    before = {k: v.clone() for k, v in small.state_dict().items()}
    with pytest.raises(ValueError, match=r"cannot load .* holds shape \(5.*needs \(3.*another size"):
        small.load_state_dict(big.state_dict())
    for k, v in small.state_dict().items():  # nothing was half-loaded
        assert torch.equal(v, before[k]), k


def test_corrupted_permutation_is_refused() -> None:
    layer = Permutation(4)
    state = layer.state_dict()
    state["perm"] = torch.tensor([0, 0, 1, 2])
    with pytest.raises(ValueError, match="not a permutation"):
        layer.load_state_dict(state)


def test_dtype_mismatch_says_how_to_fix_it() -> None:
    with pytest.raises(TypeError, match=r"layer.to\(x.device, x.dtype\)"):
        ActNorm(2)(torch.randn(3, 2, dtype=torch.float64))


def test_integer_input_is_refused() -> None:
    with pytest.raises(TypeError, match="floating-point"):
        Permutation(2)(torch.ones(3, 2, dtype=torch.long))


def test_glow_rejects_an_impossible_architecture() -> None:
    with pytest.raises(ValueError, match=r"divisible by 8; got 28x28"):
        Glow((1, 28, 28), levels=3, depth=1, hidden=4)


def test_actnorm_inverse_before_initialisation_is_refused() -> None:
    with pytest.raises(ValueError, match="not been initialised"):
        ActNorm(2).inverse(torch.randn(3, 2))


def test_unknown_scale_function_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="scale_fn must be one of"):
        AffineCoupling(4, scale_fn="softplus")


def test_sequential_refuses_non_invertible_modules() -> None:
    with pytest.raises(TypeError, match="not an InvertibleModule"):
        Sequential(torch.nn.Linear(2, 2))  # type: ignore[arg-type]
