"""The layer contract that every invertible layer and model follows.

An :class:`InvertibleModule` is a bijection ``f`` between tensors of the same number of elements per sample:

- ``y, logdet = layer(x)``: ``y = f(x)`` and ``logdet[i] = log|det df/dx|`` at sample ``i``, shape ``(batch,)``.
- ``x, logdet_inv = layer.inverse(y)``: ``x = f^-1(y)`` and ``logdet_inv[i] = log|det df^-1/dy|`` at sample
  ``i``, which equals ``-logdet`` at ``x``. Both directions are checked against an exact Jacobian by
  :func:`invertible.testing.check_invertible`, because round trips alone miss sign errors.
- Shapes, dtype and device follow the input; every layer works in float64. Sample ``i``'s output depends on
  sample ``i`` only (data-dependent ActNorm initialisation is the one documented exception).
- ``lipschitz_bounds()`` returns ``Bounds(forward, inverse)``: global upper bounds on the Lipschitz constants of
  ``f`` and ``f^-1`` in the Euclidean norm, each a number or ``None`` where no global bound exists (affine
  couplings). :class:`Sequential` multiplies them.
- Nothing hidden: permutation indices are buffers; cached inverses are invalidated when parameters change or a
  state dict is loaded; iterative inverses report how they ended.

Optional hooks, with generic defaults that are right for every layer (override them to do better):

- ``_local_bounds(x)``: bounds on ``||J_f(x_i)||`` and ``||J_f(x_i)^-1||`` at the samples of ``x`` (default: the
  global ``lipschitz_bounds()``); :meth:`InvertibleModule.local_bounds` and
  :func:`invertible.bounds.local_bounds` call it. Affine couplings and learned splits bound themselves on the box
  the batch spans; containers compose their layers' bounds.
- ``_relinearize(out, direction, need_input_grad)``: rebuild the layer's input from its output and re-create the
  local graph, for memory-saving backprop (:mod:`invertible.memory`); default: one inverse without a graph, one
  forward with one. Couplings fuse the two (their network runs once).
- ``_memory_saving_layers()``: the units memory saving walks through (default ``[self]``; containers list their
  layers).

Subclasses implement ``_forward`` and ``_inverse``; the public ``forward``/``inverse`` validate the input first
(rank, channel count, and, at the outermost call only, finiteness) and raise a :class:`ValueError` that names the
layer and says how to fix the call.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

__all__ = [
    "InverseOptions",
    "Bounds",
    "Relinearized",
    "Inverse",
    "InvertibleModule",
    "Sequential",
    "allow_nonfinite",
    "compose_bounds",
    "inverse_options",
    "iterative_inverse",
    "logdet_zeros",
    "numel_per_channel",
    "per_sample",
]


class Bounds(NamedTuple):
    """Global upper bounds on Lip(f) and Lip(f^-1); ``None`` means no global bound exists."""

    forward: float | None
    inverse: float | None


def compose_bounds(bounds: list[Bounds]) -> Bounds:
    """Bounds of a composition: Lip(f o g) <= Lip(f) Lip(g) in each direction; ``None`` is absorbing."""
    fwd: float | None = 1.0
    inv: float | None = 1.0
    for b in bounds:
        fwd = None if fwd is None or b.forward is None else fwd * b.forward
        inv = None if inv is None or b.inverse is None else inv * b.inverse
    return Bounds(fwd, inv)


_state = threading.local()


def _depth() -> int:
    return getattr(_state, "depth", 0)


def _nonfinite_allowed() -> bool:
    return getattr(_state, "allow_nonfinite", 0) > 0


@contextmanager
def allow_nonfinite() -> Iterator[None]:
    """Let NaN/Inf inputs through (diagnostics that count non-finite reconstructions need this).

    Example:
        >>> import torch, invertible
        >>> layer = invertible.Permutation(2, kind="reverse")
        >>> with invertible.allow_nonfinite():
        ...     y, _ = layer(torch.tensor([[1.0, float("inf")]]))
        >>> y
        tensor([[inf, 1.]])
    """
    _state.allow_nonfinite = getattr(_state, "allow_nonfinite", 0) + 1
    try:
        yield
    finally:
        _state.allow_nonfinite -= 1


@dataclass
class Relinearized:
    """One layer's rebuilt input and its recomputed local graph (the ``_relinearize`` hook's answer).

    Attributes:
        rebuilt: the layer's input, rebuilt from its output without a graph (the previous layer's output).
        outputs: ``(f(x), log|det J_f(x)|)`` recomputed with a graph from the leaves.
        leaves: leaf tensors holding the input, whose gradients make up the gradient with respect to it.
        join: turns the leaves' gradients into the gradient with respect to the input.
    """

    rebuilt: Tensor
    outputs: tuple[Tensor, Tensor]
    leaves: tuple[Tensor, ...]
    join: Callable[[Sequence[Tensor]], Tensor]


def leaf(t: Tensor, requires_grad: bool) -> Tensor:
    """``t`` detached as a new leaf of the graph (requiring grad or not)."""
    return t.detach().requires_grad_(requires_grad)


class InverseOptions(NamedTuple):
    """Overrides for iterative inverses (``None`` keeps each layer's own setting).

    Attributes:
        max_iter: iteration cap (the invertibility attack unrolls a few iterations inside its graph).
        atol, rtol: convergence tolerances.
        on_failure: what non-convergence does: ``"raise"``, ``"warn"`` or ``"return"``.
    """

    max_iter: int | None = None
    atol: float | None = None
    rtol: float | None = None
    on_failure: str | None = None

    def updated(self, **fields: Any) -> InverseOptions:
        """These options with the given fields replaced (``None`` values keep a field); an unknown name is
        refused. Constructors use it for their ``atol=``/``rtol=``/``max_iter=``/``on_failure=`` keywords.

        Example:
            >>> InverseOptions(atol=1e-5).updated(atol=1e-8, on_failure=None)
            InverseOptions(max_iter=None, atol=1e-08, rtol=None, on_failure=None)
        """
        unknown = sorted(set(fields) - set(self._fields))
        if unknown:
            raise TypeError(f"unexpected keyword {', '.join(unknown)}; the inverse's settings are "
                            f"{', '.join(self._fields)}")
        return self._replace(**{k: v for k, v in fields.items() if v is not None})

    def filled(self, defaults: InverseOptions) -> InverseOptions:
        """These options with every ``None`` field taken from ``defaults``."""
        return InverseOptions(*(own if own is not None else d for own, d in zip(self, defaults)))


def inverse_options() -> InverseOptions:
    """The overrides in force for iterative inverses (set with :func:`iterative_inverse`)."""
    return getattr(_state, "inverse_options", InverseOptions())


@contextmanager
def iterative_inverse(
    max_iter: int | None = None, atol: float | None = None, rtol: float | None = None, on_failure: str | None = None
) -> Iterator[None]:
    """Override the settings of every iterative inverse called inside the block.

    Example:
        >>> import invertible
        >>> with invertible.iterative_inverse(max_iter=4, on_failure="return"):
        ...     invertible.base.inverse_options().max_iter
        4
    """
    if on_failure not in (None, "raise", "warn", "return"):
        raise ValueError(f"on_failure must be 'raise', 'warn' or 'return', got {on_failure!r}")
    previous = inverse_options()
    _state.inverse_options = InverseOptions(
        *(new if new is not None else old for new, old in zip((max_iter, atol, rtol, on_failure), previous))
    )
    try:
        yield
    finally:
        _state.inverse_options = previous


@contextmanager
def _nested() -> Iterator[bool]:
    """Track call depth; yields True at the outermost call."""
    outer = _depth() == 0
    _state.depth = _depth() + 1
    try:
        yield outer
    finally:
        _state.depth -= 1


def _describe_nonfinite(x: Tensor) -> str:
    bad = ~torch.isfinite(x)
    n_nan = int(torch.isnan(x).sum())
    n_inf = int(bad.sum()) - n_nan
    first = int(bad.reshape(x.shape[0], -1).any(dim=1).nonzero()[0]) if x.dim() > 0 and x.shape[0] > 0 else 0
    return f"{n_nan} NaN and {n_inf} Inf values (first in sample {first})"


class InvertibleModule(nn.Module):
    """Base class of every invertible layer and model (see the module docstring for the contract).

    Class attributes:
        inverse_kind: ``"analytic"`` (closed form) or ``"iterative"`` (fixed point; reports convergence).
        logdet_kind: ``"exact"``, or ``"estimated"`` where the log-det is a stochastic or truncated estimate.
        logdet_rounding: unit round-offs that the analytic log-det may spend per entry (the contract checker's
            error model counts ``D`` entries as ``D * logdet_rounding`` terms; 1 for a log-det that takes one
            rounded log or sum per entry; a layer that needs more states it with the measurement that backs it).
    Instance attributes set by subclasses for input validation:
        channels: size of dimension 1 that the layer expects, or ``None`` for any.
        out_channels: size of dimension 1 of the output (what ``inverse`` expects), if it differs from
            ``channels`` (e.g. Glow's latents).
        ranks: allowed input ranks, e.g. ``(2, 4)`` for flat ``(B, D)`` and image ``(B, C, H, W)`` tensors.
        in_shape, out_shape: the whole per-sample shape of the input and of the output (what ``inverse``
            expects), for models built for one size (Glow for ``(C, H, W)`` images); ``None`` accepts any.
    """

    inverse_kind: ClassVar[str] = "analytic"
    logdet_kind: ClassVar[str] = "exact"
    logdet_rounding: ClassVar[float] = 1.0

    def __init__(self, channels: int | None = None, ranks: tuple[int, ...] = (2, 4)) -> None:
        super().__init__()
        self.channels = channels
        self.out_channels: int | None = None
        self.ranks = ranks
        self.in_shape: tuple[int, ...] | None = None
        self.out_shape: tuple[int, ...] | None = None

    def rounding_floor(self) -> float:
        """The magnitude below which this layer's rounding errors stop shrinking with an entry's own magnitude: 0
        for layers that scale and shift entries; a spline's bound ``B`` (it computes ``x - x_k`` with knots up to
        ``B``). The contract checker's error model measures each entry as ``|x_i| + floor``."""
        return 0.0

    # -- public API ---------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(f(x), log|det df/dx|)`` with the log-det per sample, shape ``(batch,)``."""
        with _nested() as outer:
            self._validate(x, "forward", outer)
            return self._forward(x)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(f^-1(y), log|det df^-1/dy|)`` with the log-det per sample, shape ``(batch,)``."""
        with _nested() as outer:
            self._validate(y, "inverse", outer)
            return self._inverse(y)

    def lipschitz_bounds(self) -> Bounds:
        """Global upper bounds ``(Lip(f), Lip(f^-1))``; ``None`` where no global bound exists."""
        return Bounds(None, None)

    def inverse_atol(self) -> float:
        """Absolute error an iterative inverse is allowed to leave (0 for analytic inverses)."""
        return 0.0

    def local_bounds(self, x: Tensor) -> Bounds:
        """Upper bounds on ``||J_f(x_i)||`` and ``||J_f(x_i)^-1||`` at every sample ``x_i`` of the batch.

        Never above :meth:`lipschitz_bounds` where that exists, and finite where a layer can bound itself on the
        inputs it sees (affine couplings: see :mod:`invertible.bounds.local`). Runs without a graph and lets
        non-finite values through.
        """
        with torch.no_grad(), allow_nonfinite():
            return self._local_bounds(x)

    # -- optional hooks (generic defaults; see the module docstring) ----------------------------------------------
    def _local_bounds(self, x: Tensor) -> Bounds:
        self(x)  # data-dependent layers (ActNorm, also inside nets) initialise before their parameters are read
        return self.lipschitz_bounds()

    def _relinearize(self, out: Tensor, direction: str, need_input_grad: bool) -> Relinearized:
        """Rebuild the input from ``out`` (the output of the map, ``direction="forward"``, or of its inverse) and
        recompute the local graph: one call of the other direction without a graph, one call with a graph."""
        apply, undo = (self.forward, self.inverse) if direction == "forward" else (self.inverse, self.forward)
        with torch.no_grad():
            rebuilt = undo(out)[0]
        x = leaf(rebuilt, need_input_grad)
        with torch.enable_grad():
            outputs = apply(x)
        return Relinearized(rebuilt, outputs, (x,), lambda grads: grads[0])

    def _memory_saving_layers(self) -> list[InvertibleModule]:
        return [self]

    def _maps_as(self, cls: type) -> bool:
        """Whether this module computes ``cls``'s map (a subclass that overrides ``_forward`` or ``_inverse``
        does not, so a hook specialised for ``cls`` must fall back to the generic one)."""
        return type(self)._forward is cls._forward and type(self)._inverse is cls._inverse  # type: ignore[attr-defined]

    # -- to implement ---------------------------------------------------------------------------------------
    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must implement _forward")

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must implement _inverse")

    # -- helpers ------------------------------------------------------------------------------------------
    def _expected_channels(self, direction: str) -> int | None:
        if direction == "inverse" and self.out_channels is not None:
            return self.out_channels
        return self.channels

    def _expected(self, direction: str) -> str:
        channels = self._expected_channels(direction)
        c = "C" if channels is None else str(channels)
        shapes = {2: f"(batch, {c})", 3: f"(batch, {c}, L)", 4: f"(batch, {c}, H, W)"}
        return " or ".join(shapes.get(r, f"rank {r}") for r in self.ranks)

    def _shape_mismatch(self, direction: str, got: tuple[int, ...]) -> str:
        def dims(shape: tuple[int, ...]) -> str:
            return ", ".join(map(str, shape))

        kind = type(self).__name__
        if direction == "forward":
            return (f"this {kind} was built for inputs of shape (batch, {dims(self.in_shape or ())}), got {got}; "
                    f"build one for this size (in_shape={got[1:]}) or resize the inputs")
        source = "" if self.in_shape is None else f", what it makes of inputs of shape (batch, {dims(self.in_shape)})"
        return (f"this {kind} takes latents of shape (batch, {dims(self.out_shape or ())}){source}; got {got}, "
                "latents of a model of another size")

    def _validate(self, x: Tensor, direction: str, outer: bool) -> None:
        name = f"{type(self).__name__}.{direction}"
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} expects a torch.Tensor, got {type(x).__name__}")
        channels = self._expected_channels(direction)
        if x.dim() not in self.ranks or (channels is not None and x.shape[1] != channels):
            raise ValueError(f"{name} expects input of shape {self._expected(direction)}, got {tuple(x.shape)}")
        shape = self.in_shape if direction == "forward" else self.out_shape
        if shape is not None and tuple(x.shape[1:]) != tuple(shape):
            raise ValueError(f"{name}: {self._shape_mismatch(direction, tuple(x.shape))}")
        if not x.is_floating_point():
            raise TypeError(f"{name} expects a floating-point tensor, got {x.dtype}; convert with x.float()")
        if not outer:
            return
        param = next(self.parameters(), None)
        if param is not None and (param.dtype != x.dtype or param.device != x.device):
            raise TypeError(
                f"{name}: the input is {x.dtype} on {x.device} but the parameters are {param.dtype} on "
                f"{param.device}; move one to match, e.g. layer.to(x.device, x.dtype)"
            )
        if _nonfinite_allowed() or torch._C._functorch.is_functorch_wrapped_tensor(x):
            return
        if not bool(torch.isfinite(x).all()):
            raise ValueError(
                f"{name}: the input contains {_describe_nonfinite(x)}; invertible layers refuse non-finite input. "
                "Wrap the call in `with invertible.allow_nonfinite():` to let it through (diagnostics do)."
            )

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        """Refuse tensors of another shape with an error that names the layer, then run ``_after_load``."""
        for name, own in chain(self._parameters.items(), self._buffers.items()):
            given = state_dict.get(prefix + name)
            if own is not None and isinstance(given, Tensor) and given.shape != own.shape:
                raise ValueError(
                    f"{type(self).__name__}({self.extra_repr()}) cannot load '{prefix + name}': the state dict "
                    f"holds shape {tuple(given.shape)} but this layer needs {tuple(own.shape)}; it was saved "
                    "from a layer of another size"
                )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._after_load(prefix)

    def _after_load(self, prefix: str) -> None:
        """Hook run after this module's own tensors were loaded (validation, cache invalidation)."""

    def extra_repr(self) -> str:
        return "" if self.channels is None else f"channels={self.channels}"


