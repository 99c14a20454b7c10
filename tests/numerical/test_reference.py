"""Every registered layer and model against the independent mpmath reference (50 digits), at tiny sizes.

For each configuration of each registered example (rebuilt tiny by :func:`invertible.reference.tiny_case`: batch 2,
size 2 where the builder takes one; new layers are picked up automatically):

- float64 outputs, log-dets and inverses agree with the reference to 1e-12 relative to their magnitude;
- the reference's analytic log-det and the layer's agree with ``log|det J|`` of the reference's finite-difference
  Jacobian (a formula-free computation), and the analytic Lipschitz bounds are never below its extreme singular
  values (at both samples up to D = 16, at the first above: each Jacobian costs 2D reference evaluations);
- the float32 error, measured against the reference at the float32 parameters, stays within the error model of
  ``invertible.testing.tolerances`` with its calibrated constants: outputs within ``K u32 E_f``, inverses within
  ``K u32 E_g`` and log-dets within ``K_ld u32 (D + T)``; ``benchmarks/float32_error.py`` prints the measured
  ratios that chose the constants.

Iterative inverses (residual blocks) may leave what their stopping rule allows on top of rounding: the inverse
tolerances add :func:`fixed_point_allowance`, derived from each block's reported last step (the catalog's
``INVERSE`` settings make it ~1e-14 in float64 and the ``32 u`` floor of ``rtol`` dominates in float32).

Coverage: an example whose module (or a part of it) has no reference fails here, listing the missing types.
Out of scope, by declaration only: examples registered with ``analytic=False`` (stochastic log-det estimates
have no deterministic reference).
"""

from __future__ import annotations

import copy
import math

import pytest
import numpy as np
import torch
from mpmath import mpf
from torch import Tensor

from invertible import AffineCoupling, InvertibleModule, Permutation, ResidualBlock
from invertible.base import Bounds, Sequential
from invertible.layers.residual_logdet import batch_jacobian
from invertible.layers.spectral_norm import SpectralNormLinear
from invertible.reference import (
    MAX_DIMS,
    MissingReference,
    ReferenceComparison,
    TinyCase,
    compare_with_reference,
    from_tensor,
    jet_factory,
    layer_reference_factory,
    log_abs_det,
    missing_references,
    precision,
    reference_jacobians,
    reference_map,
    register_jet,
    register_layer_reference,
    singular_values,
    tiny_case,
    tiny_configurations,
)
from invertible.testing import randomize_
from invertible.testing.tolerances import LOGDET_K, ROUNDTRIP_K, ErrorScales, exact_error_scales

#: float64 agreement with the reference, relative to the magnitude of the compared quantity.
FLOAT64_RTOL = 1e-12
#: The reference's own analytic log-det against its ~30-digit finite-difference determinant.
REFERENCE_RTOL = 1e-20
#: Finite-difference Jacobians cost 2D reference evaluations: every sample up to this many entries, else the first.
JACOBIAN_ALL_SAMPLES_DIMS = 16
U32 = torch.finfo(torch.float32).eps
U64 = torch.finfo(torch.float64).eps

CONFIGURATIONS = list(tiny_configurations())


def _out_of_scope(name: str, analytic: bool) -> str | None:
    if not analytic:
        return "registered with analytic=False (estimated log-det or no deterministic map)"
    return None


_built: dict[str, TinyCase] = {}


def _case(case_id: str, name: str, config: dict) -> TinyCase:
    """Build each tiny case once per process (the tests below share it)."""
    if case_id not in _built:
        _built[case_id] = tiny_case(name, config)
    return _built[case_id]


CASES = [pytest.param(case_id, name, config, id=case_id,
                      marks=pytest.mark.skip(reason=r) if (r := _out_of_scope(name, analytic)) else ())
         for case_id, name, config, analytic in CONFIGURATIONS]


