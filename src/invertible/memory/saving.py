"""``MemorySaving``: train any flow of analytic layers without storing its activations."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from ..base import Bounds, InvertibleModule
from .check import POLICIES, CheckRun, GradientCheck
from .engine import MemorySavingFunction, Plan
from .rebuild import flatten_layers

__all__ = ["MemorySaving", "compare_gradients"]


def _transforms_active() -> bool:
    return torch._C._functorch.peek_interpreter_stack() is not None


class MemorySaving(InvertibleModule):
    r"""Memory-saving backprop for a flow: the same map, with activations rebuilt by the inverse in backward.

    ``z, logdet = ms(x)`` and ``x, logdet_inv = ms.inverse(z)`` compute exactly what ``flow`` computes, but
    when a gradient is needed the forward runs without a graph and keeps only its output. ``loss.backward()``
    then walks the layers from the output back: each layer's input is rebuilt from its output with the layer's
    analytic inverse, the layer is re-run with a local graph, and the gradients of the output and of the
    per-sample log-det flow through it (so likelihood terms train too). Parameter gradients arrive in
    ``.grad`` as usual, so any optimizer, gradient clipping or DDP hook works unchanged. The inverse direction
    is memory-free as well (its backward rebuilds with the forward map), which the inverse finite-difference
    regularizer needs; gradients flow into whatever ``z`` came from, e.g. the forward output.

    Activation memory is one layer's local graph plus the outputs, whatever the depth. The price is one more
    evaluation of each coupling network per step (couplings use a fused rebuild; other layers cost one
    inverse). The gradients are right only while the inverse is accurate: when it explodes they are silently
    wrong (the paper's failure). Hence the self-check: inside ``with ms.checking():`` every call also saves
    its input, and its backward compares the memory-saving gradients with standard autograd's (angle, relative
    error, rebuilt input error); ``on_mismatch`` says what a disagreement does (``"warn"``, ``"fallback"`` to
    the standard gradients, ``"raise"``, ``"ignore"``). Non-finite memory-saving gradients always warn.

    Math: the map, inverse, log-det and Lipschitz bounds are the wrapped flow's.

    Args:
        flow: an :class:`~invertible.InvertibleModule` whose layers all have analytic inverses (nested
            :class:`~invertible.Sequential` containers such as ``Glow`` are flattened; ``Partial`` and
            ``Inverse`` wrappers count as one layer). Layers must be deterministic (``Dequantize`` in training
            mode draws noise: harmless, it has no parameters and a constant Jacobian).
        enabled: ``False`` runs plain autograd (one flag switches a training loop between the modes).
        on_mismatch: the self-check's policy, one of ``"warn"``, ``"fallback"``, ``"raise"``, ``"ignore"``.
        rtol: largest relative gradient error the self-check accepts.
        max_angle: largest angle (radians) between the gradients that the self-check accepts.

    The wrapped flow is ``ms.flow``; save and load its ``state_dict`` (the wrapper's own keys carry a
    ``flow.`` prefix). Call ``backward()`` before ``optimizer.step()``: a parameter changed in between is
    refused. (That guard reads the parameters' version counters, which writes through ``.data`` do not move:
    change parameters between forward and backward with ordinary in-place operations, as optimizers do, or
    not at all.)

    Example:
        >>> import torch, invertible
        >>> from invertible.models import Glow
        >>> flow = Glow((3, 8, 8), levels=2, depth=2, hidden=8, split=False)
        >>> ms = MemorySaving(flow)
        >>> x = torch.randn(4, 3, 8, 8)
        >>> with ms.checking() as check:
        ...     z, logdet = ms(x)
        ...     loss = (z ** 2).mean() - logdet.mean() / z[0].numel()
        >>> loss.backward()
        >>> check.result.agreed, all(p.grad is not None for p in flow.parameters())
        (True, True)
    """

    def __init__(self, flow: InvertibleModule, *, enabled: bool = True, on_mismatch: str = "warn",
                 rtol: float = 1e-2, max_angle: float = 0.05) -> None:
        if not isinstance(flow, InvertibleModule):
            raise TypeError(f"MemorySaving wraps an InvertibleModule, got {type(flow).__name__}")
        super().__init__(channels=flow.channels, ranks=flow.ranks)
        self.out_channels = flow.out_channels
        self.in_shape, self.out_shape = flow.in_shape, flow.out_shape
        self.flow = flow
        self.enabled = enabled
        self.on_mismatch, self.rtol, self.max_angle = on_mismatch, rtol, max_angle
        if on_mismatch not in POLICIES:
            raise ValueError(f"MemorySaving: on_mismatch must be one of {POLICIES}, got {on_mismatch!r}")
        iterative = [f"{i}:{type(layer).__name__}" for i, layer in enumerate(flatten_layers(flow))
                     if layer.inverse_kind != "analytic"]
        if iterative:
            raise ValueError(
                f"MemorySaving needs layers with analytic inverses; {', '.join(iterative)} invert "
                "iteratively, and rebuilding activations with an iterative inverse only approximates them. "
                "Train those layers with standard backprop (enabled=False)")
        self._check: CheckRun | None = None
        self._last: CheckRun | None = None

    def _memory_saving_layers(self) -> list[InvertibleModule]:
        return self.flow._memory_saving_layers()

    def _local_bounds(self, x: Tensor) -> Bounds:
        return self.flow._local_bounds(x)

    def layers(self) -> list[InvertibleModule]:
        """The flattened layers, in application order."""
        return list(flatten_layers(self.flow))

    @contextmanager
    def checking(self, enabled: bool = True) -> Iterator[CheckRun | None]:
        """Self-check the calls made inside the block (in their backward pass, which may come after it).

        Yields the :class:`~invertible.memory.check.CheckRun` whose ``result`` (a
        :class:`~invertible.memory.GradientCheck`) is filled in by the backward pass; also kept as
        :attr:`last_check`. ``enabled=False`` makes the block a no-op (``checking(step % 100 == 0)``). Each
        checked call keeps its input and, in backward, re-runs standard autograd: checked steps cost the
        memory and time of standard backprop on top.
        """
        if not enabled or not self.enabled:
            yield None
            return
        previous = self._check
        run = CheckRun(list(self.flow.parameters()), self.on_mismatch, self.rtol, self.max_angle)
        self._check = self._last = run
        try:
            yield run
        finally:
            self._check = previous

    @property
    def last_check(self) -> GradientCheck | None:
        """The result of the most recent :meth:`checking` block (``None`` before its backward pass)."""
        return None if self._last is None else self._last.result

    def _active(self, x: Tensor) -> bool:
        if not (self.enabled and torch.is_grad_enabled()) or _transforms_active():
            return False
        return x.requires_grad or any(p.requires_grad for p in self.flow.parameters())

    def _memory_saving_call(self, x: Tensor, direction: str) -> tuple[Tensor, Tensor]:
        plan, params = Plan.build(self.layers(), direction, self._check)
        y, logdet = MemorySavingFunction.apply(plan, x, *params)
        return y, logdet

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._memory_saving_call(x, "forward") if self._active(x) else self.flow(x)

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self._memory_saving_call(y, "inverse") if self._active(y) else self.flow.inverse(y)

    def lipschitz_bounds(self) -> Bounds:
        return self.flow.lipschitz_bounds()

    def inverse_atol(self) -> float:
        return self.flow.inverse_atol()

    def extra_repr(self) -> str:
        return f"enabled={self.enabled}, on_mismatch={self.on_mismatch!r}, rtol={self.rtol:g}"


def compare_gradients(flow: InvertibleModule, loss_fn: Callable[[InvertibleModule], Tensor]) -> GradientCheck:
    """Compare the flow's parameter gradients of ``loss_fn`` under standard and memory-saving backprop.

    ``loss_fn(model)`` must compute a scalar loss by calling ``model(...)`` and/or ``model.inverse(...)``; it
    is called once with ``flow`` and once with ``MemorySaving(flow)``, so any randomness in it
    (finite-difference directions) must be seeded inside it. ``.grad`` fields are left untouched. This is the
    paper's gradient-angle measurement (§3.2), for any loss.

    Example:
        >>> import torch, invertible
        >>> coupling = invertible.AffineCoupling(4, hidden=8, net="mlp")
        >>> flow = invertible.Sequential(invertible.ActNorm(4), coupling)
        >>> x = torch.randn(16, 4)
        >>> check = compare_gradients(flow, lambda m: m(x)[0].pow(2).sum())
        >>> check.agreed, check.angle < 1e-3
        (True, True)
    """
    params = [p for p in flow.parameters() if p.requires_grad]
    if not params:
        raise ValueError("compare_gradients: the flow has no parameters that require grad")
    std = torch.autograd.grad(loss_fn(flow), params, allow_unused=True)
    ms = MemorySaving(flow, on_mismatch="ignore")
    mem = torch.autograd.grad(loss_fn(ms), params, allow_unused=True)
    run = CheckRun(params, "ignore", ms.rtol, ms.max_angle)
    run.record("total", params, mem, std, None, None)
    result = run.result
    assert result is not None
    return result
