"""Negative controls: deliberately broken layers must make ``check_invertible`` fail, naming the property.

These show the suite catches what it claims to catch; a contract suite that passes broken layers is worthless.
The first group breaks well-conditioned float64 layers grossly; the second (``Defect``) breaks each property by
1e-3 on ill-conditioned registered flows (kappa 3.7e4 and 6.5e7), in float32 and in float64, and each healthy
parent passes: the tolerances discriminate where the old ``100 u kappa`` ones let a 1% wrong inverse through.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor

from invertible import ActNorm, AffineCoupling, Invertible1x1Conv, InvertibleModule, Permutation, Squeeze
from invertible.base import Bounds
from invertible.testing import ContractError, check_invertible, exact_jacobian, get_example, randomize_


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


# -- discrimination: defects of 1e-3 in float32 at kappa >= 1e4 (and in float64, ill-conditioned) ---------------
class Defect(InvertibleModule):
    """Wraps a registered flow and breaks exactly one property by ``size`` (0: the healthy parent).

    kinds: ``inverse`` (the inverse's output scaled by ``1 + size``: off by ``size`` relative), ``logdet`` and
    ``logdet_inv`` (a log-det off by ``size`` nats), ``batch`` (each output moves by ``size`` times the batch mean),
    ``dtype`` (the output comes back in the other precision), ``state`` (the output is scaled by a buffer that the
    state dict does not carry), ``bound_forward`` / ``bound_inverse`` (a declared Lipschitz bound ``size`` relative
    below the measured one).
    """

    def __init__(self, inner: InvertibleModule, kind: str, size: float, sigma: tuple[float, float] = (1.0, 1.0)
                 ) -> None:
        super().__init__(channels=None, ranks=(2, 4))
        self.inner, self.kind, self.size, self.sigma = inner, kind, size, sigma
        # the healthy parent keeps its gain in the state dict; the broken one leaves it out
        self.register_buffer("gain", torch.ones((), dtype=torch.float64), persistent=not (kind == "state" and size))

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, logdet = self.inner(x)
        if self.kind == "logdet":
            logdet = logdet + self.size
        if self.kind == "batch":
            y = y + self.size * y.mean(0, keepdim=True)
        if self.kind == "dtype" and self.size:
            y = y.float() if y.dtype == torch.float64 else y.double()
        if self.kind == "state":
            y = y * self.gain
        return y, logdet

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        if self.kind == "state":
            y = y / self.gain
        x, logdet = self.inner.inverse(y)
        if self.kind == "inverse":
            x = x * (1 + self.size)
        if self.kind == "logdet_inv":
            logdet = logdet + self.size
        return x, logdet

    def lipschitz_bounds(self) -> Bounds:
        # the healthy parent (size 0) declares the measured value plus 1e-9 relative (two SVDs of the same
        # Jacobian agree to ~kappa u, not bit for bit)
        factor = 1 - self.size if self.size else 1 + 1e-9
        if self.kind == "bound_forward":
            return Bounds(self.sigma[0] * factor, None)
        if self.kind == "bound_inverse":
            return Bounds(None, factor / self.sigma[1])
        return self.inner.lipschitz_bounds()


#: Ill-conditioned registered examples: the affine Glow (kappa 3.7e4 at its input) and an exp-scale coupling
#: (kappa 6.5e7).
ILL = [("glow", {"split": False, "coupling": "affine"}), ("affine_coupling", {"scale_fn": "exp", "order": "glow"})]
#: (defect, size, the check that must catch it, the failure it reports); each runs with only that check enabled.
DEFECTS = [
    ("inverse", 1e-3, "roundtrip_forward", "roundtrip_forward"),
    ("inverse", 1e-3, "roundtrip_inverse", "roundtrip_inverse"),
    ("logdet", 1e-3, "logdet_exact", "logdet_exact"),
    ("logdet", 1e-3, "logdet_inverse", "logdet_inverse"),
    ("logdet_inv", 1e-3, "logdet_exact_inverse", "logdet_exact_inverse"),
    ("logdet_inv", 1e-3, "logdet_inverse", "logdet_inverse"),
    ("batch", 1e-3, "batch_independence", "batch_independence"),
    ("dtype", 1.0, "shapes", "shapes: the output is torch.float"),
    ("state", 1.0, "state_dict", "state_dict_update"),
    ("bound_forward", 1e-3, "bounds", "bound_forward"),
    ("bound_inverse", 1e-3, "bounds", "bound_inverse"),
]


def _ill(example: tuple[str, dict], dtype: torch.dtype, kind: str, size: float) -> tuple[Defect, Tensor]:
    name, config = example
    inner, x = get_example(name).build(**config)
    inner, x = inner.to(dtype).eval(), x.to(dtype)
    with torch.no_grad():
        inner(x)
    ref = copy.deepcopy(inner).double()
    with torch.enable_grad():
        sv = torch.linalg.svdvals(exact_jacobian(lambda v: ref(v)[0], x.double()))
    module = Defect(inner, kind, size, (float(sv[:, 0].max()), float(sv[:, -1].min())))
    return module, x


def test_the_ill_conditioned_examples_are_ill_conditioned() -> None:
    for example, least in zip(ILL, (1e4, 1e7)):
        module, x = _ill(example, torch.float64, "none", 0.0)
        assert check_invertible(module, x).measured["condition_number"] >= least


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("example", ILL, ids=[e[0] for e in ILL])
def test_the_healthy_parents_of_the_ill_conditioned_controls_pass(example: tuple[str, dict], dtype: torch.dtype
                                                                   ) -> None:
    for kind in sorted({d[0] for d in DEFECTS}):
        module, x = _ill(example, dtype, kind, 0.0)
        check_invertible(module, x, name=f"healthy {kind}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("example", ILL, ids=[e[0] for e in ILL])
@pytest.mark.parametrize("kind, size, prop, failure", DEFECTS, ids=[f"{d[0]}-{d[2]}" for d in DEFECTS])
def test_a_defect_of_1e_3_is_caught_by_its_property(kind: str, size: float, prop: str, failure: str,
                                                    example: tuple[str, dict], dtype: torch.dtype) -> None:
    module, x = _ill(example, dtype, kind, size)
    checks = ("shapes", prop) if prop != "shapes" else ("shapes",)
    with pytest.raises(ContractError, match=f"- {failure}"):
        check_invertible(module, x, checks=checks)


@pytest.mark.parametrize("checks, failure", [(("shapes", "roundtrip_forward"), "shapes: the forward output or log-det"),
                                             (("roundtrip_forward",), "roundtrip_forward: the inverse raised")])
def test_a_singular_1x1_convolution_is_a_contract_error_not_a_linalg_error(checks: tuple[str, ...],
                                                                          failure: str) -> None:
    conv = Invertible1x1Conv(3).double()
    with torch.no_grad():
        conv.weight[2] = 0.0  # rank 2: det W = 0 exactly
    with pytest.raises(ContractError, match=failure):
        check_invertible(conv, _x(2, 3, 2, 2), checks=checks)