# -- checks (shared with the negative controls below) ----------------------------------------------------------
def fixed_point_allowance(module: InvertibleModule, dims: int) -> float:
    """What the fixed-point inverses inside ``module`` may leave in ``||f^-1(y) - x||`` by their stopping rule, at
    their last inverse call (0 for analytic inverses).

    A residual block that stopped at a step ``r`` (sup norm, its report's ``residual``) is within
    ``L / (1 - L) sqrt(D) r`` of its fixed point (:class:`~invertible.layers.residual.InverseReport`); the layers
    before it in forward order carry that error to ``x`` multiplied by at most their inverse Lipschitz bounds.
    With the catalog's ``INVERSE`` (``atol=1e-15``, ``rtol`` floored at ``32 u``) the step is at most
    ``1e-15 + 32 u ||y||_inf``.
    """
    if isinstance(module, ResidualBlock):
        lip, report = module.lipschitz_constant(), module.last_inverse
        if report is None:
            raise ValueError("fixed_point_allowance: run the module's inverse first (it reads the reports)")
        return math.inf if lip is None or lip >= 1 else lip / (1 - lip) * math.sqrt(dims) * report.residual
    if isinstance(module, Sequential):
        total, carry = 0.0, 1.0
        for layer in module.layers:
            allowance = fixed_point_allowance(layer, dims)
            if allowance > 0:
                total += carry * allowance
            inverse_bound = layer.lipschitz_bounds().inverse
            carry = math.inf if inverse_bound is None else carry * inverse_bound
        return total
    if any(isinstance(m, ResidualBlock) for m in module.modules()):
        raise NotImplementedError(f"fixed_point_allowance: no rule for residual blocks inside {type(module).__name__}")
    return 0.0


def _inverse_allowance(scales: ErrorScales | None, u: float) -> tuple[np.ndarray | float, np.ndarray | float]:
    """What conditioning adds to an inverse evaluated at a rounded ``y``: ``K u E_g`` for the preimage, and that
    times ``||d logdet/dx||`` for its log-det (taken at the preimage); 0 without scales."""
    if scales is None:
        return 0.0, 0.0
    preimage = ROUNDTRIP_K * u * scales.inverse_eval.numpy()
    gradient = scales.logdet_sensitivity.numpy() if scales.logdet_sensitivity is not None else 0.0
    return preimage, gradient * preimage


def float64_failures(c: ReferenceComparison, allowance: float = 0.0, scales: ErrorScales | None = None) -> list[str]:
    """Errors of a float64 module against its reference above ``FLOAT64_RTOL`` times the magnitude (plus, for the
    inverse, the ``allowance`` of an iterative inverse: :func:`fixed_point_allowance`, and what an ill-conditioned
    inverse is allowed by the error model, ``K u E_g``, carried into its log-det by the log-det's gradient)."""
    preimage, moved = _inverse_allowance(scales, U64)
    checks = [("output ||f(x) - f_ref(x)||", c.output_error, FLOAT64_RTOL * c.scale),
              ("log-det |logdet - logdet_ref|", c.logdet_error, FLOAT64_RTOL * c.logdet_scale),
              ("inverse ||f^-1(y_ref) - x||", c.inverse_error,
               np.maximum(FLOAT64_RTOL * c.scale, preimage) + allowance),
              ("inverse log-det |logdet_inv + logdet_ref|", c.inverse_logdet_error,
               FLOAT64_RTOL * c.logdet_scale + moved)]
    return [f"{what}: {float(err.max()):.3g} > {float(tol[err.argmax()]):.3g} ({FLOAT64_RTOL:g} of the magnitude"
            f"{f' + {allowance:.3g} for the fixed point' if allowance else ''})"
            for what, err, tol in checks if not (err <= tol).all()]


