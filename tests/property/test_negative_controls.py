"""Negative controls: deliberately broken layers must make ``check_invertible`` fail, naming the property.

These show the suite catches what it claims to catch; a contract suite that passes broken layers is worthless.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from invertible import ActNorm, AffineCoupling, Invertible1x1Conv, Permutation, Squeeze
from invertible.base import Bounds
from invertible.testing import ContractError, check_invertible, randomize_


def _x(*shape: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _affine() -> AffineCoupling:
    torch.manual_seed(0)
    return randomize_(AffineCoupling(4, hidden=8, net="mlp")).double()  # type: ignore[return-value]


class WrongSignLogdet(AffineCoupling):
    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, logdet = super()._forward(x)
        return y, -logdet


class WrongInverse(AffineCoupling):
    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x, logdet = super()._inverse(y)
        return x + 1e-6, logdet


class InverseLogdetNotNegated(AffineCoupling):
    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x, logdet = super()._inverse(y)
        return x, -logdet


class BatchMixing(AffineCoupling):
    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, logdet = super()._forward(x)
        return y + 1e-3 * y.mean(0, keepdim=True), logdet


class MissingPositionFactor(ActNorm):
    """ActNorm whose log-det forgets the H*W positions per channel (a classic bug)."""

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, logdet = super()._forward(x)
        return y, logdet / (x.shape[2] * x.shape[3])


class StaleCache(Invertible1x1Conv):
    """Caches its inverse forever, ignoring parameter changes and state-dict loads."""

    def inverse_matrix(self) -> Tensor:
        if self._cache is None:
            self._cache = ((), self._inverse_matrix_uncached().detach())
        return self._cache[1]

    def _after_load(self, prefix: str) -> None:
        pass


class Doubling(Permutation):
    """Claims to be an isometry but doubles its input."""

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, _ = super()._forward(x)
        return 2 * y, x.new_full((x.shape[0],), x[0].numel() * torch.log(torch.tensor(2.0)).item())

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x, _ = super()._inverse(y / 2)
        return x, y.new_full((y.shape[0],), -y[0].numel() * torch.log(torch.tensor(2.0)).item())

    def lipschitz_bounds(self) -> Bounds:
        return Bounds(1.0, 1.0)


class ScalarLogdet(Squeeze):
    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, logdet = super()._forward(x)
        return y, logdet.sum()


def _broken(cls: type, *args: object, **kwargs: object) -> object:
    torch.manual_seed(0)
    module = cls(*args, **kwargs)
    return randomize_(module).double()


CASES = [
    ("wrong log-det sign", lambda: _broken(WrongSignLogdet, 4, hidden=8, net="mlp"), (3, 4), "logdet_exact"),
    ("wrong inverse", lambda: _broken(WrongInverse, 4, hidden=8, net="mlp"), (3, 4), "roundtrip_forward"),
    ("inverse log-det not negated", lambda: _broken(InverseLogdetNotNegated, 4, hidden=8, net="mlp"), (3, 4),
     "logdet_inverse"),
    ("batch mixing", lambda: _broken(BatchMixing, 4, hidden=8, net="mlp"), (3, 4), "batch_independence"),
    ("log-det missing H*W", lambda: _broken(MissingPositionFactor, 3, data_init=False), (2, 3, 4, 4),
     "logdet_exact"),
    ("stale cached inverse", lambda: _broken(StaleCache, 4), (2, 4, 2, 2), "state_dict"),
    ("bound below the measured value", lambda: Doubling(3, kind="reverse").double(), (2, 3), "bound_forward"),
    ("scalar log-det", lambda: ScalarLogdet().double(), (2, 1, 2, 2), "shapes"),
]


@pytest.mark.parametrize("label, build, shape, prop", CASES, ids=[c[0] for c in CASES])
def test_broken_layer_fails_the_named_check(label: str, build, shape: tuple[int, ...], prop: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ContractError, match=prop):
        check_invertible(build(), _x(*shape))


def test_the_healthy_parent_of_each_control_passes() -> None:
    """Guards against controls that fail for an unrelated reason: the unbroken layers pass."""
    check_invertible(_affine(), _x(3, 4))
    check_invertible(_broken(ActNorm, 3, data_init=False), _x(2, 3, 4, 4))
    check_invertible(_broken(Invertible1x1Conv, 4), _x(2, 4, 2, 2))
    check_invertible(Permutation(3, kind="reverse").double(), _x(2, 3))


def test_report_names_the_sample_and_the_size_of_the_error() -> None:
    with pytest.raises(ContractError) as info:
        check_invertible(_broken(WrongSignLogdet, 4, hidden=8, net="mlp"), _x(3, 4))
    message = str(info.value)
    assert "WrongSignLogdet" in message and "at sample" in message and "above the tolerance" in message


def test_report_without_raising_lists_failures() -> None:
    report = check_invertible(_broken(WrongInverse, 4, hidden=8, net="mlp"), _x(3, 4), raise_on_failure=False)
    assert not report.ok and any(f.startswith("roundtrip_forward") for f in report.failures)
