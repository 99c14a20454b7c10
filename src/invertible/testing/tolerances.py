r"""The error model behind ``check_invertible``'s tolerances, and the per-sample scales it needs.

With ``u`` the unit round-off of the module's dtype, at each sample (norms are Euclidean, ``|.|`` is
entrywise, ``J_f`` the Jacobian of the forward map at ``x`` and ``J_g`` that of the inverse at ``y = f(x)``):

- **round trips.** ``x -> y -> x`` is as accurate as evaluating the inverse at ``y``, whose rounding is relative
  to the entries of ``y`` and is carried by ``J_g`` (a componentwise, Skeel-type amplification), plus the
  rounding of ``x`` itself::

      ||g(f(x)) - x|| <= K u E_g,   E_g = || |J_g| |y| || + ||x||
      ||f(g(y)) - y|| <= K u E_f,   E_f = || |J_f| |x| || + ||y||

  An ill-conditioned map has a large ``kappa = ||J_f|| ||J_g||``, but its rounding errors follow the entries they
  are made on, so ``E_g`` stays far below ``kappa * max(||x||, ||y||)``: on the registered affine Glow
  (``kappa`` 3.7e4) ``E_g`` is 41 ``||x||``, and an inverse off by ``1e-3`` relative is caught in float32.
- **analytic log-dets.** A log-det is a sum of log-terms (one per coupling entry, channel or factor), each
  computed to a few ``u`` of its own magnitude, so its error grows with the number of terms and with the
  magnitude of the summed terms, not with ``kappa``::

      |logdet - log|det J_f|| <= K_ld (u (D + T + C) + u_ref L_J),   T = sum over the leaf layers of |logdet_leaf|

  ``T >= |logdet|`` counts terms that cancel. ``C = sum_i |d logdet / dx_i| (|x_i| + floor)`` is the log-det's
  condition under relative perturbations of its input: a log-term that depends on the input (a spline's
  ``log g'(x)``, an affine coupling's ``s(x_1)``) inherits the rounding of the quantities it is computed from
  (``x - x_k``, a quadratic's root in an inverse); ``C = 0`` where the log-det does not depend on the input.
  A log-term computed from a network's output (a coupling's scales, a spline's knots) also inherits the
  network's rounding, a relative perturbation of its weights of a few ``u``: ``C`` includes
  ``P = sum_p |d logdet / dp| |p|`` over the parameters (:func:`logdet_parameter_condition`).
  ``floor`` is the largest :meth:`~invertible.base.InvertibleModule.rounding_floor` of the leaf layers (a spline's
  bound ``B``: it subtracts knots up to ``B`` from each entry), and entries are measured as ``|x_i| + floor`` in
  the round-trip scales too; ``D`` counts ``logdet_rounding`` terms per entry (1, or what a layer declares).
  The second part is the error of the reference itself, ``slogdet`` of the exact Jacobian computed in precision
  ``u_ref`` (float64: the Jacobians of a float32 module come from a float64 copy of it, so there it is
  negligible); ``L_J = sum_ij |J_ij| |J^{-1}_ji|`` (between ``D`` and ``D kappa``) is the condition number of a
  log-determinant under entrywise perturbations.
- **the reference's own rounding.** The exact Jacobian is computed in float64 by reverse-mode autodiff. Where that
  derivative suffers cancellation (a rational-quadratic spline whose knot derivatives span many orders of
  magnitude: the quotient rule subtracts nearly equal products) its log-det can be off by far more than
  ``u_ref L_J``: 2.3e-12 on a saturated elementwise spline (``kappa`` 1e7) whose analytic log-det is within 2e-14
  of the 50-digit mpmath value. ``check_invertible`` judges a log-det that fails against the reverse-mode
  reference once more with ``K_ld |log|det J_rev| - log|det J_fwd||`` added (reverse- and forward-mode Jacobians
  round differently) and says so in ``report.notes``. That spread is an estimate, not a bound: it did not cover
  every saturated spline measured (a spline coupling at ``kappa`` 115 whose reverse-mode reference is off by
  8.6e-14 where the spread is 1.6e-14), so saturated splines are checked against mpmath
  (``tests/numerical/test_spline.py``), and a float64 ``logdet_exact`` failure of a spline with knot derivatives
  spanning more than about 1e6 should be confirmed with :mod:`invertible.reference` before it is believed.
- iterative inverses add what their stopping rule allows (:func:`fixed_point_allowance`); stochastic or
  truncated log-dets are not compared with exact ones.

Calibration (``benchmarks/float32_error.py``, ``benchmarks/results/float32_error.md``): every tiny configuration
of the registry (94 configurations) against the 50-digit mpmath reference, forward and inverse
evaluations and both round trips, in float32 and float64, in units of the model above. Worst ratios measured:
**1.80** for the round trips and evaluations (the float64 inverse of a dense flow with an LU 1x1 convolution;
float32's worst 1.68), **0.51** for analytic log-dets (a dense residual flow, float64; float32's worst 0.46).
Chosen constants: ``ROUNDTRIP_K = 8`` (4.4x the worst) and ``LOGDET_K = 2`` (3.9x the worst). On the full-size
registered examples (94 configurations, float32 and float64) the largest measured ratios are 2.3 (a round trip of
the LU dense flow, float32) and 0.43 (log-dets). The former model, ``100 u kappa max(||x||, ||y||, 1)``, reached
0.48 of ``u kappa scale`` at most (210x slack) and 4e-4 at ``kappa`` 5.9e4.

Not modelled: a layer that computes its log-det by factorising a dense matrix (``Invertible1x1Conv(lu=False)``
uses ``slogdet(W)``) adds that matrix's own conditioning to its log-det error; an ill-conditioned dense ``W`` can
fail the float32 log-det check without a defect (use ``lu=True``, or check in float64).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..base import InvertibleModule

__all__ = [
    "LOGDET_K",
    "ROUNDTRIP_K",
    "ErrorScales",
    "fixed_point_allowance",
    "exact_error_scales",
    "float64_shadow",
    "layer_rounding",
    "leaf_logdet_magnitude",
    "logdet_gradient",
    "logdet_parameter_condition",
    "reference_round_off",
]

#: ``K`` of the round-trip (and batch-independence) tolerances ``K u E``: 4.4x the worst ratio measured (1.80).
ROUNDTRIP_K = 8.0
#: ``K_ld`` of the log-det tolerances ``K_ld (u (D + T + C) + u_ref L_J)``: 3.9x the worst ratio measured (0.51).
LOGDET_K = 2.0


def reference_round_off(dtype: torch.dtype) -> float:
    """Unit round-off of the exact Jacobians used as reference for a module of ``dtype`` (float64 for any
    floating dtype up to float64: they come from a float64 copy, :func:`float64_shadow`)."""
    return torch.finfo(torch.float64).eps if torch.finfo(dtype).bits <= 64 else torch.finfo(dtype).eps


def float64_shadow(module: nn.Module, x: Tensor) -> nn.Module:
    """A float64 copy of ``module`` (same parameter values, exactly), run once at ``x`` so that caches and
    power iterations are in step; ``module`` itself when it already is float64.

    Layers that re-estimate something when their dtype changes (a power-iteration spectral norm restarts its
    iteration) differ from their copy by that estimator's tolerance; their own tests bound it.
    """
    if x.dtype == torch.float64:
        return module
    shadow = copy.deepcopy(module).double()
    with torch.no_grad():
        shadow(x.double())
    return shadow


def _leaves(module: nn.Module) -> list[nn.Module]:
    found = [m for m in module.modules()
             if isinstance(m, InvertibleModule) and not any(isinstance(c, InvertibleModule) for c in m.children())]
    return found or [module]


def layer_rounding(module: nn.Module) -> tuple[float, float]:
    """``(floor, logdet_rounding)``: the largest :meth:`~invertible.base.InvertibleModule.rounding_floor` and
    ``logdet_rounding`` over the leaf layers of ``module``; entries are measured as ``|x_i| + floor`` and the
    log-det's ``D`` counts ``logdet_rounding`` terms per entry."""
    leaves = [m for m in _leaves(module) if isinstance(m, InvertibleModule)]
    if not leaves:
        return 0.0, 1.0
    return max(m.rounding_floor() for m in leaves), max(float(m.logdet_rounding) for m in leaves)