def jacobian_failures(module: InvertibleModule, x: Tensor, scales: ErrorScales | None = None) -> list[str]:
    """The analytic log-dets (reference and module) against ``log|det J|`` of the reference's finite-difference
    Jacobian, and the module's Lipschitz bounds against its singular values, at every sample of ``x`` (the inverse's
    log-det, taken at ``f(x)``, with what its preimage's error moves it by: :func:`_inverse_allowance`)."""
    failures = []
    moved = np.broadcast_to(np.asarray(_inverse_allowance(scales, U64)[1], dtype=np.float64), (x.shape[0],))
    fn = reference_map(module)
    jacobians = reference_jacobians(module, x)
    with torch.no_grad():
        y, logdet = module(x)
        _, logdet_inv = module.inverse(y)
    bounds: Bounds = module.lipschitz_bounds()
    with precision():
        for i, (sample, jac) in enumerate(zip(from_tensor(x), jacobians)):
            exact = log_abs_det(jac)
            magnitude = max(abs(exact), mpf(1))
            ref_logdet = fn(sample)[1]
            if not abs(ref_logdet - exact) <= REFERENCE_RTOL * magnitude:
                failures.append(f"sample {i}: the reference's analytic log-det {float(ref_logdet):.17g} differs "
                                f"from log|det J_fd| = {float(exact):.17g} by {float(abs(ref_logdet - exact)):.3g}")
            for what, value, extra in (("log-det", float(logdet[i]), 0.0),
                                       ("-(inverse log-det)", -float(logdet_inv[i]), float(moved[i]))):
                if not abs(mpf(value) - exact) <= FLOAT64_RTOL * magnitude + mpf(extra):
                    failures.append(f"sample {i}: the module's {what} {value:.17g} differs from log|det J_fd| = "
                                    f"{float(exact):.17g} by {float(abs(mpf(value) - exact)):.3g}")
            if bounds.forward is None and bounds.inverse is None:
                continue
            sv = singular_values(jac)
            measured_lipschitz = (("forward", bounds.forward, sv[0]), ("inverse", bounds.inverse, 1 / sv[-1]))
            for what, bound, measured in measured_lipschitz:
                if bound is not None and not measured <= mpf(bound) * (1 + FLOAT64_RTOL):
                    failures.append(f"sample {i}: the {what} Lipschitz bound {bound:.17g} is below the measured "
                                    f"{float(measured):.17g}")
    return failures


def float32_failures(c: ReferenceComparison, scales: ErrorScales, allowance: float = 0.0) -> list[str]:
    """float32 errors above the error model: outputs above ``K u32 E_f``, inverses above ``K u32 E_g`` (plus an
    iterative inverse's ``allowance``), log-dets above ``K_ld u32 (D + T + C)`` (the scales of the float64 module),
    and the inverse's log-det, taken at the reference output so that its preimage carries the inverse's error, above
    that plus the log-det's gradient times that error, ``||d logdet/dx|| K u32 E_g``."""
    out_tol = ROUNDTRIP_K * U32 * scales.forward_eval.numpy()
    inv_tol = ROUNDTRIP_K * U32 * scales.inverse_eval.numpy() + allowance
    assert scales.logdet_input is not None
    ld_tol = LOGDET_K * U32 * (scales.logdet_terms + scales.logdet_input).numpy()
    gradient = scales.logdet_sensitivity.numpy() if scales.logdet_sensitivity is not None else 0.0
    ld_inv_tol = ld_tol + gradient * inv_tol
    checks = [("output", c.output_error, out_tol, "K u E_f"),
              ("log-det", c.logdet_error, ld_tol, "K_ld u (D + T + C)"),
              ("inverse", c.inverse_error, inv_tol, "K u E_g"),
              ("inverse log-det", c.inverse_logdet_error, ld_inv_tol, "K_ld u (D + T + C) + |grad| K u E_g")]
    return [f"float32 {what} error {float(err.max()):.3g} above {model} = {float(tol[err.argmax()]):.3g}"
            for what, err, tol, model in checks if not (err <= tol).all()]


# -- coverage ----------------------------------------------------------------------------------------------------
def test_every_registered_example_has_a_tiny_reference_case() -> None:
    problems = []
    for case_id, name, config, analytic in CONFIGURATIONS:
        if _out_of_scope(name, analytic):
            continue
        case = _case(case_id, name, config)
        if case.dims > MAX_DIMS:
            problems.append(f"{case.id}: {case.dims} entries per sample even in its tiny configuration (at most "
                            f"{MAX_DIMS}); give its builder 'batch'/'size' parameters or smaller defaults")
        missing = missing_references(case.module)
        if missing:
            problems.append(f"{case.id}: no mpmath reference for {', '.join(missing)}")
    assert not problems, "examples not covered by invertible.reference:\n" + "\n".join(problems)


