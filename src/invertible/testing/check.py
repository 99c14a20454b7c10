"""``check_invertible``: every contract check on one module and one input, with conditioning-aware tolerances.

Tolerances come from the conditioning of the map at the input, not from fixed constants. With ``u`` the unit
round-off of the dtype, ``kappa_i`` the condition number of the exact Jacobian at sample ``i`` and
``scale_i = max(||x_i||, ||y_i||, 1)``:

- round trips ``x -> y -> x`` and ``y -> x -> y``: ``||error_i|| <= K u kappa_i scale_i`` (+ the inverse's own
  tolerance times the inverse Lipschitz bound, for iterative inverses);
- log-dets against ``slogdet`` of the exact Jacobian, and ``logdet_inv = -logdet``:
  ``|error_i| <= K u (D kappa_i + |logdet_i|)``;
- batch independence: a sample alone gives the same output as in the batch, within the round-trip tolerance;
- Lipschitz bounds: never below the measured ``sigma_max`` (forward) and ``1 / sigma_min`` (inverse).

Conditional layers are checked at a fixed context (``context=``): every check above holds for ``x -> f(x; c)``
with the Jacobians taken in ``x``, batch independence covers the contexts too (sample ``i`` alone with
``context_i``), and one more check, ``context``, fails a layer whose output does not change when the context does
(a conditional layer that ignores its context).

``K`` (``factor``) defaults to 100 and absorbs the depth of the computation.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..base import InvertibleModule, allow_nonfinite
from ..diagnostics.jacobian import exact_jacobian

__all__ = [
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


class ContractError(AssertionError):
    """A module broke the layer contract; the message names each failed property, by how much and where."""


@dataclass
class CheckReport:
    """What ``check_invertible`` measured. ``failures`` lists one line per broken property."""

    name: str
    dtype: torch.dtype
    dims: int
    measured: dict[str, float] = field(default_factory=dict)
    tolerances: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def __str__(self) -> str:
        head = f"{self.name} ({self.dtype}, D={self.dims}): " + ("ok" if self.ok else f"{len(self.failures)} failed")
        rows = [f"  {k}: {v:.3g} (tolerance {self.tolerances.get(k, float('nan')):.3g})"
                for k, v in self.measured.items()]
        return "\n".join([head, *[f"  FAILED {f}" for f in self.failures], *rows])


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.train(mode)


def _worst(values: Tensor, tol: Tensor) -> tuple[float, float, int]:
    ratio = torch.where(torch.isfinite(values), values / tol, torch.full_like(values, math.inf))
    i = int(torch.argmax(ratio))
    return float(values[i]), float(tol[i]), i


def check_invertible(
    module: InvertibleModule,
    x: Tensor,
    *,
    checks: tuple[str, ...] = CHECKS,
    factor: float = 100.0,
    max_jacobian_dims: int = 1024,
    name: str | None = None,
    raise_on_failure: bool = True,
    context: Tensor | None = None,
) -> CheckReport:
    """Run the contract checks on ``module`` at input ``x`` (and ``context``, for a conditional module) and
    return a :class:`CheckReport`.

    The module runs in eval mode during the checks (restored afterwards); the first forward call initialises
    data-dependent layers. Exact Jacobians are computed when the per-sample dimension ``D`` is at most
    ``max_jacobian_dims``; otherwise the checks that need them are skipped and the round-trip tolerance assumes a
    condition number of ``1 / sqrt(u)``.

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
    report = CheckReport(name or type(module).__name__, x.dtype, int(x[0].numel()) if x.dim() else 0)
    fail = report.failures.append
    u = torch.finfo(x.dtype).eps
    c = context
    with _eval_mode(module), torch.no_grad():
        y, logdet = module(x, c)
        with allow_nonfinite():
            x_back, logdet_inv = module.inverse(y, c)
        batch = x.shape[0]
        if "shapes" in checks:
            _check_shapes(x, y, logdet, x_back, logdet_inv, fail)
            if report.failures:
                return _finish(report, raise_on_failure)
        norms = lambda t: t.reshape(batch, -1).norm(dim=1)  # noqa: E731
        scale = torch.maximum(torch.maximum(norms(x), norms(y)), torch.ones(batch, dtype=x.dtype, device=x.device))
        bounds = module.lipschitz_bounds()

        sv_fwd = sv_inv = None
        logabsdet = logabsdet_inv = None
        if report.dims <= max_jacobian_dims:
            with torch.enable_grad():
                jac = _jacobian(lambda v, ci: module(v, ci)[0], x, c).double()
                jac_inv = _jacobian(lambda v, ci: module.inverse(v, ci)[0], y, c).double()
            sv_fwd = torch.linalg.svdvals(jac)
            sv_inv = torch.linalg.svdvals(jac_inv)
            logabsdet = torch.linalg.slogdet(jac)[1].to(x.dtype)
            logabsdet_inv = torch.linalg.slogdet(jac_inv)[1].to(x.dtype)
            cond = (sv_fwd[:, 0] / sv_fwd[:, -1]).to(x.dtype)
            report.measured["condition_number"] = float(cond.max())
        else:
            cond = torch.full((batch,), u**-0.5, dtype=x.dtype, device=x.device)
        cond = torch.nan_to_num(cond, nan=math.inf)
        inv_lip = bounds.inverse if bounds.inverse is not None else float(cond.max())
        rt_tol = factor * u * cond * scale + module.inverse_atol() * max(1.0, inv_lip) * math.sqrt(report.dims)
        ld_tol = factor * u * (report.dims * cond + logdet.abs())

        def compare(key: str, what: str, err: Tensor, tol: Tensor) -> None:
            value, limit, i = _worst(err, tol)
            report.measured[key], report.tolerances[key] = float(err.max()), float(tol[i])
            if not value <= limit:
                fail(f"{key}: {what} is {value:.3g} at sample {i}, above the tolerance {limit:.3g} "
                     f"(condition number {float(cond[i]):.3g}, unit round-off {u:.2g})")

        if "roundtrip_forward" in checks:
            compare("roundtrip_forward", "||x - f^-1(f(x))||", norms(x_back - x), rt_tol)
        if "roundtrip_inverse" in checks:
            with allow_nonfinite():
                y_again, _ = module(x_back.nan_to_num(), c)
            compare("roundtrip_inverse", "||y - f(f^-1(y))||", norms(y_again - y), rt_tol)
        if "logdet_inverse" in checks:
            compare("logdet_inverse", "|logdet_inv(y) + logdet(x)|", (logdet_inv + logdet).abs(), ld_tol)
        if "logdet_exact" in checks and logabsdet is not None:
            compare("logdet_exact", "|logdet - log|det J||", (logdet - logabsdet).abs(), ld_tol)
        if "logdet_exact_inverse" in checks and logabsdet_inv is not None:
            compare("logdet_exact_inverse", "|logdet_inv - log|det J_inv||", (logdet_inv - logabsdet_inv).abs(),
                    ld_tol)
        if "batch_independence" in checks and batch > 1:
            alone = [module(x[i : i + 1], None if c is None else c[i : i + 1]) for i in range(batch)]
            y_alone = torch.cat([a[0] for a in alone])
            ld_alone = torch.cat([a[1] for a in alone])
            compare("batch_independence", "||f(x_i alone) - f(x)_i||", norms(y_alone - y), rt_tol)
            compare("batch_independence_logdet", "|logdet(x_i alone) - logdet(x)_i|", (ld_alone - logdet).abs(),
                    ld_tol)
        if "bounds" in checks and sv_fwd is not None:
            _check_bounds(bounds, sv_fwd, sv_inv, factor * u, report)
        if "context" in checks and c is not None:
            # another context (each row shifted by 1) must move the output of some sample, in both directions
            with allow_nonfinite():
                y_other = module(x, c + 1)[0]
                x_other = module.inverse(y, c + 1)[0]
            change = torch.maximum(norms(y_other - y), norms(x_other - x_back))
            report.measured["context"], report.tolerances["context"] = float(change.max()), float(rt_tol.max())
            if not bool((change > rt_tol).any()):
                fail(f"context: the output does not change when the context changes (largest change "
                     f"{float(change.max()):.3g}, tolerance {float(rt_tol.max()):.3g}): the layer ignores its context")
    if "state_dict" in checks:
        _check_state_dict(module, x, y, x_back, report, c)
    return _finish(report, raise_on_failure)


