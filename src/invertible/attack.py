r"""The invertibility attack: projected sign-gradient ascent on the reconstruction error in an l-infinity ball.

Starting from ``x_nat`` (plus, by default, a uniform random start in the ball), each step moves every sample by
``step_size * sign(grad)`` of its squared reconstruction error ``||x - f^-1(f(x))||^2`` (the sign of the gradient
is that of the error's own gradient), then projects back onto ``||x - x_nat||_inf <= radius`` and, optionally, into
a clamp range. It finds inputs close to the data where a flow is numerically not invertible.

For iterative inverses (residual blocks) the inverse inside the attack graph is unrolled for ``unroll`` iterations
(:func:`invertible.iterative_inverse`, so gradients flow through a fixed, short computation), while the reported
*accurate* reconstruction uses the layers' own settings or ``accurate_max_iter`` iterations. For analytic inverses
the two coincide.

A sample whose attack-graph gradient is not finite (its reconstruction already overflowed) stays where it is; the
step at which each sample's accurate reconstruction first becomes non-finite is reported.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor

from .base import InvertibleModule, allow_nonfinite, iterative_inverse
from .diagnostics import eval_mode

__all__ = ["AttackResult", "invertibility_attack"]


@dataclass
class AttackResult:
    """The attack's trajectory. Errors and distances have shape ``(steps + 1, batch)``: row ``t`` is the iterate
    after ``t`` steps (row 0 the random start).

    Attributes:
        x: the last iterate.
        x_worst: per sample, the iterate with the largest accurate reconstruction error (a non-finite error counts
            as the largest; the earliest such iterate).
        clean_error: accurate reconstruction error at ``x_nat``, shape ``(batch,)``.
        reference: ``clean_error`` floored at one unit round-off of ``||x_nat||`` (an exact clean reconstruction
            would otherwise make every growth infinite).
        attack_error: ``||x_t - f^-1(f(x_t))||_2`` in the attack graph (unrolled inverse).
        accurate_error: the same with the accurate inverse.
        distance: ``||x_t - x_nat||_inf``.
        first_nonfinite: per sample, the first step whose accurate reconstruction is not finite; ``-1`` if none.
    """

    x: Tensor
    x_worst: Tensor
    clean_error: Tensor
    reference: Tensor
    attack_error: Tensor
    accurate_error: Tensor
    distance: Tensor
    first_nonfinite: Tensor

    @property
    def max_error(self) -> Tensor:
        """Largest accurate error per sample over the trajectory (``inf`` once non-finite)."""
        return self.accurate_error.nan_to_num(nan=math.inf, posinf=math.inf).amax(dim=0)

    @property
    def growth(self) -> Tensor:
        """``max_error / reference`` per sample: how many times the attack raised the reconstruction error."""
        return self.max_error / self.reference


def _errors(model: InvertibleModule, x: Tensor) -> Tensor:
    """``||x - f^-1(f(x))||_2`` per sample (differentiable)."""
    return (model.inverse(model(x)[0])[0] - x).flatten(1).norm(dim=1)


def invertibility_attack(
    model: InvertibleModule,
    x: Tensor,
    *,
    radius: float = 1 / 64,
    step_size: float = 5e-4,
    steps: int = 200,
    random_start: bool = True,
    clamp: tuple[float, float] | None = None,
    unroll: int | None = None,
    accurate_max_iter: int | None = None,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """Maximise the reconstruction error of ``model`` within ``||x' - x||_inf <= radius`` of each sample.

    Defaults are the paper's CelebA64 settings (radius ``0.5 / 2^5``, 200 steps of ``5e-4``, random start).

    Args:
        model: the flow (run in eval mode; its parameters and their gradients are left alone).
        x: the natural inputs ``x_nat``.
        radius, step_size, steps: the l-infinity ball, the sign-gradient step and the number of steps.
        random_start: start from ``x_nat + U(-radius, radius)`` instead of ``x_nat``.
        clamp: ``(low, high)`` range the iterates are kept in (e.g. the data range), or ``None``.
        unroll: iterations of iterative inverses inside the attack graph (``None``: the layers' own settings).
        accurate_max_iter: iterations of iterative inverses for the reported errors (``None``: the layers' own).
        generator: random generator of the random start.

    Example:
        >>> import torch
        >>> from invertible.models import DenseFlow
        >>> flow = DenseFlow(2, steps=2, hidden=8, zero_init=False).double()
        >>> result = invertibility_attack(flow, torch.randn(3, 2, dtype=torch.float64), radius=0.1, step_size=0.02,
        ...                               steps=5)
        >>> result.accurate_error.shape, bool((result.distance <= 0.1 + 1e-12).all())
        (torch.Size([6, 3]), True)
    """
    if radius < 0 or step_size <= 0 or steps < 0:
        raise ValueError(f"invertibility_attack: need radius >= 0, step_size > 0 and steps >= 0; got {radius}, "
                         f"{step_size}, {steps}")
    x_nat = x.detach()
    analytic = model.inverse_kind == "analytic"
    attack_ctx = (lambda: iterative_inverse(max_iter=unroll, on_failure="return")) if not analytic \
        else nullcontext
    accurate_ctx = (lambda: iterative_inverse(max_iter=accurate_max_iter, on_failure="return")) if not analytic \
        else nullcontext

    def project(z: Tensor) -> Tensor:
        z = torch.minimum(torch.maximum(z, x_nat - radius), x_nat + radius)
        return z if clamp is None else z.clamp(clamp[0], clamp[1])

    def accurate(z: Tensor) -> Tensor:
        with torch.no_grad(), accurate_ctx():
            return _errors(model, z)

    rows: dict[str, list[Tensor]] = {"attack": [], "accurate": [], "distance": []}
    with eval_mode(model), allow_nonfinite():
        clean = accurate(x_nat)
        current = x_nat
        if random_start:
            noise = torch.rand(x_nat.shape, generator=generator, dtype=x_nat.dtype, device="cpu").to(x_nat.device)
            current = project(x_nat + (2 * noise - 1) * radius)
        worst, worst_err = current.clone(), torch.full_like(clean, -math.inf)
        for t in range(steps + 1):
            z = current.detach().requires_grad_(True)
            with torch.enable_grad(), attack_ctx():
                err = _errors(model, z)
                finite = torch.isfinite(err)
                objective = torch.where(finite, err, torch.zeros_like(err)).pow(2).sum()
                grad = torch.autograd.grad(objective, z)[0] if t < steps and objective.requires_grad else None
            err = err.detach()
            acc = err if analytic else accurate(current)
            rows["attack"].append(err)
            rows["accurate"].append(acc)
            rows["distance"].append((current - x_nat).flatten(1).abs().amax(dim=1))
            key = acc.nan_to_num(nan=math.inf, posinf=math.inf)
            better = key > worst_err
            worst = torch.where(better.view(-1, *[1] * (x.dim() - 1)), current, worst)
            worst_err = torch.where(better, key, worst_err)
            if grad is None:
                break
            ok = finite & torch.isfinite(grad).flatten(1).all(dim=1)
            step = step_size * torch.sign(torch.where(torch.isfinite(grad), grad, torch.zeros_like(grad)))
            current = project(current + step * ok.view(-1, *[1] * (x.dim() - 1)))
    accurate_error = torch.stack(rows["accurate"])
    bad = ~torch.isfinite(accurate_error)
    first = torch.where(bad.any(dim=0), bad.double().argmax(dim=0), torch.full_like(clean, -1, dtype=torch.long))
    floor = torch.finfo(x_nat.dtype).eps * x_nat.flatten(1).norm(dim=1)
    return AttackResult(x=current.detach(), x_worst=worst.detach(), clean_error=clean,
                        reference=torch.maximum(clean.nan_to_num(nan=math.inf, posinf=math.inf), floor),
                        attack_error=torch.stack(rows["attack"]), accurate_error=accurate_error,
                        distance=torch.stack(rows["distance"]), first_nonfinite=first.long())
