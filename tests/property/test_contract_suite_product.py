"""The contract suite as a product: the README's example runs as written, and ``run_contract_suite`` /
``contract_tests`` fail on a broken layer (negative controls)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from invertible import InvertibleModule
from invertible.adapters import Callables
from invertible.testing import ContractError, contract_tests, run_contract_suite

README = Path(__file__).resolve().parents[2] / "README.md"
DT = torch.float64


def _readme_example() -> str:
    match = re.search(r"<!-- contract-suite-example -->\s*```python\n(.*?)```", README.read_text(), re.S)
    assert match, "README.md lost its contract-suite example (the block after <!-- contract-suite-example -->)"
    return match.group(1)


def test_the_readme_example_runs_as_written() -> None:
    code = _readme_example()
    assert len(code.strip().splitlines()) <= 12
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})


def test_negative_control_the_readme_example_with_a_wrong_inverse_fails() -> None:
    code = _readme_example().replace("y - self.b,", "y - 1.001 * self.b,")
    assert "1.001" in code
    with pytest.raises(ContractError, match="(?s)shift.*roundtrip_forward"):
        exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})


class Scale(InvertibleModule):
    """``y = x exp(s)``; ``wrong`` adds 1e-3 to its log-det."""

    def __init__(self, dims: int, wrong: float = 0.0) -> None:
        super().__init__(channels=None, ranks=(2,))
        self.s = nn.Parameter(0.3 * torch.randn(dims, generator=torch.Generator().manual_seed(0)))
        self.wrong = wrong

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x * self.s.exp(), self.s.sum().expand(len(x)) + self.wrong

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return y * (-self.s).exp(), -self.s.sum().expand(len(y)) - self.wrong


def _x() -> Tensor:
    return torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=DT)


def test_every_registry_form_runs_in_both_dtypes_and_reports_per_layer() -> None:
    context = torch.randn(4, 2, dtype=DT)
    shift = Callables(lambda x, c: (x + c.sum(1, keepdim=True), torch.zeros(len(x), dtype=x.dtype)),
                      lambda y, c: (y - c.sum(1, keepdim=True), torch.zeros(len(y), dtype=y.dtype)))
    reports = run_contract_suite([("scale", Scale(3).double(), _x()), ("shift", shift, _x(), context)],
                                 dtypes=(DT,))
    assert [(r.name, r.dtype, r.ok) for r in reports] == [("scale", DT, True), ("shift", DT, True)]
    both = run_contract_suite({"scale": lambda: (Scale(3).double(), _x())})
    assert [r.dtype for r in both] == [torch.float64, torch.float32] and all(r.ok for r in both)


def test_negative_control_a_wrong_log_det_fails_the_suite_and_names_the_layer() -> None:
    registry = {"good": lambda: (Scale(3).double(), _x()), "bad": lambda: (Scale(3, wrong=1e-3).double(), _x())}
    with pytest.raises(ContractError, match=r"2 of 4 contract checks failed:\nbad \(torch.float64"):
        run_contract_suite(registry)
    reports = run_contract_suite(registry, raise_on_failure=False)
    assert [r.ok for r in reports] == [True, True, False, False]
    assert "logdet_exact" in reports[2].failed


def test_negative_control_gradcheck_catches_a_gradient_the_values_do_not_show() -> None:
    class Detached(Scale):  # right values, but the inverse's output does not depend on s for autograd
        def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
            return y * (-self.s.detach()).exp(), -self.s.sum().expand(len(y))

    reports = run_contract_suite({"detached": lambda: (Detached(3).double(), _x())}, dtypes=(DT,),
                                 raise_on_failure=False)
    assert reports[0].failed == ["gradients"], reports[0]


def test_bad_registry_entries_get_a_clear_error() -> None:
    with pytest.raises(TypeError, match="builder of 'x' must return"):
        run_contract_suite({"x": lambda: Scale(3)})
    with pytest.raises(TypeError, match="input of 'x' must be a floating-point tensor"):
        run_contract_suite({"x": lambda: (Scale(3), torch.arange(3))})


_REGISTRY = {"scale": lambda: (Scale(3).double(), _x()), "bad": lambda: (Scale(3, wrong=1e-3).double(), _x())}
_generated = contract_tests(_REGISTRY, dtypes=(DT,))


def test_contract_tests_makes_one_parametrized_case_per_layer_and_dtype() -> None:
    marks = {m.args[0]: list(m.args[1]) for m in _generated.pytestmark}
    assert marks == {"name": ["scale", "bad"], "dtype": [DT]}
    _generated("scale", DT)
    with pytest.raises(ContractError, match="bad"):  # negative control
        _generated("bad", DT)
