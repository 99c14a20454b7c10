"""``invertible.testing.strategies`` and the error model's helpers: their documented examples run, and the
strategies draw what they say (shapes, dtypes, reproducible inputs, every registered example).

Also the matrix-free path of ``check_invertible`` (inputs above ``max_jacobian_dims``): Lanczos singular values
stand in for exact ones, the checks that need exact Jacobians are skipped and said to be, and a wrong inverse is
still caught.
"""

from __future__ import annotations

import doctest
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import NonInteractiveExampleWarning

import invertible.testing.check
import invertible.testing.strategies
import invertible.testing.tolerances
from invertible import InvertibleModule, ResidualBlock
from invertible.layers.residual_logdet import LogDetEstimator
from invertible.testing import ContractError, check_invertible, get_example
from invertible.testing import strategies as its


@pytest.mark.parametrize("module", [invertible.testing.strategies, invertible.testing.tolerances,
                                    invertible.testing.check], ids=lambda m: m.__name__)
def test_documented_examples_run(module: object) -> None:
    with warnings.catch_warnings():  # the docstrings show strategies with .example(), as one explores them
        warnings.simplefilter("ignore", NonInteractiveExampleWarning)
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0


@given(its.shapes(kind="image", batch=(2, 2), channels=(3, 4), sizes=(2, 4)))
def test_shapes_respect_their_ranges(shape: tuple[int, ...]) -> None:
    assert shape[0] == 2 and shape[1] in (3, 4) and shape[2] == shape[3] and shape[2] in (2, 4)


@given(its.inputs(its.shapes(kind="flat"), dtype=torch.float32), st.data())
def test_inputs_follow_shape_and_dtype_and_are_reproducible(x: torch.Tensor, data: st.DataObject) -> None:
    assert x.dtype == torch.float32 and x.dim() == 2 and bool(torch.isfinite(x).all())
    seed = data.draw(its.seeds())
    a = data.draw(its.inputs((2, 3), scale=1.0))
    assert a.shape == (2, 3)
    assert torch.equal(its._normal((2, 3), seed, 1.0, 0.0, torch.float64),
                       its._normal((2, 3), seed, 1.0, 0.0, torch.float64))


def test_bad_shape_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="kind must be"):
        its.shapes(kind="volume")


@settings(max_examples=len(its.example_names()) * 2)
@given(its.named_examples())
def test_named_examples_cover_the_registry(drawn: tuple) -> None:
    name, module, x = drawn
    assert name in its.example_names()
    y, logdet = module(x)
    assert logdet.shape == x.shape[:1] and y.shape[0] == x.shape[0]


def _glow() -> tuple[object, torch.Tensor]:
    module, x = get_example("glow").build(split=False, coupling="affine")
    return module.eval(), x


def test_above_max_jacobian_dims_lanczos_replaces_exact_jacobians() -> None:
    module, x = _glow()
    report = check_invertible(module, x, max_jacobian_dims=16)  # D = 32
    exact = check_invertible(module, x)
    assert "logdet_exact" not in report.measured and "logdet_exact" in exact.measured
    assert any("above max_jacobian_dims" in n for n in report.notes)
    # Lanczos approaches the extreme singular values from inside; within 5% of the exact condition number here
    assert report.measured["condition_number"] == pytest.approx(exact.measured["condition_number"], rel=0.05)


class _OffInverse(InvertibleModule):
    """``inner`` whose inverse is off by 1e-3 relative."""

    def __init__(self, inner: InvertibleModule) -> None:
        super().__init__(channels=None, ranks=(2, 4))
        self.inner = inner

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inner(x)

    def _inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, logdet = self.inner.inverse(y)
        return x * (1 + 1e-3), logdet


def test_above_max_jacobian_dims_a_wrong_inverse_is_still_caught() -> None:
    module, x = _glow()
    broken = _OffInverse(module).float()
    with pytest.raises(ContractError, match="roundtrip_forward") as info:
        check_invertible(broken, x.float(), max_jacobian_dims=16)
    assert "Lanczos estimate failed" not in str(info.value)
    report = check_invertible(_OffInverse(module).float(), x.float(), max_jacobian_dims=16, raise_on_failure=False)
    assert not any("failed" in n for n in report.notes), report.notes


def test_an_estimated_logdet_is_not_held_to_the_exact_tolerances_and_the_report_says_so() -> None:
    exact, x = get_example("residual_block").build()
    block = ResidualBlock(exact.nnet, channels=4, ranks=(2,), logdet=LogDetEstimator(method="series", n_terms=1),
                          atol=1e-15, rtol=0.0).eval()
    assert block.logdet_kind == "estimated"
    report = check_invertible(block, x)
    assert "logdet_exact" not in report.measured and any("logdet_kind='estimated'" in n for n in report.notes)
    assert "roundtrip_forward" in report.measured  # the map itself is still checked
