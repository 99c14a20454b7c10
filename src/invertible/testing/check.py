"""``check_invertible``: every contract check on one module and one input, with tolerances from an error model.

The tolerances follow a measured error model (:mod:`invertible.testing.tolerances`: the formulas, the
calibration against the mpmath reference and the chosen constants): per sample, with ``u`` the unit round-off of
the dtype,

- round trips ``x -> y -> x`` and ``y -> x -> y``: ``||error|| <= K u E_g`` and ``K u E_f``, the entrywise
  amplification of rounding by the inverse (forward) Jacobian, plus what an iterative inverse's stopping rule
  allows, carried by the map's measured singular values;
- log-dets against ``slogdet`` of the exact Jacobian (of a float64 copy for lower precisions) and
  ``logdet_inv = -logdet``: ``|error| <= K_ld (u (D + T) + u_ref L_J)``, growing with the number and magnitude of
  the summed terms, not with the condition number;
- batch independence: a sample alone and in the batch are two evaluations of the forward map, within twice the
  evaluation tolerances;
- Lipschitz bounds: never below the measured ``sigma_max`` (forward) and ``1 / sigma_min`` (inverse), up to
  ``BOUNDS_RTOL`` relative rounding of the bound;
- state dicts: parameters changed in place must reach the map (no stale cache), a copy loaded from the state dict
  must compute the same map (no tensor left out of it), and loading a state dict must restore the outputs bit for
  bit.

Above ``max_jacobian_dims`` entries per sample the extreme singular values come from matrix-free Lanczos
estimates (:func:`invertible.diagnostics.extreme_singular_values`), the round-trip scales are normwise
(``||y|| / sigma_min + ||x||``) and the checks against exact Jacobians are skipped (the report says so).
A non-finite output, a singular Jacobian or a ``torch.linalg.LinAlgError`` inside the module is reported as a
failure of the property being checked, never raised as torch's own error.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..base import InvertibleModule, allow_nonfinite
from ..diagnostics.jacobian import exact_jacobian
from .tolerances import (
    LOGDET_K,
    ROUNDTRIP_K,
    ErrorScales,
    fixed_point_allowance,
    float64_shadow,
    layer_rounding,
    leaf_logdet_magnitude,
    logdet_gradient,
    logdet_parameter_condition,
    reference_round_off,
)

__all__ = [
    "BOUNDS_RTOL",
    "CHECKS",
    "CheckReport",
    "ContractError",
    "check_gradients",
    "check_invertible",
    "check_state_dict",
    "exact_jacobian",
]

#: Names of the checks ``check_invertible`` can run.
CHECKS = (
    "shapes",
    "roundtrip_forward",
    "roundtrip_inverse",
    "logdet_inverse",
    "logdet_exact",
    "logdet_exact_inverse",
    "batch_independence",
    "bounds",
    "state_dict",
)

#: Relative slack of a Lipschitz bound over the measured singular value, in units of ``u`` (the bound is itself
#: computed in the module's dtype, from factors that may be power-iteration estimates).
BOUNDS_RTOL = 100.0


class ContractError(AssertionError):
    """A module broke the layer contract; the message names each failed property, by how much and where."""


@dataclass
class CheckReport:
    """What ``check_invertible`` measured. ``failures`` lists one line per broken property; ``notes`` says which
    checks were skipped or approximated, and why."""

    name: str
    dtype: torch.dtype
    dims: int
    measured: dict[str, float] = field(default_factory=dict)
    tolerances: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def __str__(self) -> str:
        head = f"{self.name} ({self.dtype}, D={self.dims}): " + ("ok" if self.ok else f"{len(self.failures)} failed")
        rows = [f"  {k}: {v:.3g} (tolerance {self.tolerances.get(k, float('nan')):.3g})"
                for k, v in self.measured.items()]
        notes = [f"  note: {n}" for n in self.notes]
        return "\n".join([head, *[f"  FAILED {f}" for f in self.failures], *rows, *notes])


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.train(mode)


class _Abort(Exception):
    """Stops the checks after a failure that leaves nothing to measure (the failure is in the report)."""


def _call(fail: Callable[[str], None], prop: str, what: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; a ``LinAlgError`` (a singular matrix inside the module) becomes a failure of ``prop``."""
    try:
        with allow_nonfinite():
            return fn()
    except torch.linalg.LinAlgError as err:
        fail(f"{prop}: {what} raised torch.linalg.LinAlgError ({str(err).splitlines()[0]}): a singular matrix "
             "inside the module, so the map is not invertible with these parameters")
        raise _Abort from err