def per_sample(value: Tensor, x: Tensor) -> Tensor:
    """Broadcast a scalar log-det to one entry per sample of ``x``."""
    return value.expand(x.shape[0]).contiguous()


def logdet_zeros(x: Tensor) -> Tensor:
    """A zero log-det per sample, in the input's dtype and device."""
    return x.new_zeros(x.shape[0])


def numel_per_channel(x: Tensor) -> int:
    """Number of elements that share one channel's parameters (1 for flat inputs, H*W for images)."""
    return math.prod(x.shape[2:])


class Sequential(InvertibleModule):
    """Composition ``f = f_n o ... o f_1``: log-dets add, inverses run in reverse, bounds multiply.

    Example:
        >>> import torch, invertible
        >>> flow = invertible.Sequential(invertible.ActNorm(4), invertible.Permutation(4, kind="reverse"))
        >>> x = torch.randn(8, 4)
        >>> y, logdet = flow(x)
        >>> x_back, logdet_inv = flow.inverse(y)
        >>> bool(torch.allclose(x_back, x, atol=1e-6)) and bool(torch.allclose(logdet_inv, -logdet))
        True
    """

    def __init__(self, *layers: InvertibleModule) -> None:
        super().__init__(channels=None, ranks=(2, 3, 4))
        for i, layer in enumerate(layers):
            if not isinstance(layer, InvertibleModule):
                raise TypeError(f"Sequential: layer {i} is a {type(layer).__name__}, not an InvertibleModule")
        self.layers = nn.ModuleList(layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> InvertibleModule:
        return self.layers[i]  # type: ignore[return-value]

    def __iter__(self) -> Iterator[InvertibleModule]:  # type: ignore[override]
        return iter(self.layers)  # type: ignore[arg-type]

    def _validate(self, x: Tensor, direction: str, outer: bool) -> None:
        if len(self.layers) == 0:
            raise ValueError("Sequential: no layers to apply")
        super()._validate(x, direction, outer)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        total = logdet_zeros(x)
        for layer in self.layers:
            x, logdet = layer(x)
            total = total + logdet
        return x, total

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        total = logdet_zeros(y)
        for layer in reversed(self.layers):
            y, logdet = layer.inverse(y)
            total = total + logdet
        return y, total

    def lipschitz_bounds(self) -> Bounds:
        return compose_bounds([layer.lipschitz_bounds() for layer in self.layers])

    def _local_bounds(self, x: Tensor) -> Bounds:
        # each layer on the box of its own inputs: valid at the samples, whose intermediate values lie in them
        total: list[Bounds] = []
        for layer in self.layers:
            total.append(layer._local_bounds(x))
            x = layer(x)[0]
        return compose_bounds(total)

    def _memory_saving_layers(self) -> list[InvertibleModule]:
        return [unit for layer in self.layers for unit in layer._memory_saving_layers()]

    def layer_bounds(self) -> list[tuple[str, Bounds]]:
        """Each layer's own bounds, named by its position and class."""
        return [(f"{i}:{type(layer).__name__}", layer.lipschitz_bounds()) for i, layer in enumerate(self.layers)]

    def inverse_atol(self) -> float:
        return sum(layer.inverse_atol() for layer in self.layers)

    @property
    def inverse_kind(self) -> str:  # type: ignore[override]
        kinds = {layer.inverse_kind for layer in self.layers}
        return "iterative" if "iterative" in kinds else "analytic"

    @property
    def logdet_kind(self) -> str:  # type: ignore[override]
        kinds = {layer.logdet_kind for layer in self.layers}
        return "estimated" if "estimated" in kinds else "exact"


class Inverse(InvertibleModule):
    """The inverse of a layer as a layer of its own: ``Inverse(f)(y) = f.inverse(y)`` and vice versa.

    Useful to run a flow in the generative direction inside another flow, and to compose layers whose output
    shape differs from their input shape. Bounds are swapped.

    Example:
        >>> import torch, invertible
        >>> layer = invertible.Squeeze()
        >>> invertible.Inverse(layer)(torch.zeros(1, 8, 2, 2))[0].shape
        torch.Size([1, 2, 4, 4])
    """

    def __init__(self, layer: InvertibleModule) -> None:
        super().__init__(channels=layer.out_channels or layer.channels, ranks=layer.ranks)
        self.out_channels = layer.channels
        self.in_shape, self.out_shape = layer.out_shape, layer.in_shape
        self.layer = layer

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.layer.inverse(x)

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.layer(y)

    def lipschitz_bounds(self) -> Bounds:
        fwd, inv = self.layer.lipschitz_bounds()
        return Bounds(inv, fwd)

    def _local_bounds(self, x: Tensor) -> Bounds:
        b = self.layer._local_bounds(self.layer.inverse(x)[0])
        return Bounds(b.inverse, b.forward)

    def _relinearize(self, out: Tensor, direction: str, need_input_grad: bool) -> Relinearized:
        if not self._maps_as(Inverse):
            return super()._relinearize(out, direction, need_input_grad)
        other = "inverse" if direction == "forward" else "forward"
        return self.layer._relinearize(out, other, need_input_grad)

    def inverse_atol(self) -> float:
        return self.layer.inverse_atol()

    @property
    def inverse_kind(self) -> str:  # type: ignore[override]
        return self.layer.inverse_kind

    @property
    def logdet_kind(self) -> str:  # type: ignore[override]
        return self.layer.logdet_kind