def _jacobian(fn, x: Tensor, context: Tensor | None) -> Tensor:  # type: ignore[no-untyped-def]
    """The exact Jacobian in ``x`` of ``fn(x, context)`` at each sample, at that sample's fixed context."""
    if context is None:
        return exact_jacobian(lambda v: fn(v, None), x)
    rows = [exact_jacobian(lambda v, ci=context[i : i + 1]: fn(v, ci), x[i : i + 1]) for i in range(x.shape[0])]
    return torch.cat(rows) if rows else exact_jacobian(lambda v: fn(v, context[:0]), x)


def _check_shapes(x: Tensor, y: Tensor, logdet: Tensor, x_back: Tensor, logdet_inv: Tensor, fail) -> None:  # type: ignore[no-untyped-def]
    b = x.shape[0]
    if y.shape[0] != b or y[0].numel() != x[0].numel():
        fail(f"shapes: forward maps {tuple(x.shape)} to {tuple(y.shape)}; the batch size and the number of "
             "entries per sample must be kept")
    if x_back.shape != x.shape:
        fail(f"shapes: the inverse returns {tuple(x_back.shape)}, expected {tuple(x.shape)}")
    for label, ld in (("logdet", logdet), ("logdet_inv", logdet_inv)):
        if ld.shape != (b,):
            fail(f"shapes: {label} has shape {tuple(ld.shape)}, expected ({b},): one log-det per sample")
    for label, t in (("output", y), ("logdet", logdet), ("inverse", x_back), ("logdet_inv", logdet_inv)):
        if t.dtype != x.dtype or t.device != x.device:
            fail(f"shapes: the {label} is {t.dtype} on {t.device}; the input is {x.dtype} on {x.device}")
    if not bool(torch.isfinite(y).all()) or not bool(torch.isfinite(logdet).all()):
        fail("shapes: the forward output or log-det is not finite at a finite input")


