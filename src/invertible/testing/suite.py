"""The contract suite as one call: another project's layers under every check of ours.

:func:`run_contract_suite` takes a registry of layers (a mapping ``name -> builder``, where ``builder()`` returns
``(module, x)`` or ``(module, x, context)`` in float64, or an iterable of such triples), runs
:func:`~invertible.testing.check_invertible` (round trips both ways, log-dets against the exact Jacobian both
ways, batch independence, Lipschitz bounds, state dicts) in each requested dtype and :func:`~invertible.testing.
check_gradients` (``gradcheck`` both ways) in float64, and returns one :class:`~invertible.testing.CheckReport` per
layer and dtype; with ``raise_on_failure`` a :class:`~invertible.testing.ContractError` lists every failure.
:func:`contract_tests` turns the same registry into a pytest test, one case per layer and dtype.

Example:
    >>> import torch
    >>> from invertible.adapters import Callables
    >>> scale = torch.tensor([2.0, 0.5], dtype=torch.float64)
    >>> double = Callables(lambda x: (x * scale.to(x), scale.to(x).log().sum().expand(len(x))),
    ...                    lambda y: (y / scale.to(y), -scale.to(y).log().sum().expand(len(y))))
    >>> reports = run_contract_suite({"scale": lambda: (double, torch.randn(3, 2, dtype=torch.float64))})
    >>> [(r.name, r.ok) for r in reports]
    [('scale', True), ('scale', True)]
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from .check import CHECKS, CheckReport, ContractError, check_gradients, check_invertible

__all__ = ["contract_tests", "run_contract_suite"]

Case = tuple[str, Any, Tensor, "Tensor | None"]


def _cases(registry: Mapping[str, Callable[[], tuple]] | Iterable[tuple] | None) -> list[Case]:
    """``(name, module, x, context)`` for every entry (``None``: this library's own registered examples)."""
    if registry is None:
        from .registry import examples

        return [(name, module, x, None) for name, module, x in examples()]
    items = registry.items() if isinstance(registry, Mapping) else ((None, entry) for entry in registry)
    cases = []
    for key, entry in items:
        built = entry() if callable(entry) else entry
        if key is None:  # an iterable of (name, module, x[, context])
            if not isinstance(built, tuple) or len(built) not in (3, 4):
                raise TypeError("run_contract_suite: an iterable registry holds (name, module, x) or "
                                f"(name, module, x, context) tuples, got {type(built).__name__}")
            key, built = built[0], tuple(built[1:])
        if not isinstance(built, tuple) or len(built) not in (2, 3):
            raise TypeError(f"run_contract_suite: the builder of {key!r} must return (module, x) or "
                            f"(module, x, context), got {type(built).__name__}")
        module, x, context = (*built, None)[:3]
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"run_contract_suite: the input of {key!r} must be a floating-point tensor, got "
                            f"{getattr(x, 'dtype', type(x).__name__)}")
        cases.append((str(key), module, x, context))
    return cases


def _in_dtype(module: Any, x: Tensor, context: Tensor | None, dtype: torch.dtype) -> tuple[Any, Tensor, Any]:
    """A copy of the case in ``dtype`` (the registered module is left as it is)."""
    if x.dtype == dtype:
        return module, x, context
    cast = lambda t: t.to(dtype) if isinstance(t, Tensor) and t.is_floating_point() else t  # noqa: E731
    return copy.deepcopy(module).to(dtype), x.to(dtype), cast(context)


def run_contract_suite(
    registry: Mapping[str, Callable[[], tuple]] | Iterable[tuple] | None = None,
    *,
    dtypes: tuple[torch.dtype, ...] = (torch.float64, torch.float32),
    checks: tuple[str, ...] = CHECKS,
    gradients: bool = True,
    raise_on_failure: bool = True,
) -> list[CheckReport]:
    """Run every contract check on every registered layer; one report per layer and dtype.

    Args:
        registry: ``{name: builder}`` with ``builder() -> (module, x[, context])`` in float64, or an iterable of
            ``(name, module, x[, context])``; ``None`` runs this library's own registered examples.
        dtypes: the dtypes to check in (each case is copied into it; tolerances follow the dtype).
        checks: which of :data:`~invertible.testing.CHECKS` to run.
        gradients: also run ``gradcheck`` in both directions (in float64; a failure is added to that report).
        raise_on_failure: raise one :class:`~invertible.testing.ContractError` listing every failed layer.
    """
    reports = []
    for name, module, x, context in _cases(registry):
        for dtype in dtypes:
            m, v, c = _in_dtype(module, x, context, dtype)
            report = check_invertible(m, v, context=c, checks=checks, name=name, raise_on_failure=False)
            if gradients and dtype == torch.float64 and report.ok:
                try:
                    report.notes.extend(check_gradients(m, v, context=c))
                except ContractError as err:  # names the direction whose gradient disagrees with differences
                    report.failures.append(f"gradients: {str(err).splitlines()[0]}")
            reports.append(report)
    failed = [r for r in reports if not r.ok]
    if failed and raise_on_failure:
        raise ContractError(f"{len(failed)} of {len(reports)} contract checks failed:\n"
                            + "\n".join(str(r) for r in failed))
    return reports


def contract_tests(registry: Mapping[str, Callable[[], tuple]], *,
                   dtypes: tuple[torch.dtype, ...] = (torch.float64, torch.float32), **options: Any) -> Any:
    """A pytest test function, one case per layer and dtype: ``test_contract = contract_tests(REGISTRY)``.

    Each case runs :func:`run_contract_suite` on one entry and fails with the report's message.
    """
    import pytest

    names = list(registry)

    @pytest.mark.parametrize("dtype", dtypes, ids=[str(d).removeprefix("torch.") for d in dtypes])
    @pytest.mark.parametrize("name", names)
    def test_contract(name: str, dtype: torch.dtype) -> None:
        run_contract_suite({name: registry[name]}, dtypes=(dtype,), **options)

    return test_contract