def leaf_logdet_magnitude(module: nn.Module, x: Tensor) -> Tensor:
    """``T``: the sum over the leaf layers (invertible modules without invertible children) of ``|logdet|`` per
    sample, from one forward pass at ``x``; ``|logdet|`` of ``module`` itself when it has no invertible parts."""
    parts: list[Tensor] = []

    def record(_: nn.Module, __: object, out: object) -> None:
        if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Tensor) and out[1].shape == x.shape[:1]:
            parts.append(out[1].detach().abs().double())

    handles = [leaf.register_forward_hook(record) for leaf in _leaves(module)]
    try:
        with torch.no_grad():
            _, logdet = module(x)
    finally:
        for handle in handles:
            handle.remove()
    total = torch.stack(parts).sum(0) if parts else logdet.detach().abs().double()
    return torch.maximum(total, logdet.detach().abs().double())


def fixed_point_allowance(module: nn.Module, dims: int) -> float:
    """What the fixed-point inverses inside ``module`` may leave at their last call, by their stopping rule,
    before amplification: ``sum over blocks of L / (1 - L) sqrt(D) r`` (``r`` the block's reported last step, in
    the sup norm; :class:`~invertible.layers.residual.InverseReport`; ``D = dims``, an upper bound on each
    block's entries per sample); 0 for analytic inverses.

    A block whose Lipschitz constant is unknown or ``>= 1`` has no such bound (``inf``).
    """
    from ..layers.residual import ResidualBlock

    total = 0.0
    for block in module.modules():
        if not isinstance(block, ResidualBlock) or block.last_inverse is None:
            continue
        lip, report = block.lipschitz_constant(), block.last_inverse
        if report.residual == 0:
            continue
        total += math.inf if lip is None or lip >= 1 else lip / (1 - lip) * math.sqrt(dims) * float(report.residual)
    return total