def _check_bounds(bounds, sv_fwd: Tensor, sv_inv: Tensor | None, rel: float, report: CheckReport) -> None:  # type: ignore[no-untyped-def]
    measured = {"bound_forward": float(sv_fwd[:, 0].max()), "bound_inverse": float((1 / sv_fwd[:, -1]).max())}
    if sv_inv is not None:
        measured["bound_inverse"] = max(measured["bound_inverse"], float(sv_inv[:, 0].max()))
    for key, bound in (("bound_forward", bounds.forward), ("bound_inverse", bounds.inverse)):
        if bound is None:
            continue
        report.measured[key], report.tolerances[key] = measured[key], bound
        if measured[key] > bound * (1 + rel) + rel:
            direction = "forward" if key == "bound_forward" else "inverse"
            report.failures.append(
                f"{key}: the measured {direction} Lipschitz constant {measured[key]:.6g} exceeds the analytic "
                f"bound {bound:.6g}"
            )


def _perturb(module: nn.Module) -> None:
    """A small, seeded change of every parameter (enough to expose a stale cache, too small to break a map)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p.device, p.dtype)
            p.add_(0.01 * noise + 0.005)


def _check_state_dict(module: InvertibleModule, x: Tensor, y: Tensor, x_back: Tensor, report: CheckReport,
                      context: Tensor | None = None) -> None:
    """Parameters changed in place must reach the inverse, and a state dict must restore the outputs exactly.

    A copy's parameters are perturbed: its inverse must still invert its forward (a stale cached inverse fails
    here); then the original state dict is loaded into it: forward and inverse must equal the original's bit for
    bit (a tensor missing from the state dict, or a cache not invalidated on load, fails here).
    """
    clone = copy.deepcopy(module)
    _perturb(clone)
    with _eval_mode(clone), torch.no_grad(), allow_nonfinite():
        y_c, _ = clone(x, context)
        drift = float((clone.inverse(y_c, context)[0] - x).abs().max())
        clone.load_state_dict(module.state_dict())
        y2, _ = clone(x, context)
        x2, _ = clone.inverse(y, context)
    limit = 1e-6 * float(x.abs().max() + 1) if x.dtype == torch.float64 else 1e-2 * float(x.abs().max() + 1)
    report.measured["state_dict_update"], report.tolerances["state_dict_update"] = drift, limit
    if not drift <= limit:
        report.failures.append(f"state_dict_update: after an in-place parameter change the inverse is off by "
                               f"{drift:.3g} (a cached inverse that was not invalidated?)")
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

    def forward(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.inner.inverse(y, context)


def check_gradients(module: InvertibleModule, x: Tensor, *, parameters: bool = True,
                    context: Tensor | None = None) -> None:
    """``torch.autograd.gradcheck`` (float64, fast mode) of forward and inverse, w.r.t. input and parameters (and
    the ``context`` of a conditional module).

    Raises:
        ContractError: naming the direction whose analytic gradient disagrees with finite differences.
    """
    if x.dtype != torch.float64:
        raise ValueError("check_gradients needs float64 inputs and parameters (module.double())")
    with _eval_mode(module):
        with torch.no_grad():
            y, _ = module(x, context)
        for direction, wrapper, inp in (("forward", module, x), ("inverse", _Inverse(module), y)):
            prefix = "" if wrapper is module else "inner."
            names = [prefix + n for n, p in module.named_parameters() if p.requires_grad] if parameters else []
            values = [p.detach().clone().requires_grad_(True) for n, p in module.named_parameters()
                      if p.requires_grad] if parameters else []

            def fn(v: Tensor, *ps: Tensor, wrapper: nn.Module = wrapper, names: list[str] = names
                   ) -> tuple[Tensor, Tensor]:
                if context is None:
                    return torch.func.functional_call(wrapper, dict(zip(names, ps)), (v,), strict=False)
                *ps, c = ps
                return torch.func.functional_call(wrapper, dict(zip(names, ps)), (v, c), strict=False)

            given = () if context is None else (context.detach().clone().requires_grad_(True),)
            inputs = (inp.detach().clone().requires_grad_(True), *values, *given)
            try:
                torch.autograd.gradcheck(fn, inputs, fast_mode=True, atol=1e-6, rtol=1e-4)
            except Exception as err:  # gradcheck raises GradcheckError (a RuntimeError)
                raise ContractError(f"gradcheck of the {direction} map failed: {err}") from err


def _finish(report: CheckReport, raise_on_failure: bool) -> CheckReport:
    if report.failures and raise_on_failure:
        raise ContractError(f"{report.name} broke the layer contract:\n" + "\n".join(f"- {f}" for f in report.failures))
    return report
