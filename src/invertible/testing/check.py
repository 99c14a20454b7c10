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
- stochastic log-dets (``logdet_kind == "estimated"``): the mean of many draws against the exact value, within a
  computed confidence interval (:mod:`invertible.testing.stochastic`);
- batch independence: a sample alone and in the batch are two evaluations of the forward map, within twice the
  evaluation tolerances;
- Lipschitz bounds: never below the measured ``sigma_max`` (forward) and ``1 / sigma_min`` (inverse), up to
  ``BOUNDS_RTOL`` relative rounding of the bound;
- state dicts (:mod:`invertible.testing.state`): changes of the trainable parameters must reach the map (no stale
  cache), a copy loaded from the state dict must compute the same map (no tensor left out of it), and loading a
  state dict must restore the outputs bit for bit.

An iterative inverse (``inverse_kind == "iterative"``) is allowed what its declared stopping rule allows
(``inverse_atol``, or a residual block's own report) in every property; one that reports non-convergence (a
``ConvergenceError``, a ``ConvergenceWarning``, a ``last_inverse`` report with ``converged=False``) fails
``convergence``, and a round trip beyond its declared tolerance is reported as an inverse that stopped short of it.

Foreign modules are taken as they are: ``context=`` is passed to every call of a conditional map (sliced with the
batch); integer and frozen tensors are left alone; Jacobians come from ``torch.func`` or, where it cannot trace
the map, from plain autograd, and are compared with finite differences (a ``no_grad`` region inside the map gives
a Jacobian that is not its derivative: a failure of the forward map, a note for an inverse, whose Jacobian is
then taken as ``J_f(f^-1(y))^-1``); a log-det returned in another dtype than the input fails ``shapes`` but the
other checks still measure by how much it is off.

Above ``max_jacobian_dims`` entries per sample the extreme singular values come from matrix-free Lanczos
estimates (:func:`invertible.diagnostics.extreme_singular_values`), the round-trip scales are normwise
(``||y|| / sigma_min + ||x||``) and the checks against exact Jacobians are skipped (the report says so).
A non-finite output, a singular Jacobian or a ``torch.linalg.LinAlgError`` inside the module is reported as a
failure of the property being checked, never raised as torch's own error; so is any other exception a module call
raises (named in the failure). A forward or inverse that changes the tensor it is given in place fails ``inputs``
(checked whatever ``checks`` selects: the other checks would measure a changed input).

Conditional layers are checked at a fixed context (``context=``): every check above holds for ``x -> f(x; c)``
with the Jacobians taken in ``x`` (sample ``i`` at ``context_i``), batch independence covers the contexts too
(sample ``i`` alone with ``context_i``), and one more check, ``context``, fails a layer whose output does not
change when the context does (a conditional layer that ignores its context).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.gradcheck import GradcheckError

from ..base import InvertibleModule, allow_nonfinite
from ..diagnostics.jacobian import exact_jacobian
from ..layers.residual import ConvergenceError, ConvergenceWarning
from .grad_mode import calls_with_grad, no_grad_unless_needed
from .jacobians import MISMATCH_RTOL, JacobianError, derivative_mismatch, jacobians
from .state import check_state_dict_tensors
from .stochastic import ALPHA, DRAWS, check_estimates
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
    "context",
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

    @property
    def failed(self) -> list[str]:
        """The names of the failed properties (the text before the colon of each failure), in order."""
        return list(dict.fromkeys(f.split(":", 1)[0] for f in self.failures))

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


def _apply(module: nn.Module, v: Tensor, context: Tensor | None, reverse: bool) -> tuple[Tensor, Tensor]:
    """One call of the map (or its inverse), with ``context`` only when there is one."""
    fn = module.inverse if reverse else module
    return fn(v) if context is None else fn(v, context=context)  # type: ignore[operator]


def _rows(context: Tensor | None, i: int) -> Tensor | None:
    return None if context is None else context[i : i + 1]