# -- agreement ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case_id, name, config", CASES)
def test_float64_agrees_with_the_reference(case_id: str, name: str, config: dict) -> None:
    case = _case(case_id, name, config)
    comparison = compare_with_reference(case.module, case.x)
    failures = float64_failures(comparison, fixed_point_allowance(case.module, case.dims),
                                exact_error_scales(case.module, case.x))
    assert not failures, f"{case.id}:\n" + "\n".join(failures)


@pytest.mark.parametrize("case_id, name, config", CASES)
def test_finite_difference_jacobian_confirms_logdets_and_bounds(case_id: str, name: str, config: dict) -> None:
    case = _case(case_id, name, config)
    x = case.x if case.dims <= JACOBIAN_ALL_SAMPLES_DIMS else case.x[:1]
    failures = jacobian_failures(case.module, x, exact_error_scales(case.module, x))
    assert not failures, f"{case.id}:\n" + "\n".join(failures)


@pytest.mark.parametrize("case_id, name, config", CASES)
def test_float32_error_is_within_the_conditioning_bound(case_id: str, name: str, config: dict) -> None:
    case = _case(case_id, name, config)
    module32 = copy.deepcopy(case.module).float()
    comparison = compare_with_reference(module32, case.x.float())
    allowance = fixed_point_allowance(module32, case.dims)
    failures = float32_failures(comparison, exact_error_scales(case.module, case.x), allowance)
    assert not failures, f"{case.id}:\n" + "\n".join(failures)


# -- negative controls: the checks above catch what they claim to catch ------------------------------------------
class _WrongSignLogdet(AffineCoupling):
    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, logdet = super()._forward(x)
        return y, -logdet


class _OffsetOutput(AffineCoupling):
    offset = 1e-9

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, logdet = super()._forward(x)
        return y + self.offset, logdet


class _WrongReference(AffineCoupling):
    """Correct layer, but its registered reference doubles the log-det."""


class _LooseBounds(Permutation):
    def lipschitz_bounds(self) -> Bounds:
        return Bounds(0.5, 1.0)


class _Unregistered(Permutation):
    pass


for _cls in (_WrongSignLogdet, _OffsetOutput):
    register_layer_reference(_cls)(layer_reference_factory(AffineCoupling))
register_layer_reference(_LooseBounds)(layer_reference_factory(Permutation))


@register_layer_reference(_WrongReference)
def _doubled(module, builder):  # type: ignore[no-untyped-def]
    correct = layer_reference_factory(AffineCoupling)(module, builder)  # type: ignore[misc]

    def run(x):  # type: ignore[no-untyped-def]
        y, logdet = correct(x)
        return y, 2 * logdet

    return run


class _MissingSecondTerm(ResidualBlock):
    """Correct map, but the log-det leaves out the second term of its series, ``-tr(J_g^2) / 2``."""

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, logdet = super()._forward(x)
        jac = batch_jacobian(self.nnet, x)
        return y, logdet + torch.einsum("bij,bji->b", jac, jac) / 2


register_layer_reference(_MissingSecondTerm)(layer_reference_factory(ResidualBlock))


class _Misnormalised(SpectralNormLinear):
    """Normalises by a sigma 0.1% too large (the reference recomputes sigma from the weight)."""

    def sigma(self) -> Tensor:
        return super().sigma() * 1.001


register_jet(_Misnormalised)(jet_factory(SpectralNormLinear))  # type: ignore[arg-type]


def _coupling(cls: type, dtype: torch.dtype = torch.float64) -> tuple[InvertibleModule, Tensor]:
    torch.manual_seed(0)
    module = randomize_(cls(4, hidden=5, net="mlp", scale_fn="exp")).to(dtype).eval()
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(1), dtype=dtype)
    return module, x  # type: ignore[return-value]