@dataclass
class ErrorScales:
    """Per-sample scales of the error model (float64 tensors of shape ``(B,)``).

    Attributes:
        inverse_eval: ``E_g = || |J_g| |y| || + ||x||`` (matrix-free: ``||y|| / sigma_min + ||x||``).
        forward_eval: ``E_f = || |J_f| |x| || + ||y||`` (matrix-free: ``sigma_max ||x|| + ||y||``).
        logdet_terms: ``D + T``.
        logdet_condition: ``L_J`` (``None`` without exact Jacobians).
        sigma_max, sigma_min: extreme singular values of ``J_f`` (exact or Lanczos estimates).
        method: ``"exact"`` or ``"lanczos"``.
        logdet_sensitivity: ``||d logdet / dx||`` (how an error in a preimage moves the log-det; ``None`` where
            the log-det cannot be differentiated).
        logdet_input: ``C = sum_i |d logdet / dx_i| (|x_i| + floor)`` (zeros where the log-det cannot be
            differentiated).
    """

    inverse_eval: Tensor
    forward_eval: Tensor
    logdet_terms: Tensor
    logdet_condition: Tensor | None
    sigma_max: Tensor
    sigma_min: Tensor
    method: str
    logdet_sensitivity: Tensor | None = None
    logdet_input: Tensor | None = None

    @property
    def condition_number(self) -> Tensor:
        return self.sigma_max / self.sigma_min

    @staticmethod
    def from_jacobians(x: Tensor, y: Tensor, jac: Tensor, jac_inv: Tensor, terms: Tensor,
                       rounding: tuple[float, float] = (0.0, 1.0)) -> ErrorScales:
        """Scales from the exact Jacobians ``jac`` (at ``x``) and ``jac_inv`` (at ``y``), float64.

        ``sigma_min`` is ``1 / sigma_max(J_g)``: a largest singular value has full relative accuracy, whereas
        ``svdvals(J_f)`` resolves ``sigma_min`` only to about ``u sigma_max`` (an invertible coupling whose scales
        span 1e30 would come out singular). ``rounding``: ``(floor, logdet_rounding)`` of :func:`layer_rounding`."""
        b = x.shape[0]
        floor, per_entry = rounding
        xs, ys = x.reshape(b, -1).double().abs() + floor, y.reshape(b, -1).double().abs() + floor
        e_g = torch.einsum("bij,bj->bi", jac_inv.abs(), ys).norm(dim=1) + xs.norm(dim=1)
        e_f = torch.einsum("bij,bj->bi", jac.abs(), xs).norm(dim=1) + ys.norm(dim=1)
        cond = (jac.abs() * jac_inv.abs().transpose(1, 2)).sum((1, 2))
        sigma_max = torch.linalg.svdvals(jac)[:, 0]
        sigma_min = 1.0 / torch.linalg.svdvals(jac_inv)[:, 0]
        return ErrorScales(e_g, e_f, x[0].numel() * per_entry + terms, cond, sigma_max, sigma_min, "exact")

    @staticmethod
    def from_extremes(x: Tensor, y: Tensor, sigma_max: Tensor, sigma_min: Tensor, terms: Tensor, method: str,
                      rounding: tuple[float, float] = (0.0, 1.0)) -> ErrorScales:
        """Normwise scales from the extreme singular values (for inputs too large for exact Jacobians)."""
        b = x.shape[0]
        floor, per_entry = rounding
        nx = (x.reshape(b, -1).double().abs() + floor).norm(dim=1)
        ny = (y.reshape(b, -1).double().abs() + floor).norm(dim=1)
        return ErrorScales(ny / sigma_min + nx, sigma_max * nx + ny, x[0].numel() * per_entry + terms, None,
                           sigma_max, sigma_min, method)