def _worst(values: Tensor, tol: Tensor) -> tuple[float, float, int]:
    ratio = torch.where(torch.isfinite(values), values / tol, torch.full_like(values, math.inf))
    ratio = torch.nan_to_num(ratio, nan=math.inf)
    i = int(torch.argmax(ratio))
    return float(values[i]), float(tol[i]), i


@dataclass
class _Tolerances:
    """Per-sample tolerances of one check run (float64, shape ``(B,)``)."""

    roundtrip_forward: Tensor
    roundtrip_inverse: Tensor
    logdet: Tensor
    logdet_inverse: Tensor
    logdet_pair: Tensor
    batch: Tensor
    batch_logdet: Tensor


def _tolerances(scales: ErrorScales, u: float, u_ref: float, k: float, k_ld: float, allowance: float,
                input_at_back: Tensor | None = None) -> _Tolerances:
    amplify = scales.sigma_max.clamp_min(1.0) * (1.0 / scales.sigma_min).clamp_min(1.0)
    fp_x = allowance * amplify if allowance else torch.zeros_like(amplify)
    fp_y = fp_x * scales.sigma_max.clamp_min(1.0)
    ld_ref = u_ref * scales.logdet_condition if scales.logdet_condition is not None else 0.0
    # a fixed-point iterate inside the map (e.g. an inverted residual block run forwards) moves the log-det by
    # at most its state error times the log-det's gradient
    ld_fp = scales.logdet_sensitivity * fp_x if allowance and scales.logdet_sensitivity is not None else 0.0
    c_x = scales.logdet_input if scales.logdet_input is not None else 0.0
    c_back = input_at_back if input_at_back is not None else c_x
    logdet = k_ld * (u * (scales.logdet_terms + c_x) + ld_ref) + ld_fp
    return _Tolerances(
        roundtrip_forward=k * u * scales.inverse_eval + fp_x,
        roundtrip_inverse=k * u * scales.forward_eval + fp_y,
        logdet=logdet,
        logdet_inverse=k_ld * (u * (scales.logdet_terms + c_back) + ld_ref) + ld_fp,
        logdet_pair=k_ld * u * (2 * scales.logdet_terms + c_x + c_back) + ld_fp,
        batch=2 * k * u * scales.forward_eval + fp_y,
        batch_logdet=2 * k_ld * u * scales.logdet_terms,
    )


