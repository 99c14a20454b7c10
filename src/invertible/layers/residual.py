"""``ResidualBlock`` (i-ResNet / Residual Flows): ``y = x + g(x)`` with ``Lip(g) < 1``, inverted by fixed point."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from ..base import Bounds, InverseOptions, InvertibleModule, inverse_options
from .nets import lipschitz_bound
from .residual_logdet import LogDetEstimator, batch_jacobian, estimate_logdet
from .spectral_norm import cached_normalization

__all__ = ["BLOCK_INVERSE", "ConvergenceError", "ConvergenceWarning", "InverseReport", "ON_FAILURE", "ResidualBlock",
           "UnknownLipschitzWarning", "branch_lipschitz"]

#: What a non-converged inverse does.
ON_FAILURE = ("raise", "warn", "return")
#: How gradients reach the inverse: ``auto`` picks ``implicit`` after convergence and ``unrolled`` otherwise.
INVERSE_GRADS = ("auto", "implicit", "unrolled")
#: A residual block's own inverse settings (fields of the ``inverse`` argument left ``None`` take these).
BLOCK_INVERSE = InverseOptions(max_iter=1000, atol=1e-7, rtol=1e-7, on_failure="raise")
#: Largest per-sample dimension for which a Newton step (dense Jacobian) is used inside torch.func transforms.
_NEWTON_MAX_DIMS = 256


class ConvergenceError(RuntimeError):
    """An iterative inverse did not converge (policy ``"raise"``); ``report`` says how it ended."""

    def __init__(self, message: str, report: InverseReport) -> None:
        super().__init__(message)
        self.report = report


class ConvergenceWarning(RuntimeWarning):
    """An iterative inverse did not converge (policy ``"warn"``); the result is returned anyway."""


class UnknownLipschitzWarning(UserWarning):
    """A residual branch whose Lipschitz constant cannot be bounded: invertibility is not guaranteed."""


@dataclass(frozen=True)
class InverseReport:
    """How a fixed-point inverse ended.

    Attributes:
        iterations: iterations run (the slowest sample's count).
        residual: ``max_i ||x_k - x_{k-1}||_inf`` at each sample's last iteration. It equals
            ``||f(x_{k-1}) - y||_inf``, and the returned ``x_k`` is within ``Lip(g) / (1 - Lip(g)) * sqrt(D) *
            residual`` of the true inverse (Euclidean norm) and has ``||f(x_k) - y|| <= Lip(g) * sqrt(D) * residual``.
        converged: every sample met its tolerance ``atol + rtol * ||y_i||_inf``, and the returned preimage was
            checked: ``||f(x_i) - y_i||_inf`` (``forward_residual``) is within twice that tolerance plus the
            round-off of evaluating ``f`` (``8 eps max(||x_i||_inf, ||y_i||_inf)``). A fixed point of a
            non-contractive ``g`` can stop moving without solving ``f(x) = y``; it is not reported as converged.
        tolerance: the largest per-sample tolerance used.
        sample_iterations: iterations per sample (the cap for samples that did not converge).
        contraction: observed contraction rate, the geometric mean of ``step_k / step_{k-1}`` over the last
            iterations of the slowest sample (``nan`` with fewer than 3 iterations).
    """

    iterations: int
    residual: float
    converged: bool
    tolerance: float
    sample_iterations: tuple[int, ...]
    contraction: float
    forward_residual: float = math.nan


def _view(mask: Tensor, like: Tensor) -> Tensor:
    return mask.view(-1, *([1] * (like.dim() - 1)))


def branch_lipschitz(net: nn.Module) -> float | None:
    """A bound on ``Lip(net)``: the module's own ``lipschitz_bound()`` first (spectrally normalised layers,
    activations), the product over an ``nn.Sequential``, else :func:`invertible.layers.nets.lipschitz_bound`."""
    own = getattr(net, "lipschitz_bound", None)
    if callable(own):
        return own()
    if isinstance(net, nn.Sequential):
        total = 1.0
        for module in net:
            bound = branch_lipschitz(module)
            if bound is None:
                return None
            total *= bound
        return total
    return lipschitz_bound(net)


def _wrapped(t: Tensor) -> bool:
    return bool(torch._C._functorch.is_functorch_wrapped_tensor(t))


class ResidualBlock(InvertibleModule):
    r"""Invertible residual block ``y = x + g(x)`` with ``Lip(g) <= L < 1`` (Behrmann et al. 2019; Chen et al. 2019).

    Math:
        forward ``y = x + g(x)``; inverse by the fixed point ``x <- y - g(x)`` from ``x_0 = y``, a contraction with
        rate ``L`` (so ``k`` iterations reduce the error by ``L^k``); ``log|det J| = log det(I + J_g)``, exact or
        estimated (:class:`~invertible.layers.residual_logdet.LogDetEstimator`); the inverse's log-det is minus
        the forward one at the recovered ``x``. Lipschitz bounds ``(1 + L, 1 / (1 - L))``.

    ``L`` is :func:`branch_lipschitz` of ``g`` (the product of the spectral-norm coefficients when
    ``g`` is built from :mod:`~invertible.layers.spectral_norm` layers and 1-Lipschitz activations), or the
    ``lipschitz`` you pass.

    Policy on non-contractions: a block whose bound is ``L >= 1`` (declared, or computed from ``g``, e.g. a
    spectral-norm ``coeff`` above 1) is refused at construction with a :class:`ValueError`: ``x + g(x)`` need not
    be invertible, the fixed point can converge to another preimage, and the log-det series diverges. A branch
    that cannot be bounded is accepted with an :class:`UnknownLipschitzWarning`. Later changes are caught where
    they would give a wrong answer: the inverse checks the preimage it returns (see :class:`InverseReport`), and
    the ``"series"``/``"roulette"`` log-dets refuse (:class:`ValueError`) a branch whose bound has grown to
    ``>= 1`` (the exact log-det is right for any ``g``).

    The inverse reports how it ended (:class:`InverseReport`, also in ``last_inverse``): iterations, residual,
    convergence. A sample has converged when its step ``||x_k - x_{k-1}||_inf <= atol + rtol ||y||_inf`` (``rtol``
    is floored at ``32 eps`` of the dtype, below which the iterates cannot be computed); converged samples are
    frozen. (residual-flows compares the *squared* step with ``atol + rtol |y|``, elementwise over the batch, so
    its ``atol = rtol = 1e-5`` allows steps of about ``4.5e-3`` where ``|y| ~ 1``: a much looser rule.)
    Non-convergence within ``max_iter`` raises :class:`ConvergenceError`, warns
    (:class:`ConvergenceWarning`) or returns quietly, by ``on_failure``. :func:`invertible.iterative_inverse`
    overrides ``max_iter``, ``atol``, ``rtol`` and ``on_failure`` for a block of code.

    Gradients through the inverse (``inverse_grad``): ``"implicit"`` differentiates the fixed point itself,
    ``(I + J_g)^{-1}``, by a second fixed-point iteration in the backward pass (constant memory); ``"unrolled"``
    backpropagates through the iterations actually run (what the invertibility attack needs when it caps them);
    ``"auto"`` uses implicit after convergence and unrolled otherwise. Inside ``torch.func`` transforms (where
    backward hooks cannot run) a converged solution of at most 256 entries per sample gets one Newton step with
    the dense Jacobian, whose derivative is the implicit one; larger ones are unrolled. ``newton_refine=True``
    always ends with that Newton step (quadratically more accurate; small inputs only).

    Args:
        nnet: the residual branch ``g`` (named as in residual-flows, so checkpoints map key for key).
        channels, ranks: input validation (``channels=None`` accepts any).
        lipschitz: a bound on ``Lip(g)`` when ``g`` cannot be bounded automatically.
        logdet: a :class:`LogDetEstimator` or a method name (``"exact"``, ``"series"``, ``"roulette"``).
        inverse: the inverse's stopping rule and failure policy, an :class:`~invertible.InverseOptions`
            (``max_iter``, ``atol``, ``rtol``, ``on_failure``); fields left ``None`` take :data:`BLOCK_INVERSE`.
        inverse_grad: ``"auto"``, ``"implicit"`` or ``"unrolled"``.
        newton_refine: finish the inverse with a Newton step (dense Jacobian of ``g``).
        generator: random source of the stochastic log-det estimators (the global one by default).
        inverse_fields: ``atol=``, ``rtol=``, ``max_iter=``, ``on_failure=`` as keywords replace those fields of
            ``inverse`` (the older spelling, kept working).

    Example:
        >>> from invertible.layers.spectral_norm import SpectralNormLinear, SpectralNormOptions
        >>> from invertible.layers.activations import LipSwish
        >>> sn = SpectralNormOptions(coeff=0.9)
        >>> g = torch.nn.Sequential(SpectralNormLinear(2, 16, options=sn), LipSwish(),
        ...                         SpectralNormLinear(16, 2, options=sn))
        >>> block = ResidualBlock(g, channels=2)
        >>> x = torch.randn(5, 2)
        >>> y, logdet = block(x)
        >>> x_back, logdet_inv = block.inverse(y)
        >>> block.last_inverse.converged, bool(torch.allclose(x_back, x, atol=1e-5)), block.lipschitz_bounds()
        (True, True, Bounds(forward=1.81, inverse=5.263157894736843))
    """

    inverse_kind = "iterative"

    def __init__(
        self,
        nnet: nn.Module,
        *,
        channels: int | None = None,
        ranks: tuple[int, ...] = (2, 4),
        lipschitz: float | None = None,
        logdet: str | LogDetEstimator = "exact",
        inverse: InverseOptions | None = None,
        inverse_grad: str = "auto",
        newton_refine: bool = False,
        generator: torch.Generator | None = None,
        **inverse_fields: Any,
    ) -> None:
        super().__init__(channels=channels, ranks=ranks)
        try:
            options = (inverse if inverse is not None else InverseOptions()).updated(**inverse_fields)
        except TypeError as exc:
            raise TypeError(f"ResidualBlock: {exc}") from None
        max_iter, atol, rtol, on_failure = options.filled(BLOCK_INVERSE)
        if on_failure not in ON_FAILURE:
            raise ValueError(f"ResidualBlock: on_failure must be one of {ON_FAILURE}, got {on_failure!r}")
        if inverse_grad not in INVERSE_GRADS:
            raise ValueError(f"ResidualBlock: inverse_grad must be one of {INVERSE_GRADS}, got {inverse_grad!r}")
        if atol < 0 or rtol < 0 or max_iter < 1:
            raise ValueError(f"ResidualBlock: need atol, rtol >= 0 and max_iter >= 1, got {atol}, {rtol}, {max_iter}")
        self.nnet = nnet
        self.lipschitz = lipschitz
        self.estimator = LogDetEstimator.of(logdet)
        self.atol, self.rtol, self.max_iter, self.on_failure = float(atol), float(rtol), int(max_iter), on_failure
        self.inverse_grad = inverse_grad
        self.newton_refine = newton_refine
        self.generator = generator
        self.last_inverse: InverseReport | None = None
        self._require_contraction("ResidualBlock", stacklevel=2)

    # -- contract ---------------------------------------------------------------------------------------------
    @property
    def logdet_kind(self) -> str:  # type: ignore[override]
        return self.estimator.kind

    @property
    def inverse_options(self) -> InverseOptions:
        """The inverse's settings (before any :func:`~invertible.iterative_inverse` override)."""
        return InverseOptions(self.max_iter, self.atol, self.rtol, self.on_failure)

    def lipschitz_constant(self) -> float | None:
        """The bound ``L`` on ``Lip(g)``: the one given, or :func:`branch_lipschitz` of ``g``."""
        return self.lipschitz if self.lipschitz is not None else branch_lipschitz(self.nnet)

    def lipschitz_bounds(self) -> Bounds:
        lip = self.lipschitz_constant()
        if lip is None:
            return Bounds(None, None)
        return Bounds(1.0 + lip, 1.0 / (1.0 - lip) if lip < 1 else None)

    def inverse_atol(self) -> float:
        """The absolute tolerance on the fixed-point step (``check_invertible`` scales it by ``Lip(f^-1) sqrt(D)``)."""
        return self.atol

    def _require_contraction(self, where: str, stacklevel: int = 2) -> None:
        """Refuse a branch bounded by ``L >= 1``; warn if it cannot be bounded (the policy in the docstring)."""
        lip = self.lipschitz_constant()
        if lip is None:
            warnings.warn(
                f"{where}: no Lipschitz bound is known for the branch g ({type(self.nnet).__name__}), so the block "
                "is not guaranteed to be invertible; build g from spectrally normalised layers and 1-Lipschitz "
                "activations, or pass lipschitz=L (< 1) if you know a bound. The inverse still checks the "
                "preimage it returns.", UnknownLipschitzWarning, stacklevel=stacklevel + 1)
            return
        if not lip < 1:
            source = "declared with lipschitz" if self.lipschitz is not None else "computed from g"
            raise ValueError(
                f"{where}: the branch g has the Lipschitz bound {lip:.4g} ({source}), and a residual "
                "block y = x + g(x) needs Lip(g) < 1: otherwise it need not be invertible, its fixed-point inverse "
                "can converge to another preimage and its log-det series diverges. Normalise g so that Lip(g) < 1 "
                "(spectral-norm coefficients below 1, e.g. coeff=0.97, whose product over the layers is the bound)")

    def logdet(self, x: Tensor) -> Tensor:
        """``log|det(I + J_g(x))|`` per sample, with the configured estimator."""
        return self._estimate(x)[1]

    def _estimate(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[0] == 0:
            return self.nnet(x), x.new_zeros(0)
        if self.estimator.method != "exact":  # the power series is only valid for a contraction
            lip = self.lipschitz_constant()
            if lip is not None and not lip < 1:
                self._require_contraction(f"ResidualBlock ({self.estimator.method} log-det)")
        return estimate_logdet(self.nnet, x, self.estimator, training=self.training, generator=self.generator)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        with cached_normalization(self.nnet):
            gx, logdet = self._estimate(x)
        return x + gx, logdet

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        with cached_normalization(self.nnet):
            x = self.solve(y)
            return x, -self.logdet(x)

    # -- the fixed point --------------------------------------------------------------------------------------
    def _settings(self) -> tuple[int, float, float, str]:
        o = inverse_options()
        return (o.max_iter if o.max_iter is not None else self.max_iter,
                o.atol if o.atol is not None else self.atol,
                o.rtol if o.rtol is not None else self.rtol,
                o.on_failure if o.on_failure is not None else self.on_failure)

    def _iterate(self, y: Tensor, max_iter: int, tol: Tensor) -> tuple[Tensor, InverseReport]:
        """Fixed-point iterations from ``x_0 = y``; graph-tracked iff grad mode is on."""
        batch = y.shape[0]
        x = y
        done = torch.zeros(batch, dtype=torch.bool, device=y.device)
        counts = torch.full((batch,), max_iter, dtype=torch.long, device=y.device)
        residual = torch.full((batch,), math.inf, dtype=y.dtype, device=y.device)
        steps: list[float] = []
        iterations = 0
        for k in range(1, max_iter + 1):
            iterations = k
            x_new = y - self.nnet(x)
            step = (x_new - x).detach().flatten(1).abs().amax(1)
            x = torch.where(_view(done, x), x, x_new)
            residual = torch.where(done, residual, step)
            active = ~done
            newly = active & (step <= tol)
            counts = torch.where(newly, torch.full_like(counts, k), counts)
            done = done | newly
            worst = float(torch.where(active, step, torch.zeros_like(step)).max())
            steps.append(worst)
            if bool(done.all()) or not math.isfinite(worst):
                break
        tail = [s for s in steps[-6:] if s > 0]
        rate = math.exp((math.log(tail[-1]) - math.log(tail[0])) / (len(tail) - 1)) if len(tail) >= 3 else math.nan
        converged = bool(done.all())
        report = InverseReport(iterations, float(residual.max()), converged, float(tol.max()),
                               tuple(int(c) for c in counts.tolist()), rate)
        return x, report

    def solve(self, y: Tensor) -> Tensor:
        """``f^{-1}(y)`` by fixed-point iteration (report in ``last_inverse``; policy on non-convergence)."""
        max_iter, atol, rtol, on_failure = self._settings()
        if y.shape[0] == 0:
            self.last_inverse = InverseReport(0, 0.0, True, 0.0, (), math.nan, 0.0)
            return y.clone()
        rtol = max(rtol, 32 * torch.finfo(y.dtype).eps)
        tol = atol + rtol * y.detach().flatten(1).abs().amax(1)
        params = list(self.nnet.parameters())
        wrapped = _wrapped(y) or any(_wrapped(p) for p in params)
        needs_grad = wrapped or (torch.is_grad_enabled() and (y.requires_grad or any(p.requires_grad for p in params)))
        small = y[0].numel() <= _NEWTON_MAX_DIMS
        if not needs_grad:
            mode = "newton" if self.newton_refine else "none"
        elif wrapped:  # torch.func transforms: no hooks; a Newton step carries the implicit derivative
            mode = "newton" if small and self.inverse_grad != "unrolled" else "unrolled"
        else:
            mode = "unrolled" if self.inverse_grad == "unrolled" else "newton" if self.newton_refine else "implicit"
        with torch.set_grad_enabled(mode == "unrolled"):
            x, report = self._iterate(y, max_iter, tol)
        if mode == "newton" and report.converged:
            x = self._newton_step(x.detach(), y)
        report = self._check_preimage(x, y, tol, report)
        self.last_inverse = report
        if not report.converged:
            self._fail(report, max_iter, on_failure)
            if mode in ("implicit", "newton") and needs_grad and self.inverse_grad != "implicit":
                x, _ = self._iterate(y, max_iter, tol)  # differentiate what was computed: the capped iterations
                return x
        if mode == "implicit":
            return self._attach_implicit_grad(x.detach(), y, max_iter, atol + rtol)
        return x

    def _check_preimage(self, x: Tensor, y: Tensor, tol: Tensor, report: InverseReport) -> InverseReport:
        """Measure ``||f(x_i) - y_i||_inf`` at the returned ``x``; a fixed point that does not solve ``f(x) = y``
        (possible only when ``g`` is not a contraction) is not converged (:class:`InverseReport`)."""
        with torch.no_grad():
            x0 = x.detach()
            forward = (x0 + self.nnet(x0) - y.detach()).flatten(1).abs().amax(1)
            scale = torch.maximum(x0.flatten(1).abs().amax(1), y.detach().flatten(1).abs().amax(1))
            allowed = 2 * tol + 8 * torch.finfo(y.dtype).eps * scale
            solved = bool((forward <= allowed).all())  # False for NaN as well
        worst = float(forward.max())
        return replace(report, converged=report.converged and solved, forward_residual=worst)

    def _newton_step(self, x: Tensor, y: Tensor) -> Tensor:
        """One Newton step ``x - (I + J_g(x))^{-1} (x + g(x) - y)`` with the dense Jacobian (small inputs).

        From a converged ``x`` (treated as a constant) its derivative is the implicit one, ``(I + J_g)^{-1}``, up
        to terms of the size of the residual, and its value is quadratically more accurate.
        """
        residual = (x + self.nnet(x) - y).flatten(1).unsqueeze(-1)
        jac = batch_jacobian(self.nnet, x)
        eye = torch.eye(jac.shape[1], dtype=jac.dtype, device=jac.device)
        return x - torch.linalg.solve(eye + jac, residual).reshape(x.shape)

    def _fail(self, report: InverseReport, max_iter: int, on_failure: str) -> None:
        lip = self.lipschitz_constant()
        lip_text = "unknown" if lip is None else f"{lip:.4g}"
        stalled = report.residual <= report.tolerance  # the iterates stopped moving, yet f(x) != y
        if stalled:
            message = (
                f"ResidualBlock.inverse did not converge: the iteration stopped moving (last step "
                f"{report.residual:.3g}, tolerance {report.tolerance:.3g}) at a point x with ||f(x) - y||_inf = "
                f"{report.forward_residual:.3g}, which is not a preimage of y (bound on Lip(g): {lip_text}). "
            )
        else:
            message = (
                f"ResidualBlock.inverse did not converge in {max_iter} iterations: the last step was "
                f"{report.residual:.3g} against a tolerance of {report.tolerance:.3g} (bound on Lip(g): {lip_text}, "
                f"observed contraction rate {report.contraction:.3g}). "
            )
        if stalled or lip is None or lip >= 1 or not report.contraction < 1:
            message += "g is not a contraction, so the fixed point need not exist; normalise g so that Lip(g) < 1."
        else:
            message += "Raise max_iter or atol/rtol (invertible.iterative_inverse(...) does it for a block of code)."
        if on_failure == "raise":
            raise ConvergenceError(message, report)
        if on_failure == "warn":
            warnings.warn(message, ConvergenceWarning, stacklevel=4)

    def _attach_implicit_grad(self, x_star: Tensor, y: Tensor, max_iter: int, rel_tol: float) -> Tensor:
        """``x = y - g(x*)`` (one more iteration) whose gradient is replaced by the implicit one.

        With ``v = dL/dx``, the gradient of the fixed point is ``w = (I + J_g)^{-T} v``, found by iterating
        ``w <- v - J_g^T w`` (the same contraction) until the step is below ``rel_tol * max|v|``; ``w`` then flows
        into ``y`` and, through ``-g(x*)``, into the parameters of ``g``.
        """
        x0 = x_star.requires_grad_(True)
        gx0 = self.nnet(x0)
        x = y - gx0
        if not x.requires_grad:
            return x

        def hook(v: Tensor | None) -> Tensor | None:
            if v is None:
                return v
            w, limit, step = v, rel_tol * float(v.detach().abs().max()), math.inf
            for _ in range(max_iter):
                jtw = torch.autograd.grad(gx0, x0, w, retain_graph=True, create_graph=torch.is_grad_enabled())[0]
                w_new = v - jtw
                step = float((w_new - w).detach().abs().max())
                w = w_new
                if step <= limit:
                    return w
            warnings.warn(f"ResidualBlock: the implicit gradient of the inverse did not converge in {max_iter} "
                          f"iterations (last step {step:.3g}, tolerance {limit:.3g})", ConvergenceWarning,
                          stacklevel=2)
            return w

        x.register_hook(hook)
        return x

    def extra_repr(self) -> str:
        lip = self.lipschitz_constant()
        lip_text = "?" if lip is None else f"{lip:.4g}"
        return (f"channels={self.channels}, lipschitz={lip_text}, logdet={self.estimator.method!r}, "
                f"atol={self.atol}, rtol={self.rtol}, max_iter={self.max_iter}, on_failure={self.on_failure!r}")