def test_negative_control_correct_coupling_passes() -> None:
    module, x = _coupling(AffineCoupling)
    assert not float64_failures(compare_with_reference(module, x))
    assert not jacobian_failures(module, x)


def test_negative_control_wrong_logdet_sign_is_caught() -> None:
    module, x = _coupling(_WrongSignLogdet)
    assert any("log-det" in f for f in float64_failures(compare_with_reference(module, x)))
    assert any("module's log-det" in f for f in jacobian_failures(module, x))


def test_negative_control_output_off_by_1e_9_is_caught() -> None:
    module, x = _coupling(_OffsetOutput)
    assert any(f.startswith("output") for f in float64_failures(compare_with_reference(module, x)))


def test_negative_control_wrong_reference_logdet_is_caught_by_finite_differences() -> None:
    module, x = _coupling(_WrongReference)
    assert any("reference's analytic log-det" in f for f in jacobian_failures(module, x))


def test_negative_control_bound_below_the_measured_singular_value_is_caught() -> None:
    module = _LooseBounds(3, kind="reverse").double()
    x = torch.randn(2, 3, dtype=torch.float64)
    assert any("forward Lipschitz bound" in f for f in jacobian_failures(module, x))


def test_negative_control_float32_error_above_the_bound_is_caught() -> None:
    """An output off by 1e-5 (about 40 u32 per entry here) fails; the unbroken layer passes."""
    correct, x = _coupling(AffineCoupling, torch.float32)
    scales = exact_error_scales(_coupling(AffineCoupling)[0], x.double())
    assert not float32_failures(compare_with_reference(correct, x), scales)
    module, _ = _coupling(_OffsetOutput, torch.float32)
    module.offset = 1e-5
    assert any("float32 output" in f for f in float32_failures(compare_with_reference(module, x), scales))


def _residual_block(cls: type) -> tuple[InvertibleModule, Tensor]:
    case = tiny_case("residual_block", {})  # the flat block: 4 entries per sample
    block = cls(case.module.nnet, channels=4, ranks=(2,), atol=1e-15, rtol=0.0).eval()
    return block, case.x


def test_negative_control_residual_block_missing_a_logdet_term_is_caught() -> None:
    correct, x = _residual_block(ResidualBlock)
    comparison = compare_with_reference(correct, x)
    assert not float64_failures(comparison, fixed_point_allowance(correct, 4))
    wrong, _ = _residual_block(_MissingSecondTerm)
    comparison = compare_with_reference(wrong, x)
    assert any(f.startswith("log-det") for f in float64_failures(comparison, fixed_point_allowance(wrong, 4)))
    assert any("module's log-det" in f for f in jacobian_failures(wrong, x))


def test_negative_control_misnormalised_spectral_norm_is_caught() -> None:
    block, x = _residual_block(ResidualBlock)
    first = block.nnet[1]
    assert isinstance(first, SpectralNormLinear) and first.method == "exact"
    assert float(first.sigma().detach()) > first.coeff  # the normalisation is active, so a wrong sigma changes the map
    wrong = _Misnormalised(first.in_features, first.out_features, coeff=first.coeff, method="exact").double()
    wrong.load_state_dict(first.state_dict())
    block.nnet[1] = wrong
    failures = float64_failures(compare_with_reference(block, x), fixed_point_allowance(block, 4))
    assert any(f.startswith("output") for f in failures)


def test_negative_control_a_module_without_reference_is_reported() -> None:
    module = _Unregistered(3)
    assert missing_references(module) == [f"{__name__}._Unregistered"]
    with pytest.raises(MissingReference, match="_Unregistered"):
        reference_map(module)


def test_tiny_cases_rebuild_the_registered_configurations() -> None:
    case = tiny_case("affine_coupling", {"scale_fn": "exp"})
    assert case.x.shape == (2, 4, 2, 2) and case.module.scale_fn == "exp"  # type: ignore[union-attr]