def exact_error_scales(module: nn.Module, x: Tensor) -> ErrorScales:
    """:class:`ErrorScales` of ``module`` at ``x`` from exact Jacobians of its float64 copy (the module must be
    initialised and in the mode to measure; small ``D`` only: two ``D x D`` Jacobians per sample).

    Example:
        >>> import torch, invertible
        >>> layer = invertible.ActNorm(3, data_init=False).double()
        >>> s = exact_error_scales(layer, torch.ones(2, 3, dtype=torch.float64))
        >>> [round(v, 6) for v in s.inverse_eval.tolist()], s.method
        ([3.464102, 3.464102], 'exact')
    """
    from ..diagnostics.jacobian import exact_jacobian

    shadow = float64_shadow(module, x)
    x64 = x.double()
    with torch.no_grad():
        y64 = shadow(x64)[0]
    jac = exact_jacobian(lambda v: shadow(v)[0], x64).detach()
    jac_inv = exact_jacobian(lambda v: shadow.inverse(v)[0], y64).detach()
    scales = ErrorScales.from_jacobians(x64, y64, jac, jac_inv, leaf_logdet_magnitude(shadow, x64),
                                        layer_rounding(shadow))
    scales.logdet_sensitivity, scales.logdet_input = logdet_gradient(shadow, x64)
    scales.logdet_input = scales.logdet_input + logdet_parameter_condition(shadow, x64)
    return scales


def logdet_gradient(module: nn.Module, x: Tensor) -> tuple[Tensor | None, Tensor]:
    """``(||d logdet / dx||, sum_i |d logdet / dx_i| (|x_i| + floor))`` per sample, float64: the log-det's
    sensitivity to an error in its input, normwise and under relative perturbations (``C`` of the error model;
    ``floor`` from :func:`layer_rounding`). ``(None, zeros)`` where the log-det cannot be differentiated (a module
    that computes it without autograd)."""
    x64 = x.detach().double()
    floor = layer_rounding(module)[0]
    try:
        with torch.enable_grad():
            v = x64.clone().requires_grad_(True)
            _, logdet = module(v)
            (grad,) = torch.autograd.grad(logdet.sum(), v, allow_unused=True)
    except RuntimeError:
        return None, torch.zeros(x64.shape[0], dtype=torch.float64)
    if grad is None:
        zero = torch.zeros(x64.shape[0], dtype=torch.float64)
        return zero, zero.clone()
    grad = grad.reshape(x64.shape[0], -1).double()
    return grad.norm(dim=1), (grad.abs() * (x64.reshape(x64.shape[0], -1).abs() + floor)).sum(dim=1)


def logdet_parameter_condition(module: nn.Module, x: Tensor) -> Tensor:
    """``P = sum_p |d logdet / dp| |p|`` per sample over the floating parameters ``p`` of ``module`` (float64):
    the log-det's condition under relative perturbations of the parameters. A network's rounding is a relative
    perturbation of its weights of a few ``u`` (the backward error of a matrix product), so a log-det computed
    from a conditioner's output (a coupling's scales, a spline's knots) inherits ``u P``. Zeros where the log-det
    cannot be differentiated or the module has no parameters."""
    params = [p for p in module.parameters() if p.is_floating_point()]
    out = torch.zeros(x.shape[0], dtype=torch.float64)
    if not params:
        return out
    try:
        with torch.enable_grad():
            for i in range(x.shape[0]):
                _, logdet = module(x[i : i + 1].detach())
                grads = torch.autograd.grad(logdet.sum(), params, allow_unused=True)
                out[i] = sum(float((g.double().abs() * p.detach().double().abs()).sum())
                             for g, p in zip(grads, params) if g is not None)
    except RuntimeError:
        return torch.zeros(x.shape[0], dtype=torch.float64)
    return out
