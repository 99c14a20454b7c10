"""Every registered conditional example against the independent mpmath reference (50 digits), at a fixed context.

Each conditional configuration (``invertible.testing.catalog.conditional``) is rebuilt tiny (batch 2, size 2 where
its builder takes one) and held, at its context, to the same standards as the unconditional examples in
``test_reference.py``:

- float64 outputs, log-dets and inverses agree with the reference to 1e-12 relative to their magnitude;
- the reference's analytic log-det agrees with ``log|det J|`` of its own finite-difference Jacobian in ``x`` (to
  1e-20), the module's log-dets with it to 1e-12, and the Lipschitz bounds are never below its singular values;
- the float32 error stays within ``K u32 kappa scale`` (``kappa`` the condition number of the exact Jacobian).

Negative control: a reference map evaluated at another context disagrees with the module (so the reference does
read the context).
"""

from __future__ import annotations

import copy
import inspect

import numpy as np
import pytest
import torch
from mpmath import mpf
from torch import Tensor

from invertible.base import InvertibleModule
from invertible.reference import (
    MAX_DIMS,
    compare_with_reference,
    from_tensor,
    log_abs_det,
    missing_references,
    precision,
    reference_jacobians,
    reference_map,
    singular_values,
)
from invertible.testing import exact_jacobian, get_example
from invertible.testing.registry import example_names

FLOAT64_RTOL = 1e-12
REFERENCE_RTOL = 1e-20
K = 100.0
U32 = torch.finfo(torch.float32).eps
TINY = {"batch": 2, "size": 2}

CONFIGS = [(name, config) for name in example_names(conditional=True) for config in get_example(name).configs]
IDS = [f"{n}[{','.join(f'{k}={v}' for k, v in c.items()) or 'default'}]" for n, c in CONFIGS]
_built: dict[str, tuple[InvertibleModule, Tensor, Tensor]] = {}


def _case(name: str, config: dict) -> tuple[InvertibleModule, Tensor, Tensor]:
    key = f"{name}{sorted(config.items())}"
    if key not in _built:
        example = get_example(name)
        accepted = inspect.signature(example.build).parameters
        params = {**config, **{k: v for k, v in TINY.items() if k in accepted and k not in config}}
        module, x, context = example.build(**params)
        module.eval()
        with torch.no_grad():
            module(x, context)  # data-dependent initialisation before the reference reads the parameters
        _built[key] = (module, x, context)
    return _built[key]


@pytest.mark.parametrize("name, config", CONFIGS, ids=IDS)
def test_tiny_case_is_covered_by_the_reference(name: str, config: dict) -> None:
    module, x, _ = _case(name, config)
    assert x[0].numel() <= MAX_DIMS, f"{x[0].numel()} entries per sample: too many for the reference"
    assert not missing_references(module)


@pytest.mark.parametrize("name, config", CONFIGS, ids=IDS)
def test_float64_agrees_with_the_reference_at_the_context(name: str, config: dict) -> None:
    module, x, context = _case(name, config)
    c = compare_with_reference(module, x, context)
    for what, err, tol in [("output", c.output_error, c.scale), ("log-det", c.logdet_error, c.logdet_scale),
                           ("inverse", c.inverse_error, c.scale),
                           ("inverse log-det", c.inverse_logdet_error, c.logdet_scale)]:
        assert (err <= FLOAT64_RTOL * tol).all(), f"{what}: {err.max():.3g} > {FLOAT64_RTOL:g} x {tol.max():.3g}"


@pytest.mark.parametrize("name, config", CONFIGS, ids=IDS)
def test_finite_difference_jacobian_confirms_logdets_and_bounds(name: str, config: dict) -> None:
    module, x, context = _case(name, config)
    x, context = (x, context) if x[0].numel() <= 16 else (x[:1], context[:1])
    fn = reference_map(module)
    jacobians = reference_jacobians(module, x, context)
    with torch.no_grad():
        y, logdet = module(x, context)
        _, logdet_inv = module.inverse(y, context)
    bounds = module.lipschitz_bounds()
    with precision():
        for i, (sample, c, jac) in enumerate(zip(from_tensor(x), from_tensor(context), jacobians)):
            exact = log_abs_det(jac)
            magnitude = max(abs(exact), mpf(1))
            assert abs(fn(sample, c)[1] - exact) <= REFERENCE_RTOL * magnitude, f"sample {i}: reference log-det"
            for value in (float(logdet[i]), -float(logdet_inv[i])):
                assert abs(mpf(value) - exact) <= FLOAT64_RTOL * magnitude, f"sample {i}: module log-det {value}"
            sv = singular_values(jac)
            if bounds.forward is not None:
                assert sv[0] <= mpf(bounds.forward) * (1 + FLOAT64_RTOL), f"sample {i}: forward bound"
            if bounds.inverse is not None:
                assert 1 / sv[-1] <= mpf(bounds.inverse) * (1 + FLOAT64_RTOL), f"sample {i}: inverse bound"


@pytest.mark.parametrize("name, config", CONFIGS, ids=IDS)
def test_float32_error_is_within_the_conditioning_bound(name: str, config: dict) -> None:
    module, x, context = _case(name, config)
    jac = torch.cat([exact_jacobian(lambda v, ci=context[i : i + 1]: module(v, ci)[0], x[i : i + 1])
                     for i in range(x.shape[0])])
    sv = torch.linalg.svdvals(jac)
    kappa = (sv[:, 0] / sv[:, -1]).detach().numpy()
    c = compare_with_reference(copy.deepcopy(module).float(), x.float(), context.float())
    out_tol, ld_tol = K * U32 * kappa * c.scale, K * U32 * (c.dims * kappa + c.logdet_scale)
    for what, err, tol in [("output", c.output_error, out_tol), ("log-det", c.logdet_error, ld_tol),
                           ("inverse", c.inverse_error, out_tol), ("inverse log-det", c.inverse_logdet_error, ld_tol)]:
        assert (err <= tol).all(), f"float32 {what} error {err.max():.3g} above K u kappa scale {tol.max():.3g}"


def test_negative_control_the_reference_at_another_context_disagrees() -> None:
    module, x, context = _case("conditional_spline_coupling", {})
    fn = reference_map(module)
    with precision(), torch.no_grad():
        y = from_tensor(module(x, context)[0])
        here = [fn(s, c)[0] for s, c in zip(from_tensor(x), from_tensor(context))]
        there = [fn(s, c + 1)[0] for s, c in zip(from_tensor(x), from_tensor(context))]
        close = max(float(abs(v)) for a, b in zip(here, y) for v in np.asarray(a - b).reshape(-1))
        apart = max(float(abs(v)) for a, b in zip(there, y) for v in np.asarray(a - b).reshape(-1))
    assert close < 1e-12 and apart > 1e-3