def check_invertible(
    module: InvertibleModule,
    x: Tensor,
    *,
    checks: tuple[str, ...] = CHECKS,
    factor: float | None = None,
    max_jacobian_dims: int = 1024,
    name: str | None = None,
    raise_on_failure: bool = True,
) -> CheckReport:
    """Run the contract checks on ``module`` at input ``x`` and return a :class:`CheckReport`.

    The module runs in eval mode during the checks (restored afterwards); the first forward call initialises
    data-dependent layers. Exact Jacobians (of a float64 copy of the module, for lower precisions) are computed
    when the per-sample dimension ``D`` is at most ``max_jacobian_dims``; above it the extreme singular values
    are Lanczos estimates and the checks against exact Jacobians are skipped (listed in ``report.notes``).

    Args:
        checks: which of :data:`CHECKS` to run.
        factor: ``K`` of the round-trip tolerances (the log-det tolerances scale with it too); ``None`` uses the
            calibrated constants of :mod:`invertible.testing.tolerances`. Larger values loosen every check.
        max_jacobian_dims: largest ``D`` for exact Jacobians.

    Raises:
        ContractError: when a check fails and ``raise_on_failure`` (the message lists every failure).

    Example:
        >>> import torch, invertible
        >>> layer = invertible.AffineCoupling(4, hidden=8, net="mlp", zero_init=False).double()
        >>> check_invertible(layer, torch.randn(3, 4, dtype=torch.float64)).ok
        True
    """
    unknown = set(checks) - set(CHECKS)
    if unknown:
        raise ValueError(f"check_invertible: unknown checks {sorted(unknown)}; choose from {CHECKS}")
    if not isinstance(x, Tensor) or x.dim() < 1 or x.shape[0] == 0:
        raise ValueError("check_invertible: x must be a tensor with a non-empty batch dimension, got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    report = CheckReport(name or type(module).__name__, x.dtype, int(x[0].numel()))
    try:
        with _eval_mode(module), torch.no_grad():
            _run_checks(module, x, checks, factor, max_jacobian_dims, report)
    except _Abort:
        pass
    return _finish(report, raise_on_failure)


def _run_checks(module: InvertibleModule, x: Tensor, checks: tuple[str, ...], factor: float | None,
                max_jacobian_dims: int, report: CheckReport) -> None:
    fail = report.failures.append
    u, u_ref = torch.finfo(x.dtype).eps, reference_round_off(x.dtype)
    k = ROUNDTRIP_K if factor is None else float(factor)
    k_ld = LOGDET_K if factor is None else LOGDET_K * float(factor) / ROUNDTRIP_K
    batch = x.shape[0]
    y, logdet = _call(fail, "forward", "the forward map", lambda: module(x))
    if "shapes" in checks:
        _check_forward_shapes(x, y, logdet, fail)
        if report.failures:
            return
    x_back, logdet_inv = _call(fail, "roundtrip_forward", "the inverse", lambda: module.inverse(y))
    if "shapes" in checks:
        _check_inverse_shapes(x, x_back, logdet_inv, fail)
        if report.failures:
            return
    y_again, logdet_again = _call(fail, "roundtrip_inverse", "the forward map at the reconstruction",
                                  lambda: module(x_back.nan_to_num()))
    allowance = fixed_point_allowance(module, report.dims)
    if module.inverse_kind == "iterative":
        allowance = max(allowance, module.inverse_atol() * math.sqrt(report.dims))
    norms = lambda t: t.reshape(batch, -1).double().norm(dim=1)  # noqa: E731

    scales, logabsdet, logabsdet_inv, shadow = _measure(module, x, y, x_back, max_jacobian_dims, report)
    cond = scales.condition_number
    report.measured["condition_number"] = float(cond.max())
    input_at_back = None
    if shadow is not None:
        back = x_back.double().nan_to_num()
        input_at_back = logdet_gradient(shadow, back)[1] + logdet_parameter_condition(shadow, back)
    tol = _tolerances(scales, u, u_ref, k, k_ld, allowance, input_at_back)

    def compare(key: str, what: str, err: Tensor, limit: Tensor, reference: tuple[Tensor, Tensor] | None = None
                ) -> None:
        err = err.double()
        if reference is not None and shadow is not None and not bool((err <= limit).all()):
            limit = limit + k_ld * _reference_spread(shadow, *reference, report, key)
        value, bound, i = _worst(err, limit)
        report.measured[key], report.tolerances[key] = float(err.max()), bound
        if not value <= bound:
            fail(f"{key}: {what} is {value:.3g} at sample {i}, above the tolerance {bound:.3g} "
                 f"(condition number {float(cond[i]):.3g}, unit round-off {u:.2g})")

    if "roundtrip_forward" in checks:
        compare("roundtrip_forward", "||x - f^-1(f(x))||", norms(x_back - x), tol.roundtrip_forward)
    if "roundtrip_inverse" in checks:
        compare("roundtrip_inverse", "||y - f(f^-1(y))||", norms(y_again - y), tol.roundtrip_inverse)
    if module.logdet_kind == "estimated" and any(c.startswith("logdet") for c in checks):
        # a stochastic or truncated estimate has no deterministic tolerance; its statistical check is separate
        report.notes.append("log-det checks skipped: the module's log-det is an estimate (logdet_kind='estimated')")
        checks = tuple(c for c in checks if not c.startswith("logdet"))
    if "logdet_inverse" in checks:
        # at the reconstruction x' = f^-1(y): the inverse computes its log-det from the states that lead to x', so
        # its round-trip error (checked above) does not count twice
        compare("logdet_inverse", "|logdet_inv(y) + logdet(f^-1(y))|", (logdet_inv + logdet_again).abs(),
                tol.logdet_pair)
    if "logdet_exact" in checks and logabsdet is not None:
        compare("logdet_exact", "|logdet - log|det J||", (logdet.double() - logabsdet).abs(), tol.logdet,
                reference=(x.double(), logabsdet))
    if "logdet_exact_inverse" in checks and logabsdet_inv is not None:
        compare("logdet_exact_inverse", "|logdet_inv - log|det J_inv||",
                (logdet_inv.double() - logabsdet_inv).abs(), tol.logdet_inverse,
                reference=(x_back.double().nan_to_num(), -logabsdet_inv))
    if "batch_independence" in checks and batch > 1:
        alone = [_call(fail, "batch_independence", "the forward map of one sample", lambda i=i: module(x[i : i + 1]))
                 for i in range(batch)]
        y_alone = torch.cat([a[0] for a in alone])
        ld_alone = torch.cat([a[1] for a in alone])
        compare("batch_independence", "||f(x_i alone) - f(x)_i||", norms(y_alone - y), tol.batch)
        if module.logdet_kind != "estimated":
            compare("batch_independence_logdet", "|logdet(x_i alone) - logdet(x)_i|", (ld_alone - logdet).abs(),
                    tol.batch_logdet)
    if "bounds" in checks:
        _check_bounds(module.lipschitz_bounds(), scales, BOUNDS_RTOL * u, report)
    if "state_dict" in checks:
        _check_state_dict(module, x, y, x_back, tol.roundtrip_forward, tol.roundtrip_inverse, report)


def _reference_spread(shadow: nn.Module, at: Tensor, rev: Tensor, report: CheckReport, key: str) -> Tensor:
    """``|log|det J_rev| - log|det J_fwd||`` at ``at`` (``rev``: the reverse-mode value already computed): how far
    the reverse-mode reference log-det is from the
    forward-mode one (a lower estimate of the reference's own rounding error; :mod:`.tolerances`). Zeros where
    forward mode is not supported (a custom autograd function without a forward-mode rule)."""
    try:
        with torch.enable_grad():
            fwd = torch.linalg.slogdet(exact_jacobian(lambda v: shadow(v)[0], at, mode="forward").detach())[1]
    except (RuntimeError, NotImplementedError):
        return torch.zeros(at.shape[0], dtype=torch.float64)
    spread = (rev - fwd).abs().nan_to_num(nan=0.0, posinf=0.0)
    if bool((spread > 0).any()):
        report.notes.append(f"{key}: judged with the reference's spread added (reverse- and forward-mode Jacobians "
                            f"disagree by up to {float(spread.max()):.3g} in log|det J|)")
    return spread


def _measure(module: InvertibleModule, x: Tensor, y: Tensor, x_back: Tensor, max_jacobian_dims: int,
             report: CheckReport) -> tuple[ErrorScales, Tensor | None, Tensor | None, nn.Module | None]:
    """The error scales at ``x``, the exact log-dets ``log|det J_f(x)|``, ``log|det J_g(y)|`` (``None`` when
    the Jacobians are too large to build) and the float64 copy of the module they were measured on."""
    fail = report.failures.append
    with torch.enable_grad():
        shadow = _call(fail, "jacobian", "a float64 copy of the module", lambda: float64_shadow(module, x))
    x64, y64 = x.double(), y.double()
    terms = _call(fail, "logdet_exact", "the forward map", lambda: leaf_logdet_magnitude(shadow, x64))
    if report.dims > max_jacobian_dims:
        scales = _measure_matrix_free(shadow, x64, y64, terms, report)
        scales.logdet_sensitivity, scales.logdet_input = logdet_gradient(shadow, x64)
        return scales, None, None, shadow
    with torch.enable_grad():
        jac = _call(fail, "jacobian", "the Jacobian of the forward map",
                    lambda: exact_jacobian(lambda v: shadow(v)[0], x64)).detach()
        jac_inv = _call(fail, "jacobian", "the Jacobian of the inverse map",
                        lambda: exact_jacobian(lambda v: shadow.inverse(v)[0], y64)).detach()
    for label, j in (("forward", jac), ("inverse", jac_inv)):
        bad = ~torch.isfinite(j).flatten(1).all(dim=1)
        if bool(bad.any()):
            fail(f"jacobian: the exact Jacobian of the {label} map is not finite at sample {int(bad.nonzero()[0])}")
            raise _Abort
    scales = ErrorScales.from_jacobians(x64, y64, jac, jac_inv, terms, layer_rounding(shadow))
    singular = ~(scales.sigma_min > 0)
    if bool(singular.any()):
        fail(f"jacobian: the Jacobian of the forward map is singular at sample {int(singular.nonzero()[0])} "
             "(the inverse's Jacobian is unbounded): the map is not invertible there")
        raise _Abort
    logabsdet = torch.linalg.slogdet(jac)[1]
    # the inverse's log-det against -log|det J_f| at its own reconstruction x' = f^-1(y) (= log|det J_g(y)| at the
    # exact inverse): the inverse's round-trip error, checked on its own, does not enter the log-det comparison,
    # and an iterative inverse's autograd Jacobian (that of the stopped iteration) is not needed
    with torch.enable_grad():
        jac_back = _call(fail, "jacobian", "the Jacobian of the forward map at the reconstruction",
                         lambda: exact_jacobian(lambda v: shadow(v)[0], x_back.double().nan_to_num())).detach()
    logabsdet_inv = -torch.linalg.slogdet(jac_back)[1]
    scales.logdet_sensitivity, scales.logdet_input = logdet_gradient(shadow, x64)
    scales.logdet_input = scales.logdet_input + logdet_parameter_condition(shadow, x64)
    return scales, logabsdet, logabsdet_inv, shadow


def _measure_matrix_free(shadow: nn.Module, x64: Tensor, y64: Tensor, terms: Tensor, report: CheckReport
                         ) -> ErrorScales:
    from ..diagnostics.estimates import extreme_singular_values

    report.notes.append(f"D = {report.dims} is above max_jacobian_dims: no exact Jacobians; logdet_exact and "
                        "logdet_exact_inverse skipped, singular values from Lanczos estimates")
    try:
        with torch.enable_grad():
            est = extreme_singular_values(shadow, x64, method="lanczos", rtol=1e-3,  # type: ignore[arg-type]
                                          max_iter=60)
        assert est.forward is not None and est.inverse is not None
        # theta + r is within r of a singular value above theta: a safe side for both extremes
        sigma_max = est.forward.value + est.forward.residual
        sigma_min = 1.0 / (est.inverse.value + est.inverse.residual)
        method = "lanczos"
    except (RuntimeError, NotImplementedError, TypeError) as err:
        report.notes.append(f"Lanczos estimate failed ({type(err).__name__}: {err}); assuming a condition number "
                            "of u**-0.5 split evenly between the two directions")
        u = torch.finfo(torch.float32).eps
        sigma_max = torch.full((x64.shape[0],), u**-0.25, dtype=torch.float64)
        sigma_min = 1.0 / sigma_max
        method = "assumed"
    return ErrorScales.from_extremes(x64, y64, sigma_max, sigma_min, terms, method, layer_rounding(shadow))


def _check_forward_shapes(x: Tensor, y: Tensor, logdet: Tensor, fail) -> None:  # type: ignore[no-untyped-def]
    b = x.shape[0]
    if not isinstance(y, Tensor) or y.shape[0] != b or y[0].numel() != x[0].numel():
        fail(f"shapes: forward maps {tuple(x.shape)} to {tuple(y.shape)}; the batch size and the number of "
             "entries per sample must be kept")
        return
    if logdet.shape != (b,):
        fail(f"shapes: logdet has shape {tuple(logdet.shape)}, expected ({b},): one log-det per sample")
    for label, t in (("output", y), ("logdet", logdet)):
        if t.dtype != x.dtype or t.device != x.device:
            fail(f"shapes: the {label} is {t.dtype} on {t.device}; the input is {x.dtype} on {x.device} (dtype "
                 "and device must follow the input)")
    if not bool(torch.isfinite(y).all()) or not bool(torch.isfinite(logdet).all()):
        fail("shapes: the forward output or log-det is not finite at a finite input (a singular layer?)")


def _check_inverse_shapes(x: Tensor, x_back: Tensor, logdet_inv: Tensor, fail) -> None:  # type: ignore[no-untyped-def]
    b = x.shape[0]
    if x_back.shape != x.shape:
        fail(f"shapes: the inverse returns {tuple(x_back.shape)}, expected {tuple(x.shape)}")
    if logdet_inv.shape != (b,):
        fail(f"shapes: logdet_inv has shape {tuple(logdet_inv.shape)}, expected ({b},): one log-det per sample")
    for label, t in (("inverse", x_back), ("logdet_inv", logdet_inv)):
        if t.dtype != x.dtype or t.device != x.device:
            fail(f"shapes: the {label} is {t.dtype} on {t.device}; the input is {x.dtype} on {x.device} (dtype "
                 "and device must follow the input)")


def _check_bounds(bounds, scales: ErrorScales, rel: float, report: CheckReport) -> None:  # type: ignore[no-untyped-def]
    measured = {"bound_forward": float(scales.sigma_max.max()), "bound_inverse": float((1 / scales.sigma_min).max())}
    for key, bound in (("bound_forward", bounds.forward), ("bound_inverse", bounds.inverse)):
        if bound is None:
            continue
        report.measured[key], report.tolerances[key] = measured[key], bound
        if measured[key] > bound * (1 + rel) + rel:
            direction = "forward" if key == "bound_forward" else "inverse"
            report.failures.append(
                f"{key}: the measured {direction} Lipschitz constant {measured[key]:.6g} exceeds the analytic "
                f"bound {bound:.6g} ({scales.method} singular values)"
            )


def _non_persistent_buffers(module: nn.Module) -> list[Tensor]:
    """Floating-point buffers registered with ``persistent=False`` (not in the state dict)."""
    found = []
    for m in module.modules():
        for name in getattr(m, "_non_persistent_buffers_set", ()):
            t = m._buffers.get(name)
            if t is not None and t.is_floating_point():
                found.append(t)
    return found


def _perturb(module: nn.Module) -> None:
    """A small, seeded change of every parameter and of every floating buffer left out of the state dict (enough
    to expose a stale cache or a tensor that a state dict does not carry, too small to break a map). Persistent
    buffers are left alone: they may hold structure (a permutation matrix, signs) that a change would break."""
    generator = torch.Generator().manual_seed(0)
    tensors = [*module.parameters(), *_non_persistent_buffers(module)]
    with torch.no_grad():
        for t in tensors:
            noise = torch.randn(t.shape, generator=generator, dtype=torch.float64).to(t.device, t.dtype)
            t.add_(0.01 * noise + 0.005)


def _check_state_dict(module: InvertibleModule, x: Tensor, y: Tensor, x_back: Tensor, tol_x: Tensor,
                      tol_y: Tensor, report: CheckReport) -> None:
    """Tensors changed in place must reach the map, and a state dict must restore the outputs exactly.

    A copy's parameters (and floating buffers left out of the state dict) are perturbed in place (by about 1%): its
    inverse must still invert its forward, within 10x the original's round-trip tolerance (a 1% change moves the
    conditioning by far less); a second copy loads the first one's state dict: both must compute the same forward
    map and inverse, within twice the evaluation tolerances. A stale cached inverse fails the first, a tensor that
    the state dict does not carry the second (``state_dict_update``). Then the original state dict is loaded into
    the perturbed copy: forward and inverse must equal the original's bit for bit (``state_dict``: a tensor missing
    from the state dict, or a cache not invalidated on load).
    """
    clone = copy.deepcopy(module)
    _perturb(clone)
    fresh = copy.deepcopy(module)
    with _eval_mode(clone), _eval_mode(fresh), torch.no_grad(), allow_nonfinite():
        y_c, _ = clone(x)
        x_c, _ = clone.inverse(y_c)
        fresh.load_state_dict(clone.state_dict())
        y_f, _ = fresh(x)
        x_f, _ = fresh.inverse(y_c)
        clone.load_state_dict(module.state_dict())
        y2, _ = clone(x)
        x2, _ = clone.inverse(y)
    batch = x.shape[0]
    norms = lambda t: t.reshape(batch, -1).double().norm(dim=1)  # noqa: E731
    parts = [(norms(x_c - x), 10 * tol_x, "its inverse no longer inverts its forward"),
             (norms(y_c - y_f), 2 * tol_y, "a copy loaded from its state dict computes another forward map"),
             (norms(x_c - x_f), 2 * tol_x, "a copy loaded from its state dict computes another inverse")]
    ratios = torch.stack([torch.nan_to_num(err / limit, nan=math.inf) for err, limit, _ in parts])
    j, i = divmod(int(torch.argmax(ratios)), x.shape[0])
    err, limit, what = parts[j]
    report.measured["state_dict_update"], report.tolerances["state_dict_update"] = float(err[i]), float(limit[i])
    if not float(ratios[j, i]) <= 1:
        report.failures.append(
            f"state_dict_update: after an in-place change of the parameters, {what}: off by "
            f"{float(err[i]):.3g} at sample {i}, above {float(limit[i]):.3g} (a cached inverse that was not "
            "invalidated, or a tensor that is not in the state dict?)")
    err = max(float((y2 - y).abs().max()), float((x2 - x_back).abs().max()))
    report.measured["state_dict"], report.tolerances["state_dict"] = err, 0.0
    if not err == 0.0:
        report.failures.append(f"state_dict: a copy loaded from the state dict differs by {err:.3g} (expected 0): "
                               "a tensor is not in the state dict or a cache was not invalidated on load")


def check_state_dict(module: InvertibleModule, x: Tensor) -> CheckReport:
    """Only the state-dict round trip of :func:`check_invertible`."""
    return check_invertible(module, x, checks=("state_dict",))


class _Inverse(nn.Module):
    """A module whose forward is ``inner.inverse`` (so ``functional_call`` can swap its parameters)."""

    def __init__(self, inner: InvertibleModule) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.inner.inverse(y)


def check_gradients(module: InvertibleModule, x: Tensor, *, parameters: bool = True) -> None:
    """``torch.autograd.gradcheck`` (float64, fast mode) of forward and inverse, w.r.t. input and parameters.

    Raises:
        ContractError: naming the direction whose analytic gradient disagrees with finite differences.
    """
    if x.dtype != torch.float64:
        raise ValueError("check_gradients needs float64 inputs and parameters (module.double())")
    with _eval_mode(module):
        with torch.no_grad():
            y, _ = module(x)
        for direction, wrapper, inp in (("forward", module, x), ("inverse", _Inverse(module), y)):
            prefix = "" if wrapper is module else "inner."
            names = [prefix + n for n, p in module.named_parameters() if p.requires_grad] if parameters else []
            values = [p.detach().clone().requires_grad_(True) for n, p in module.named_parameters()
                      if p.requires_grad] if parameters else []

            def fn(v: Tensor, *ps: Tensor, wrapper: nn.Module = wrapper, names: list[str] = names
                   ) -> tuple[Tensor, Tensor]:
                return torch.func.functional_call(wrapper, dict(zip(names, ps)), (v,), strict=False)

            inputs = (inp.detach().clone().requires_grad_(True), *values)
            try:
                torch.autograd.gradcheck(fn, inputs, fast_mode=True, atol=1e-6, rtol=1e-4)
            except Exception as err:  # gradcheck raises GradcheckError (a RuntimeError)
                raise ContractError(f"gradcheck of the {direction} map failed: {err}") from err


def _finish(report: CheckReport, raise_on_failure: bool) -> CheckReport:
    if report.failures and raise_on_failure:
        raise ContractError(f"{report.name} broke the layer contract:\n" + "\n".join(f"- {f}" for f in report.failures))
    return report
