"""The invertibility attack's mechanics on maps whose reconstruction error is known in closed form."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from invertible import InvertibleModule
from invertible.attack import invertibility_attack
from invertible.base import inverse_options, logdet_zeros
from invertible.models import DenseFlow
from invertible.testing import randomize_

F64 = torch.float64


class _Pole(InvertibleModule):
    """Identity forward; the inverse adds ``c / (t - y_0)`` to every entry, and Inf once ``y_0 >= t``.

    The reconstruction error ``sqrt(D) c / (t - x_0)`` grows with ``x_0`` only, so sign ascent moves ``x_0`` up by
    one step each iteration and leaves the other entries alone.
    """

    def __init__(self, threshold: float = 0.0, c: float = 1e-6) -> None:
        super().__init__(channels=2, ranks=(2,))
        self.threshold, self.c = threshold, c

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x * 1.0, logdet_zeros(x)

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return y + self.c / (self.threshold - y[:, :1]).clamp_min(0.0), logdet_zeros(y)


class _FixedPoint(InvertibleModule):
    """``y = x + a tanh(x)`` (``a < 1``) with a fixed-point inverse that honours ``invertible.iterative_inverse``."""

    inverse_kind = "iterative"

    def __init__(self, a: float = 0.5, max_iter: int = 200) -> None:
        super().__init__(channels=None, ranks=(2,))
        self.a, self.max_iter = a, max_iter

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x + self.a * torch.tanh(x), torch.log1p(self.a / torch.cosh(x) ** 2).sum(1)

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        options = inverse_options()
        x = y
        for _ in range(options.max_iter if options.max_iter is not None else self.max_iter):
            x = y - self.a * torch.tanh(x)
        return x, -torch.log1p(self.a / torch.cosh(x) ** 2).sum(1)


def test_sign_ascent_walks_to_the_pole_and_reports_the_first_non_finite_step() -> None:
    x = torch.tensor([[-0.35, 0.7], [-0.95, 0.2]], dtype=F64)
    result = invertibility_attack(_Pole(), x, radius=1.0, step_size=0.1, steps=8, random_start=False)
    # sample 0 crosses the pole at step 4 (x_0 = 0.05), sample 1 at step 10 (outside the budget)
    assert result.first_nonfinite.tolist() == [4, -1]
    assert result.attack_error.shape == (9, 2)
    expected0 = [math.sqrt(2) * 1e-6 / (0.35 - 0.1 * t) for t in range(4)]
    torch.testing.assert_close(result.accurate_error[:4, 0], torch.tensor(expected0, dtype=F64), rtol=1e-9, atol=0)
    assert bool(torch.isinf(result.accurate_error[4:, 0]).all())  # frozen at the non-finite iterate
    torch.testing.assert_close(result.distance[:, 1], torch.arange(9, dtype=F64) * 0.1, rtol=0, atol=1e-12)
    torch.testing.assert_close(result.x[:, 1], x[:, 1])  # the entry the error does not depend on never moves
    torch.testing.assert_close(result.x_worst[0], torch.tensor([0.05, 0.7], dtype=F64), rtol=0, atol=1e-12)
    assert math.isinf(float(result.growth[0])) and float(result.growth[1]) == pytest.approx(0.95 / (0.95 - 0.8))
    # analytic inverse: the attack graph and the accurate reconstruction are the same computation
    assert torch.equal(result.attack_error.nan_to_num(), result.accurate_error.nan_to_num())


def test_iterates_stay_in_the_ball_and_the_clamp_range() -> None:
    flow = DenseFlow(3, steps=2, hidden=8, zero_init=False).double()
    randomize_(flow, 0.3, 0)
    x = torch.rand(4, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    kwargs = dict(radius=0.2, step_size=0.07, steps=6, clamp=(0.0, 1.0))
    result = invertibility_attack(flow, x, generator=torch.Generator().manual_seed(1), **kwargs)
    assert bool((result.distance <= 0.2 + 1e-15).all())
    assert bool((result.x >= 0).all() and (result.x <= 1).all())
    assert bool(((result.x - x).abs() <= 0.2 + 1e-15).all())
    again = invertibility_attack(flow, x, generator=torch.Generator().manual_seed(1), **kwargs)
    assert torch.equal(result.x, again.x) and torch.equal(result.accurate_error, again.accurate_error)
    assert all(p.grad is None for p in flow.parameters())
    none = invertibility_attack(flow, x, steps=0, random_start=False)
    assert none.accurate_error.shape == (1, 4) and torch.equal(none.x, x)
    torch.testing.assert_close(none.accurate_error[0], none.clean_error)
    with pytest.raises(ValueError, match="step_size"):
        invertibility_attack(flow, x, step_size=0.0)


def test_iterative_inverses_are_unrolled_in_the_attack_graph_and_accurate_in_the_report() -> None:
    layer = _FixedPoint(a=0.5)
    x = torch.randn(3, 4, dtype=F64, generator=torch.Generator().manual_seed(2))
    result = invertibility_attack(layer, x, radius=0.1, step_size=0.02, steps=3, unroll=2,
                                  generator=torch.Generator().manual_seed(3))
    # recompute both errors at the recorded last iterate, independently of the attack
    with torch.no_grad():
        y = result.x + 0.5 * torch.tanh(result.x)
        short, long = y.clone(), y.clone()
        for _ in range(2):
            short = y - 0.5 * torch.tanh(short)
        for _ in range(200):
            long = y - 0.5 * torch.tanh(long)
    torch.testing.assert_close(result.attack_error[-1], (short - result.x).norm(dim=1), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(result.accurate_error[-1], (long - result.x).norm(dim=1), rtol=0, atol=1e-13)
    assert float(result.attack_error.min()) > 1e-3 and float(result.accurate_error.max()) < 1e-12
    # and the accurate inverse can be capped too
    capped = invertibility_attack(layer, x, radius=0.1, step_size=0.02, steps=0, random_start=False, unroll=2,
                                  accurate_max_iter=2)
    torch.testing.assert_close(capped.accurate_error, capped.attack_error)