def _double(t: Tensor | None) -> Tensor | None:
    return t.double() if t is not None and t.is_floating_point() else t


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _call(report: CheckReport, prop: str, what: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` and detach the tensors it returns; a ``LinAlgError`` (a singular matrix inside the module)
    becomes a failure of ``prop``, an iterative inverse's ``ConvergenceError`` or ``ConvergenceWarning`` a failure
    of ``convergence``, and any other exception a failure of ``prop`` that names it (never torch's raw error)."""
    try:
        with allow_nonfinite(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = fn()
    except (_Abort, JacobianError):
        raise
    except torch.linalg.LinAlgError as err:
        report.failures.append(
            f"{prop}: {what} raised torch.linalg.LinAlgError ({_first_line(err)}): a singular matrix inside the "
            "module, so the map is not invertible with these parameters")
        raise _Abort from err
    except ConvergenceError as err:
        report.failures.append(f"convergence: {what} did not converge (ConvergenceError: {_first_line(err)})")
        raise _Abort from err
    except Exception as err:
        report.failures.append(f"{prop}: {what} raised {type(err).__name__}: {_first_line(err)}")
        raise _Abort from err
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            if not any(f.startswith("convergence:") for f in report.failures):
                report.failures.append(f"convergence: {what} did not converge (ConvergenceWarning: "
                                       f"{_first_line(w.message)})")  # type: ignore[arg-type]
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    if isinstance(out, tuple):
        return tuple(t.detach() if isinstance(t, Tensor) else t for t in out)
    return out.detach() if isinstance(out, Tensor) else out


def _unchanged(report: CheckReport, what: str, given: Tensor, kept: Tensor) -> None:
    """Fail ``inputs`` if a call changed the tensor it was given (``given``, a copy of ``kept``) in place."""
    same = (given == kept) | (torch.isnan(given) & torch.isnan(kept))
    if not bool(same.all()):
        change = float(torch.nan_to_num((given.double() - kept.double()).abs(), nan=math.inf).max())
        report.failures.append(f"inputs: {what} changed the tensor it was given in place (entries moved by up to "
                               f"{change:.3g}): a caller's tensor must be left as it is")


def _needs_grad(module: nn.Module, x: Tensor, context: Tensor | None) -> str | None:
    """Why the module's forward cannot run under ``torch.no_grad()`` but can with autograd on (``None`` if it can
    run without autograd, or fails either way: the checks then report that failure)."""
    try:
        with torch.no_grad(), allow_nonfinite(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _apply(module, x.clone(), context, False)
        return None
    except Exception as err:
        refused = err
    try:
        with torch.enable_grad(), allow_nonfinite(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _apply(module, x.clone(), context, False)
    except Exception:
        return None
    return (f"the module was called with autograd on: under torch.no_grad() its forward raises "
            f"{type(refused).__name__} ({_first_line(refused)})")


def _reported_convergence(module: nn.Module, report: CheckReport) -> None:
    """Fail ``convergence`` if an iterative inverse inside ``module`` reports that its last call did not converge
    (a ``last_inverse`` report with ``converged=False``, as :class:`~invertible.ResidualBlock` keeps)."""
    if any(f.startswith("convergence:") for f in report.failures):
        return
    for name, m in module.named_modules():
        last = getattr(m, "last_inverse", None)
        if last is not None and getattr(last, "converged", True) is False:
            report.failures.append(
                f"convergence: the iterative inverse of {name or type(m).__name__} reports that it did not converge "
                f"({getattr(last, 'iterations', '?')} iterations, last step {getattr(last, 'residual', math.nan):.3g}"
                f" against a tolerance of {getattr(last, 'tolerance', math.nan):.3g})")
            return


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
        batch_logdet=2 * k_ld * u * (scales.logdet_terms + c_x),
    )


def check_invertible(
    module: InvertibleModule,
    x: Tensor,
    *,
    context: Tensor | None = None,
    checks: tuple[str, ...] = CHECKS,
    factor: float | None = None,
    max_jacobian_dims: int = 1024,
    draws: int = DRAWS,
    alpha: float = ALPHA,
    name: str | None = None,
    raise_on_failure: bool = True,
) -> CheckReport:
    """Run the contract checks on ``module`` at input ``x`` and return a :class:`CheckReport`.

    The module runs in eval mode during the checks (restored afterwards); the first forward call initialises
    data-dependent layers. Exact Jacobians (of a float64 copy of the module, for lower precisions) are computed
    when the per-sample dimension ``D`` is at most ``max_jacobian_dims``; above it the extreme singular values
    are Lanczos estimates and the checks against exact Jacobians are skipped (listed in ``report.notes``).

    Args:
        context: the condition of a conditional map, passed as ``context=`` to every call (batch first, sliced
            with ``x``); ``None`` calls ``module(x)`` and ``module.inverse(y)``.
        checks: which of :data:`CHECKS` to run.
        factor: ``K`` of the round-trip tolerances (the log-det tolerances scale with it too); ``None`` uses the
            calibrated constants of :mod:`invertible.testing.tolerances`. Larger values loosen every check.
        max_jacobian_dims: largest ``D`` for exact Jacobians.
        draws, alpha: draws per sample and family-wise false-alarm rate of the statistical check of an estimated
            log-det (:mod:`invertible.testing.stochastic`).

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
    if context is not None and (not isinstance(context, Tensor) or context.dim() < 1
                                or context.shape[0] != x.shape[0]):
        got = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
        raise ValueError(f"check_invertible: context must be a tensor with the batch size of x ({x.shape[0]}) "
                         f"first, got {got}; repeat a shared condition per sample")
    report = CheckReport(name or type(module).__name__, x.dtype, int(x[0].numel()))
    x = x.detach().clone()  # foreign code may change its argument or its flags (FrEIA sets requires_grad on it)
    with _eval_mode(module):
        needs_grad = _needs_grad(module, x, context)
        if needs_grad:
            report.notes.append(needs_grad)
        try:
            with calls_with_grad(needs_grad is not None), no_grad_unless_needed():
                _run_checks(module, x, context, checks, factor, max_jacobian_dims, draws, alpha, report)
        except _Abort:
            pass
    return _finish(report, raise_on_failure)


def _run_checks(module: InvertibleModule, x: Tensor, context: Tensor | None, checks: tuple[str, ...],
                factor: float | None, max_jacobian_dims: int, draws: int, alpha: float, report: CheckReport) -> None:
    fail = report.failures.append
    u, u_ref = torch.finfo(x.dtype).eps, reference_round_off(x.dtype)
    k = ROUNDTRIP_K if factor is None else float(factor)
    k_ld = LOGDET_K if factor is None else LOGDET_K * float(factor) / ROUNDTRIP_K
    batch = x.shape[0]
    given = x.clone()
    y, logdet = _call(report, "forward", "the forward map", lambda: _apply(module, given, context, False))
    _unchanged(report, "the forward map", given, x)
    if "shapes" in checks and _check_forward_shapes(x, y, logdet, fail):
        return
    given = y.clone()
    x_back, logdet_inv = _call(report, "roundtrip_forward", "the inverse",
                               lambda: _apply(module, given, context, True))
    _unchanged(report, "the inverse", given, y)
    _reported_convergence(module, report)
    if "shapes" in checks and _check_inverse_shapes(x, x_back, logdet_inv, fail):
        return
    y_again, logdet_again = _call(report, "roundtrip_inverse", "the forward map at the reconstruction",
                                  lambda: _apply(module, x_back.nan_to_num().clone(), context, False))
    allowance = fixed_point_allowance(module, report.dims)
    iterative = module.inverse_kind == "iterative"
    if iterative:
        allowance = max(allowance, module.inverse_atol() * math.sqrt(report.dims))
    norms = lambda t: t.reshape(batch, -1).double().norm(dim=1)  # noqa: E731

    scales, logabsdet, logabsdet_inv, shadow = _measure(module, x, y, x_back, context, max_jacobian_dims, report)
    cond = scales.condition_number
    report.measured["condition_number"] = float(cond.max())
    input_at_back = None
    if shadow is not None:
        back, ctx64 = x_back.double().nan_to_num(), _double(context)
        input_at_back = (logdet_gradient(shadow, back, ctx64)[1]
                         + logdet_parameter_condition(shadow, back, ctx64))
    tol = _tolerances(scales, u, u_ref, k, k_ld, allowance, input_at_back)
    stopped_short = (f"; the inverse is iterative and this is beyond what its declared tolerance allows "
                     f"(inverse_atol={module.inverse_atol():.3g}): it stopped before converging to it"
                     if iterative else "")

    def compare(key: str, what: str, err: Tensor, limit: Tensor, hint: str = "",
                reference: tuple[Tensor, Tensor] | None = None) -> None:
        err = err.double()
        if reference is not None and shadow is not None and not bool((err <= limit).all()):
            limit = limit + k_ld * _reference_spread(shadow, *reference, context, report, key)
        value, bound, i = _worst(err, limit)
        report.measured[key], report.tolerances[key] = float(err.max()), bound
        if not value <= bound:
            fail(f"{key}: {what} is {value:.3g} at sample {i}, above the tolerance {bound:.3g} "
                 f"(condition number {float(cond[i]):.3g}, unit round-off {u:.2g}){hint}")

    if "roundtrip_forward" in checks:
        compare("roundtrip_forward", "||x - f^-1(f(x))||", norms(x_back - x), tol.roundtrip_forward, stopped_short)
    if "roundtrip_inverse" in checks:
        compare("roundtrip_inverse", "||y - f(f^-1(y))||", norms(y_again - y), tol.roundtrip_inverse, stopped_short)
    logdet_checks = tuple(c for c in checks if c.startswith("logdet"))
    if module.logdet_kind == "estimated" and logdet_checks:
        _check_estimated(module, x, y, context, logabsdet, logabsdet_inv, tol.logdet, logdet_checks, draws, alpha,
                         report)
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
        alone = [_call(report, "batch_independence", "the forward map of one sample",
                       lambda i=i: _apply(module, x[i : i + 1].clone(), _rows(context, i), False))
                 for i in range(batch)]
        y_alone = torch.cat([a[0] for a in alone])
        ld_alone = torch.cat([a[1] for a in alone])
        compare("batch_independence", "||f(x_i alone) - f(x)_i||", norms(y_alone - y), tol.batch)
        if module.logdet_kind != "estimated":
            compare("batch_independence_logdet", "|logdet(x_i alone) - logdet(x)_i|",
                    (ld_alone.double() - logdet.double()).abs(), tol.batch_logdet)
    if "bounds" in checks:
        _check_bounds(module.lipschitz_bounds(), scales, BOUNDS_RTOL * u, report)
    if "state_dict" in checks:
        check_state_dict_tensors(module, lambda m, v, rev: _apply(m, v, context, rev), x, y, x_back,
                                 tol.roundtrip_forward, tol.roundtrip_inverse, report.failures, report.measured,
                                 report.tolerances, report.notes)
    if "context" in checks and context is not None and context.is_floating_point():
        _check_context(module, x, y, x_back, context, tol.roundtrip_forward, tol.roundtrip_inverse, report)


def _check_context(module: nn.Module, x: Tensor, y: Tensor, x_back: Tensor, context: Tensor, tol_x: Tensor,
                   tol_y: Tensor, report: CheckReport) -> None:
    """Another context (each entry shifted by 1) must move the output of some sample, forward or inverse, by
    more than the evaluation tolerance: a conditional layer that ignores its context fails."""
    batch = x.shape[0]
    norms = lambda t: t.reshape(batch, -1).double().norm(dim=1)  # noqa: E731
    with allow_nonfinite():
        y_other = _call(report, "context", "the forward map at another context",
                        lambda: _apply(module, x.clone(), context + 1, False))[0]
        x_other = _call(report, "context", "the inverse at another context",
                        lambda: _apply(module, y.clone(), context + 1, True))[0]
    ratio = torch.maximum(norms(y_other - y) / tol_y, norms(x_other - x_back) / tol_x).nan_to_num(nan=0.0)
    i = int(torch.argmax(ratio))
    change = max(float(norms(y_other - y)[i]), float(norms(x_other - x_back)[i]))
    report.measured["context"], report.tolerances["context"] = change, float(torch.maximum(tol_x, tol_y)[i])
    if not float(ratio[i]) > 1:
        report.failures.append(
            f"context: the output does not change when the context changes (largest change {change:.3g}, "
            f"within the evaluation tolerance): the layer ignores its context")


def _check_estimated(module: nn.Module, x: Tensor, y: Tensor, context: Tensor | None, exact: Tensor | None,
                     exact_inv: Tensor | None, tolerance: Tensor, checks: tuple[str, ...], draws: int, alpha: float,
                     report: CheckReport) -> None:
    """The statistical check of a stochastic log-det in both directions (``logdet_inverse`` is covered by the
    inverse's comparison with the exact value at the reconstruction)."""
    if exact is None or exact_inv is None:
        report.notes.append("log-det checks skipped: the log-det is an estimate (logdet_kind='estimated') and there "
                            "is no exact Jacobian to compare its mean with (D above max_jacobian_dims)")
        return
    directions = []
    if {"logdet_exact", "logdet_inverse"} & set(checks):
        directions.append(("logdet_estimated", "log-det", lambda: _apply(module, x.clone(), context, False)[1],
                           exact))
    if {"logdet_exact_inverse", "logdet_inverse"} & set(checks):
        directions.append(("logdet_estimated_inverse", "inverse's log-det",
                           lambda: _apply(module, y.clone(), context, True)[1], exact_inv))
    comparisons = x.shape[0] * len(directions)
    for key, label, draw, value in directions:
        result = _call(report, key, f"the {label} estimate",
                       lambda draw=draw, value=value, label=label: check_estimates(
                           draw, value, tolerance, label=label, comparisons=comparisons, draws=draws, alpha=alpha))
        i = result.worst()
        report.measured[key], report.tolerances[key] = float(result.error[i]), float(result.half_width[i])
        if not result.ok:
            report.failures.append(f"{key}: {result.describe()}")
    report.notes.append(f"the log-det is an estimate (logdet_kind='estimated'): its mean over {draws} draws was "
                        f"compared with the exact value, at a family-wise false-alarm rate of {alpha:.2g}")


class _WithContext(nn.Module):
    """``module`` with a fixed ``context`` (for the matrix-free estimates, which call ``module(v)``)."""

    def __init__(self, module: nn.Module, context: Tensor | None) -> None:
        super().__init__()
        self.module, self.context = module, context

    def forward(self, v: Tensor) -> tuple[Tensor, Tensor]:
        return _apply(self.module, v, self.context, False)

    def inverse(self, v: Tensor) -> tuple[Tensor, Tensor]:
        return _apply(self.module, v, self.context, True)


def _reference_spread(shadow: nn.Module, at: Tensor, rev: Tensor, context: Tensor | None, report: CheckReport,
                      key: str) -> Tensor:
    """``|log|det J_rev| - log|det J_fwd||`` at ``at`` (``rev``: the reverse-mode value already computed): how far
    the reverse-mode reference log-det is from the forward-mode one (a lower estimate of the reference's own
    rounding error; :mod:`.tolerances`). Zeros where forward mode is not supported (a custom autograd function
    without a forward-mode rule, foreign code that refuses jacfwd)."""
    ctx = _double(context)
    try:
        with torch.enable_grad():
            fwd = torch.cat([torch.linalg.slogdet(exact_jacobian(
                lambda v, c=_rows(ctx, i): _apply(shadow, v, c, False)[0], at[i : i + 1], mode="forward").detach())[1]
                for i in range(at.shape[0])])
    except Exception:  # RuntimeError, NotImplementedError, or whatever foreign code raises under jacfwd
        return torch.zeros(at.shape[0], dtype=torch.float64)
    spread = (rev - fwd).abs().nan_to_num(nan=0.0, posinf=0.0)
    if bool((spread > 0).any()):
        report.notes.append(f"{key}: judged with the reference's spread added (reverse- and forward-mode Jacobians "
                            f"disagree by up to {float(spread.max()):.3g} in log|det J|)")
    return spread


def _measure(module: InvertibleModule, x: Tensor, y: Tensor, x_back: Tensor, context: Tensor | None,
             max_jacobian_dims: int, report: CheckReport
             ) -> tuple[ErrorScales, Tensor | None, Tensor | None, nn.Module | None]:
    """The error scales at ``x``, the exact log-dets ``log|det J_f(x)|``, ``log|det J_g(y)|`` (``None`` when
    the Jacobians are too large to build) and the float64 copy of the module they were measured on."""
    fail = report.failures.append
    ctx = _double(context)
    with torch.enable_grad():
        shadow = _call(report, "jacobian", "a float64 copy of the module", lambda: _shadow(module, x, context, report))
    x64, y64 = x.double(), y.double()
    terms = _call(report, "logdet_exact", "the forward map", lambda: leaf_logdet_magnitude(shadow, x64, ctx))
    if report.dims > max_jacobian_dims:
        scales = _measure_matrix_free(_WithContext(shadow, ctx), x64, y64, terms, report)
        scales.logdet_sensitivity, scales.logdet_input = logdet_gradient(shadow, x64, ctx)
        return scales, None, None, shadow

    def forward(v: Tensor, c: Tensor | None) -> Tensor:
        return _apply(shadow, v, c, False)[0]

    def inverse(v: Tensor, c: Tensor | None) -> Tensor:
        return _apply(shadow, v, c, True)[0]

    x_back64 = x_back.double().nan_to_num()
    jac = _jacobian(forward, x64, ctx, "the forward map", report)
    mismatch = _call(report, "jacobian", "the forward map", lambda: derivative_mismatch(forward, x64, ctx, jac))
    if bool((mismatch > MISMATCH_RTOL).any()):
        i = int(torch.argmax(mismatch))
        fail(f"jacobian: the derivative autograd computes for the forward map is not the map's: J v differs from "
             f"central differences by {float(mismatch[i]):.3g} (relative) at sample {i} (a torch.no_grad() region or "
             "a detach() inside forward?); the log-det and conditioning checks need the map's own derivative")
        raise _Abort
    # the inverse's log-det against -log|det J_f| at its own reconstruction x' = f^-1(y) (= log|det J_g(y)| at the
    # exact inverse): the inverse's round-trip error, checked on its own, does not enter the log-det comparison,
    # and an iterative inverse's autograd Jacobian (that of the stopped iteration) is not needed
    jac_back = _jacobian(forward, x_back64, ctx, "the forward map at the reconstruction", report)
    jac_inv = _inverse_jacobian(inverse, y64, ctx, jac_back, report)
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
    logabsdet_inv = -torch.linalg.slogdet(jac_back)[1]
    scales.logdet_sensitivity, scales.logdet_input = logdet_gradient(shadow, x64, ctx)
    scales.logdet_input = scales.logdet_input + logdet_parameter_condition(shadow, x64, ctx)
    return scales, logabsdet, logabsdet_inv, shadow


def _shadow(module: nn.Module, x: Tensor, context: Tensor | None, report: CheckReport) -> nn.Module:
    try:
        return float64_shadow(module, x, context)
    except (torch.linalg.LinAlgError, ConvergenceError):
        raise
    except Exception as err:  # deepcopy or .double() refused by foreign code
        report.failures.append(f"jacobian: a float64 copy of the module could not be made ({type(err).__name__}: "
                               f"{_first_line(err)}); check the module in float64 instead")
        raise _Abort from err


def _jacobian(fn: Callable[[Tensor, Tensor | None], Tensor], v: Tensor, context: Tensor | None, what: str,
              report: CheckReport) -> Tensor:
    try:
        with torch.enable_grad():
            jac, how = _call(report, "jacobian", what, lambda: jacobians(fn, v, context))
    except JacobianError as err:
        report.failures.append(f"jacobian: the Jacobian of {what} could not be computed: {err}")
        raise _Abort from err
    if how != "torch.func":
        note = f"Jacobians by {how}"
        if note not in report.notes:
            report.notes.append(note)
    return jac


def _inverse_jacobian(inverse: Callable[[Tensor, Tensor | None], Tensor], y64: Tensor, context: Tensor | None,
                      jac_back: Tensor, report: CheckReport) -> Tensor:
    """The inverse's Jacobian at ``y`` by autograd if that is its derivative, else ``J_f(f^-1(y))^-1`` (a solver
    run without a graph is differentiated through its last step only: a Jacobian, but not the inverse's)."""
    why = ""
    try:
        with torch.enable_grad(), allow_nonfinite():
            jac_inv, _ = jacobians(inverse, y64, context)
        mismatch = derivative_mismatch(inverse, y64, context, jac_inv)
        if bool((mismatch > MISMATCH_RTOL).any()):
            why = (f"its autograd derivative differs from central differences by {float(mismatch.max()):.3g} "
                   "(relative; a solver run under torch.no_grad()?)")
    except (JacobianError, ConvergenceError) as err:
        why = f"autograd could not differentiate it ({_first_line(err)})"
    if not why:
        return jac_inv
    report.notes.append(f"the inverse's Jacobian is J_f(f^-1(y))^-1: {why}")
    try:
        return torch.linalg.inv(jac_back)
    except torch.linalg.LinAlgError as err:
        report.failures.append("jacobian: the Jacobian of the forward map at the reconstruction is singular: the "
                               "map is not invertible there")
        raise _Abort from err


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




def _check_forward_shapes(x: Tensor, y: Any, logdet: Any, fail: Callable[[str], None]) -> bool:
    """Shape, dtype and finiteness of the forward outputs; ``True`` if the other checks cannot run (a wrong
    shape, dtype or device of the output, a non-finite value). A log-det in another dtype is a failure, not a
    stop: the other checks then measure what it costs."""
    b = x.shape[0]
    if not isinstance(y, Tensor) or y.shape[0] != b or y[0].numel() != x[0].numel():
        fail(f"shapes: forward maps {tuple(x.shape)} to {tuple(getattr(y, 'shape', ()))}; the batch size and the "
             "number of entries per sample must be kept")
        return True
    if not isinstance(logdet, Tensor) or logdet.shape != (b,):
        fail(f"shapes: logdet has shape {tuple(getattr(logdet, 'shape', ()))}, expected ({b},): one log-det per "
             "sample")
        return True
    fatal = False
    for label, t in (("output", y), ("logdet", logdet)):
        if t.dtype != x.dtype or t.device != x.device:
            fail(f"shapes: the {label} is {t.dtype} on {t.device}; the input is {x.dtype} on {x.device} (dtype "
                 "and device must follow the input)")
            fatal = fatal or label == "output" or t.device != x.device
    if not bool(torch.isfinite(y).all()) or not bool(torch.isfinite(logdet).all()):
        fail("shapes: the forward output or log-det is not finite at a finite input (a singular layer?)")
        return True
    return fatal


def _check_inverse_shapes(x: Tensor, x_back: Any, logdet_inv: Any, fail: Callable[[str], None]) -> bool:
    b = x.shape[0]
    if not isinstance(x_back, Tensor) or x_back.shape != x.shape:
        fail(f"shapes: the inverse returns {tuple(getattr(x_back, 'shape', ()))}, expected {tuple(x.shape)}")
        return True
    if not isinstance(logdet_inv, Tensor) or logdet_inv.shape != (b,):
        fail(f"shapes: logdet_inv has shape {tuple(getattr(logdet_inv, 'shape', ()))}, expected ({b},): one "
             "log-det per sample")
        return True
    fatal = False
    for label, t in (("inverse", x_back), ("logdet_inv", logdet_inv)):
        if t.dtype != x.dtype or t.device != x.device:
            fail(f"shapes: the {label} is {t.dtype} on {t.device}; the input is {x.dtype} on {x.device} (dtype "
                 "and device must follow the input)")
            fatal = fatal or label == "inverse" or t.device != x.device
    return fatal


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


def check_state_dict(module: InvertibleModule, x: Tensor, *, context: Tensor | None = None) -> CheckReport:
    """Only the state-dict checks of :func:`check_invertible` (:mod:`invertible.testing.state`)."""
    return check_invertible(module, x, context=context, checks=("state_dict",))


class _Inverse(nn.Module):
    """A module whose forward is ``inner.inverse`` (so ``functional_call`` can swap its parameters)."""

    def __init__(self, inner: InvertibleModule) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, y: Tensor, **kwargs: Any) -> tuple[Tensor, Tensor]:
        return self.inner.inverse(y, **kwargs)


def check_gradients(module: InvertibleModule, x: Tensor, *, context: Tensor | None = None,
                    parameters: bool = True) -> list[str]:
    """``torch.autograd.gradcheck`` (float64, fast mode) of forward and inverse, w.r.t. input and parameters.

    Parameters are swapped in with ``torch.func.functional_call``; a module that does not support that (foreign
    code that reads its tensors outside ``forward``) is checked w.r.t. its input only, and the returned notes say
    so. ``context`` is passed through, not differentiated.

    Raises:
        ContractError: naming the direction whose analytic gradient disagrees with finite differences.
    """
    if x.dtype != torch.float64:
        raise ValueError("check_gradients needs float64 inputs and parameters (module.double())")
    notes: list[str] = []
    kwargs = {} if context is None else {"context": context}
    with _eval_mode(module):
        with torch.no_grad():
            y, _ = module(x, **kwargs)
        for direction, wrapper, inp in (("forward", module, x), ("inverse", _Inverse(module), y)):
            prefix = "" if wrapper is module else "inner."
            trainable = [(n, p) for n, p in module.named_parameters() if p.requires_grad] if parameters else []
            for with_params in ((True, False) if trainable else (False,)):
                names = [prefix + n for n, _ in trainable] if with_params else []
                values = [p.detach().clone().requires_grad_(True) for _, p in trainable] if with_params else []

                def fn(v: Tensor, *ps: Tensor, wrapper: nn.Module = wrapper, names: list[str] = names
                       ) -> tuple[Tensor, Tensor]:
                    return torch.func.functional_call(wrapper, dict(zip(names, ps)), (v,), kwargs, strict=False)

                inputs = (inp.detach().clone().requires_grad_(True), *values)
                try:
                    torch.autograd.gradcheck(fn, inputs, fast_mode=True, atol=1e-6, rtol=1e-4)
                except GradcheckError as err:
                    raise ContractError(f"gradcheck of the {direction} map failed: {err}") from err
                except Exception as err:  # the module refused functional_call with swapped parameters
                    if not with_params:
                        raise ContractError(f"gradcheck of the {direction} map could not run: "
                                            f"{type(err).__name__}: {_first_line(err)}") from err
                    notes.append(f"gradcheck of the {direction} map w.r.t. the input only: swapping the parameters "
                                 f"in failed ({type(err).__name__}: {_first_line(err)})")
                    continue
                break
    return notes


def _finish(report: CheckReport, raise_on_failure: bool) -> CheckReport:
    if report.failures and raise_on_failure:
        raise ContractError(f"{report.name} broke the layer contract:\n" + "\n".join(f"- {f}" for f in report.failures))
    return report
