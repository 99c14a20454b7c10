"""Spectral normalisation with a target coefficient ``c < 1``, and exact spectral norms to check it against.

:class:`SpectralNormLinear` and :class:`SpectralNormConv2d` use the weight ``W / max(1, sigma / c)``, where
``sigma`` is the operator norm of ``W`` (for a convolution: of the whole map on ``H x W`` images, not of the
reshaped kernel). Two ways to get ``sigma``:

- ``method="power"`` (Residual Flows): ``sigma = u^T W v`` from the stored power-iteration vectors ``u`` and ``v``
  (buffers allocated at their final size at construction, so a state dict loads without a dummy forward). The
  vectors are refreshed by power iteration, warm-started, until *both* tolerances hold for both vectors:
  ``||u_new - u|| / sqrt(n) <= atol + rtol * max|u_new|`` (residual-flows replaces an explicitly passed ``rtol``
  with ``atol``; here each is used as given). The refresh runs automatically on the next forward call whenever
  the weight's values differ from those of the last refresh (each layer keeps a copy of its weight for this
  comparison, so an optimizer step, a perturbation and a write through ``.data``, e.g. swapping EMA weights in
  with ``p.data.copy_``, are all noticed: the estimate never silently goes stale; the copy costs the weight's
  memory once more); loading a state dict counts as a refresh (the stored ``u``/``v`` are used as they are,
  which is what residual-flows does at evaluation). ``u^T W v <= ||W||``, so the bound ``c`` holds up to the power
  iteration's accuracy; the exact value is :meth:`exact_lipschitz`.
- ``method="exact"``: ``sigma`` by SVD (linear and 1x1 maps) or, for ``k x k`` convolutions, by the FFT: the
  norm of a circular convolution on an ``n x m`` grid is ``max_w ||K_hat(w)||_2`` over the ``n m`` frequencies.
  It is exact for ``padding_mode="circular"``; for zero padding the grid is ``(H + 2p) x (W + 2p)``, of which the
  zero-padded map is a restriction, so the value is an upper bound and ``c`` is certified. Differentiable.

Exact spectral norms for checking: :func:`matrix_spectral_norm` (SVD), :func:`conv_spectral_norm` (FFT, or a
dense operator for tiny sizes) and :func:`power_iteration`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "METHODS",
    "PowerIterationResult",
    "SpectralNormOptions",
    "SpectralNormConv2d",
    "SpectralNormLinear",
    "cached_normalization",
    "conv_spectral_norm",
    "matrix_spectral_norm",
    "power_iteration",
    "update_lipschitz",
]

#: How ``sigma`` is obtained: stored power-iteration vectors, or an exact (certified) value.
METHODS = ("power", "exact")


@dataclass(frozen=True)
class SpectralNormOptions:
    """How a spectrally normalised layer finds and enforces ``sigma`` (see the module docstring).

    Attributes:
        coeff: the target ``c``: the normalised map's Lipschitz bound (0.98 on images, 0.7-0.9 on 2-D data in the
            paper); below 1 for a residual branch.
        method: ``"power"`` or ``"exact"``.
        atol, rtol, max_iter, n_iterations: the power iteration's stopping rule (:func:`power_iteration`).

    Example:
        >>> SpectralNormOptions(coeff=0.9).replace(method="exact")
        SpectralNormOptions(coeff=0.9, method='exact', atol=0.001, rtol=0.001, max_iter=200, n_iterations=None)
    """

    coeff: float = 0.97
    method: str = "power"
    atol: float | None = 1e-3
    rtol: float | None = 1e-3
    max_iter: int = 200
    n_iterations: int | None = None

    def __post_init__(self) -> None:
        if not self.coeff > 0:
            raise ValueError(f"SpectralNormOptions: coeff must be > 0, got {self.coeff}")
        if self.method not in METHODS:
            raise ValueError(f"SpectralNormOptions: method must be one of {METHODS}, got {self.method!r}")
        if self.n_iterations is None and not (self.atol or self.rtol):
            raise ValueError("SpectralNormOptions: give atol or rtol, or a fixed n_iterations")

    def replace(self, **changes: Any) -> SpectralNormOptions:
        """A copy with some fields changed (``None`` values keep the field); an unknown name is refused."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(f"SpectralNormOptions has no field {', '.join(unknown)}; its fields are "
                            f"{', '.join(sorted(names))}")
        return replace(self, **changes)


def _options(options: SpectralNormOptions | None, given: dict[str, Any], where: str) -> SpectralNormOptions:
    try:
        return (options if options is not None else SpectralNormOptions()).replace(**given)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{where}: {exc}") from None


class PowerIterationResult(NamedTuple):
    """How a power iteration ended: ``iterations`` run, whether both tolerances held, the estimate ``sigma``."""

    iterations: int
    converged: bool
    sigma: float


def _rms(t: Tensor) -> float:
    return float(t.norm()) / math.sqrt(max(t.numel(), 1))


def _normalize_or_keep(t: Tensor, previous: Tensor) -> Tensor:
    """``t / ||t||``, or ``previous`` when ``t`` is 0 (the map annihilated the vector)."""
    return F.normalize(t, dim=0) if bool(t.any()) else previous.clone()


@torch.no_grad()
def power_iteration(
    op: Callable[[Tensor], Tensor],
    adjoint: Callable[[Tensor], Tensor],
    u: Tensor,
    v: Tensor,
    *,
    atol: float | None = 1e-3,
    rtol: float | None = 1e-3,
    max_iter: int = 200,
    n_iterations: int | None = None,
) -> PowerIterationResult:
    """Power iteration for the top singular pair of a linear map, updating ``u`` and ``v`` in place.

    Each step is ``u <- normalize(op(v))``, ``v <- normalize(adjoint(u))``. It stops when the RMS change of both
    vectors is at most ``atol + rtol * max|.|`` (``None`` counts as 0), or after ``max_iter`` steps; with
    ``n_iterations`` it runs exactly that many steps and reports whether the tolerances held at the last one.

    A map that sends the current vector to 0 (a zero-initialised weight) leaves that vector as it is instead of
    zeroing it, and a zero vector (from such a state) restarts from the all-ones direction: otherwise ``u = v = 0``
    would be a fixed point, ``sigma = 0`` forever, and the layer would never be normalised once it is trained.

    Example:
        >>> w = torch.diag(torch.tensor([3.0, 1.0]))
        >>> u, v = torch.ones(2) / 2**0.5, torch.ones(2) / 2**0.5
        >>> result = power_iteration(lambda t: w @ t, lambda t: w.T @ t, u, v, atol=1e-6, rtol=0.0)
        >>> result.converged, round(result.sigma, 4)
        (True, 3.0)
    """
    a, r = atol or 0.0, rtol or 0.0
    if n_iterations is None and a == 0.0 and r == 0.0:
        raise ValueError("power_iteration: give atol or rtol (or a fixed n_iterations); with both 0 it never stops")
    steps = n_iterations if n_iterations is not None else max_iter
    for vector in (u, v):
        if not bool(vector.any()):
            vector.fill_(1.0 / math.sqrt(max(vector.numel(), 1)))
    converged, done = False, 0
    for done in range(1, steps + 1):
        u_new = _normalize_or_keep(op(v), u)
        v_new = _normalize_or_keep(adjoint(u_new), v)
        du, dv = _rms(u_new - u), _rms(v_new - v)
        u.copy_(u_new)
        v.copy_(v_new)
        converged = du <= a + r * float(u.abs().max()) and dv <= a + r * float(v.abs().max())
        if converged and n_iterations is None:
            break
    return PowerIterationResult(done, converged, float(torch.dot(u, op(v))))


def matrix_spectral_norm(matrix: Tensor) -> Tensor:
    """``||W||_2``, the largest singular value (SVD; differentiable where it is simple)."""
    return torch.linalg.matrix_norm(matrix, ord=2)


def _conv_matrix(weight: Tensor, size: tuple[int, int], padding_mode: str) -> Tensor:
    """The dense ``(out*H*W, in*H*W)`` matrix of a stride-1 'same' convolution (tiny sizes only)."""
    out_c, in_c, kh, kw = weight.shape
    h, w = size
    basis = torch.eye(in_c * h * w, dtype=weight.dtype, device=weight.device).reshape(-1, in_c, h, w)
    pad = (kw // 2, kw // 2, kh // 2, kh // 2)
    padded = F.pad(basis, pad, mode="circular" if padding_mode == "circular" else "constant")
    return F.conv2d(padded, weight).reshape(in_c * h * w, -1).T


def conv_spectral_norm(
    weight: Tensor, input_size: tuple[int, int], padding_mode: str = "circular", *, method: str = "fft"
) -> Tensor:
    """Operator norm of the stride-1 'same' convolution with ``weight`` on ``input_size`` images.

    - ``method="fft"``: ``max_w ||K_hat(w)||_2`` over the frequencies of the grid. Exact for circular padding on
      ``input_size``; for ``padding_mode="zeros"`` the grid is enlarged by the padding, which gives an upper bound
      (the zero-padded map is a restriction of that circular one).
    - ``method="dense"``: SVD of the full matrix of the map, exact for both paddings (tiny sizes only).

    Example:
        >>> w = torch.zeros(1, 1, 3, 3); w[0, 0, 1, 1] = 2.0
        >>> float(conv_spectral_norm(w, (4, 4)))
        2.0
    """
    if padding_mode not in ("zeros", "circular"):
        raise ValueError(f"conv_spectral_norm: padding_mode must be 'zeros' or 'circular', got {padding_mode!r}")
    kh, kw = weight.shape[2:]
    if method == "dense":
        return matrix_spectral_norm(_conv_matrix(weight, input_size, padding_mode))
    if method != "fft":
        raise ValueError(f"conv_spectral_norm: method must be 'fft' or 'dense', got {method!r}")
    h, w = input_size
    if padding_mode == "zeros":
        h, w = h + 2 * (kh // 2), w + 2 * (kw // 2)
    if kh > h or kw > w:
        raise ValueError(f"conv_spectral_norm: a {kh}x{kw} kernel does not fit a {h}x{w} grid")
    spectrum = torch.fft.fft2(weight, s=(h, w))  # (out, in, h, w)
    return torch.linalg.matrix_norm(spectrum.permute(2, 3, 0, 1), ord=2).max()


class _SpectralNorm(ABC):
    """Shared logic of the two normalised layers (a mixin over ``nn.Linear`` / ``nn.Conv2d``)."""

    weight: Tensor
    u: Tensor
    v: Tensor
    scale: Tensor

    def _setup(self, options: SpectralNormOptions | None, given: dict[str, Any]) -> None:
        o = _options(options, given, type(self).__name__)
        self.coeff, self.method = float(o.coeff), o.method
        self.atol, self.rtol, self.max_iter, self.n_iterations = o.atol, o.rtol, o.max_iter, o.n_iterations
        self._synced_weight: Tensor | None = None
        self._cached: Tensor | None = None
        self.last_power_iteration: PowerIterationResult | None = None

    @property
    def options(self) -> SpectralNormOptions:
        """The layer's settings as a :class:`SpectralNormOptions`."""
        return SpectralNormOptions(self.coeff, self.method, self.atol, self.rtol, self.max_iter, self.n_iterations)

    # -- the operator -----------------------------------------------------------------------------------------
    @abstractmethod
    def _vector_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of ``u`` (output space) and ``v`` (input space)."""

    @abstractmethod
    def _apply_op(self, weight: Tensor, v: Tensor) -> Tensor:
        """``W v`` for a flat ``v`` of the input space, flat result."""

    @abstractmethod
    def _exact_sigma(self, weight: Tensor, dense_below: int = 0) -> Tensor:
        """The exact spectral norm of the operator (SVD, or the FFT value for circular convolutions)."""

    def _init_vectors(self, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        n_u, n_v = (math.prod(s) for s in self._vector_shapes())
        u = F.normalize(torch.randn(n_u, generator=generator), dim=0)
        v = F.normalize(torch.randn(n_v, generator=generator), dim=0)
        return u, v

    # -- sigma and the normalised weight ----------------------------------------------------------------------
    def sigma(self) -> Tensor:
        """The ``sigma`` that normalises the weight (differentiable in the weight; ``u``, ``v`` are constants)."""
        if self.method == "exact":
            return self._exact_sigma(self.weight)
        return torch.dot(self.u, self._apply_op(self.weight, self.v))

    def normalized_weight(self) -> Tensor:
        """``W / max(1, sigma / c)`` (refreshing ``u``, ``v`` first if the weight changed)."""
        if self._cached is not None:
            return self._cached
        self._sync_if_stale()
        return self.weight / torch.clamp(self.sigma() / self.coeff, min=1.0)

    @torch.no_grad()
    def update_lipschitz(self, *, atol: float | None = None, rtol: float | None = None, max_iter: int | None = None,
                         n_iterations: int | None = None) -> PowerIterationResult:
        """Refresh ``u``, ``v`` (and ``scale``) by warm-started power iteration; the layer's settings by default."""
        weight = self.weight.detach()

        def op(v: Tensor) -> Tensor:
            return self._apply_op(weight, v)

        def adjoint(u: Tensor) -> Tensor:
            return torch.func.vjp(op, torch.zeros_like(self.v))[1](u)[0]

        given = (atol, rtol, n_iterations) != (None, None, None)
        result = power_iteration(
            op, adjoint, self.u, self.v,
            atol=atol if given else self.atol, rtol=rtol if given else self.rtol,
            max_iter=max_iter if max_iter is not None else self.max_iter,
            n_iterations=n_iterations if given else self.n_iterations,
        )
        self.scale.fill_(result.sigma)
        self._mark_synced()
        self.last_power_iteration = result
        return result

    def _mark_synced(self) -> None:
        # a copy of the values, not the version counter: writes through ``.data`` do not move the counter
        self._synced_weight = self.weight.detach().clone()
        initialized = getattr(self, "initialized", None)
        if isinstance(initialized, Tensor):
            initialized.fill_(1)

    def _is_synced(self) -> bool:
        initialized = getattr(self, "initialized", None)
        if isinstance(initialized, Tensor) and not bool(initialized):
            return False
        saved, weight = self._synced_weight, self.weight.detach()
        return (saved is not None and saved.dtype == weight.dtype and saved.device == weight.device
                and saved.shape == weight.shape and torch.equal(saved, weight))

    def _sync_if_stale(self) -> None:
        if self.method != "power" or torch._C._functorch.is_functorch_wrapped_tensor(self.weight):
            return
        if not self._is_synced():
            self.update_lipschitz()

    # -- checking ---------------------------------------------------------------------------------------------
    def lipschitz_bound(self) -> float:
        """Bound on the normalised map's Lipschitz constant: ``c`` (power), or the certified exact value."""
        if self.method == "power":
            return self.coeff
        with torch.no_grad():
            return float(torch.clamp(self._exact_sigma(self.weight), max=self.coeff))

    @torch.no_grad()
    def exact_lipschitz(self) -> float:
        """Operator norm of the normalised map in float64: exact (SVD of the dense map) for small convolutions
        and all matrices; for large zero-padded convolutions the certified FFT upper bound."""
        return float(self._exact_sigma(self.normalized_weight().double(), dense_below=4096))

    def _after_load(self) -> None:
        # the stored u/v are used as they are (residual-flows' evaluation does the same)
        self._synced_weight = self.weight.detach().clone()

    def _spectral_repr(self) -> str:
        return f"coeff={self.coeff}, method={self.method!r}"


class SpectralNormLinear(_SpectralNorm, nn.Linear):
    r"""Linear layer with spectrally normalised weight: ``y = W_c x + b``, ``W_c = W / max(1, sigma / c)``.

    Lipschitz bound ``c`` (see the module docstring for how ``sigma`` is found). State dict keys: ``weight``,
    ``bias``, ``scale`` (the last ``sigma`` estimate), ``u`` (out,), ``v`` (in,), as residual-flows'
    ``InducedNormLinear`` with ``vnorms=2``.

    Args:
        options: the target ``coeff``, the ``method`` and the power iteration's stopping rule
            (:class:`SpectralNormOptions`; its defaults if ``None``).
        generator: seeds the initial ``u``, ``v``.
        fields: keywords named like the options' fields (``coeff=0.9``, ``method="exact"``, ...) replace them.

    Example:
        >>> layer = SpectralNormLinear(4, 3, options=SpectralNormOptions(coeff=0.9))
        >>> layer(torch.randn(2, 4)).shape, layer.exact_lipschitz() <= 0.9 + 1e-4
        (torch.Size([2, 3]), True)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 options: SpectralNormOptions | None = None, generator: torch.Generator | None = None,
                 **fields: Any) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias)
        self._setup(options, fields)
        u, v = self._init_vectors(generator)
        self.register_buffer("scale", torch.tensor(0.0))
        self.register_buffer("u", u)
        self.register_buffer("v", v)
        if self.method == "power":
            self.update_lipschitz()  # cheap for a matrix: a fresh layer is normalised from the start

    def _vector_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (self.out_features,), (self.in_features,)

    def _apply_op(self, weight: Tensor, v: Tensor) -> Tensor:
        return torch.mv(weight, v)

    def _exact_sigma(self, weight: Tensor, dense_below: int = 0) -> Tensor:
        return matrix_spectral_norm(weight)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.normalized_weight(), self.bias)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._after_load()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._spectral_repr()}"


class SpectralNormConv2d(_SpectralNorm, nn.Conv2d):
    r"""Stride-1 'same' convolution with spectrally normalised weight: ``y = conv(x, W_c) + b``.

    ``sigma`` is the operator norm of the whole convolution on ``input_size`` images (for ``k x k`` kernels the
    power-iteration vectors live in the flattened feature spaces, ``u`` of size ``out*H*W`` and ``v`` of size
    ``in*H*W``; for 1x1 kernels they are ``(out,)`` and ``(in,)``). Lipschitz bound ``c``. State dict keys as
    residual-flows' ``InducedNormConv2d``: ``weight``, ``bias``, ``initialized`` (1 once ``u``/``v`` were
    converged), ``spatial_dims`` ([H, W]), ``scale``, ``u``, ``v``, all allocated at construction.

    Args:
        input_size: ``(H, W)`` of the inputs; required for kernels larger than 1x1 (the norm depends on it).
        padding_mode: ``"zeros"`` (residual-flows) or ``"circular"`` (for which the FFT value is exact).
        options, generator, fields: as for :class:`SpectralNormLinear`.

    Example:
        >>> conv = SpectralNormConv2d(2, 4, 3, input_size=(6, 6), coeff=0.9, method="exact")  # certified
        >>> conv(torch.randn(1, 2, 6, 6)).shape, conv.exact_lipschitz() <= 0.9 + 1e-6
        (torch.Size([1, 4, 6, 6]), True)

        (With ``method="power"`` the bound holds up to the power iteration's accuracy, which its tolerances on
        ``u`` and ``v`` do not fix for ``sigma``: on random 2-to-4-channel 3x3 kernels at the default 1e-3, the
        normalised norm exceeded ``0.9 + 1e-3`` for 54 of 150 seeds.)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True, *,
                 input_size: tuple[int, int] | None = None, padding_mode: str = "zeros",
                 options: SpectralNormOptions | None = None, generator: torch.Generator | None = None,
                 **fields: Any) -> None:
        if kernel_size % 2 != 1:
            raise ValueError(f"SpectralNormConv2d: kernel_size must be odd ('same' padding), got {kernel_size}")
        if padding_mode not in ("zeros", "circular"):
            raise ValueError(f"SpectralNormConv2d: padding_mode must be 'zeros' or 'circular', got {padding_mode!r}")
        if kernel_size > 1 and input_size is None:
            raise ValueError(
                f"SpectralNormConv2d: a {kernel_size}x{kernel_size} kernel needs input_size=(H, W): the norm of the "
                "convolution, and the size of the power-iteration vectors, depend on the image size"
            )
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias,
                           padding_mode=padding_mode)
        self._setup(options, fields)
        self.input_size = None if input_size is None else (int(input_size[0]), int(input_size[1]))
        u, v = self._init_vectors(generator)
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.int64))
        self.register_buffer("spatial_dims", torch.tensor([float(s) for s in (input_size or (1, 1))]))
        self.register_buffer("scale", torch.tensor(0.0))
        self.register_buffer("u", u)
        self.register_buffer("v", v)
        if self.method == "power" and kernel_size == 1:
            self.update_lipschitz()  # a matrix: cheap; larger kernels converge lazily on the first forward call

    @property
    def _spatial(self) -> bool:
        return self.kernel_size[0] > 1

    def _vector_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        if not self._spatial:
            return (self.out_channels,), (self.in_channels,)
        h, w = self.input_size  # type: ignore[misc]
        return (self.out_channels, h, w), (self.in_channels, h, w)

    def _apply_op(self, weight: Tensor, v: Tensor) -> Tensor:
        if not self._spatial:
            return torch.mv(weight[:, :, 0, 0], v)
        h, w = self.input_size  # type: ignore[misc]
        return self._conv_forward(v.view(1, self.in_channels, h, w), weight, None).reshape(-1)

    def _exact_sigma(self, weight: Tensor, dense_below: int = 0) -> Tensor:
        if not self._spatial:
            return matrix_spectral_norm(weight[:, :, 0, 0])
        h, w = self.input_size  # type: ignore[misc]
        method = "dense" if max(self.in_channels, self.out_channels) * h * w <= dense_below else "fft"
        return conv_spectral_norm(weight, (h, w), self.padding_mode, method=method)

    def forward(self, x: Tensor) -> Tensor:
        if self._spatial and tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(
                f"SpectralNormConv2d was built for {self.input_size[0]}x{self.input_size[1]} inputs (its norm "  # type: ignore[index]
                f"depends on the size), got {x.shape[-2]}x{x.shape[-1]}; build it with input_size={tuple(x.shape[-2:])}"
            )
        return self._conv_forward(x, self.normalized_weight(), self.bias)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._after_load()

    def extra_repr(self) -> str:
        size = "" if self.input_size is None else f", input_size={self.input_size}"
        return f"{super().extra_repr()}{size}, {self._spectral_repr()}"


@contextmanager
def cached_normalization(module: nn.Module) -> Iterator[None]:
    """Inside the block, each spectrally normalised layer of ``module`` uses one normalised weight.

    The weights are normalised once on entry (at the caller's autograd/``torch.func`` level) instead of at every
    call, which matters for fixed-point iterations and brute-force Jacobians that call the branch many times.
    Gradients still flow through the normalisation. Do not change the weights inside the block.
    """
    layers = [m for m in module.modules() if isinstance(m, _SpectralNorm)]
    previous = [m._cached for m in layers]
    for m in layers:
        m._cached = None
        m._cached = m.normalized_weight()
    try:
        yield
    finally:
        for m, cached in zip(layers, previous):
            m._cached = cached


def update_lipschitz(module: nn.Module, **options: Any) -> list[PowerIterationResult]:
    """Run :meth:`~SpectralNormLinear.update_lipschitz` on every spectrally normalised layer inside ``module``.

    The layers refresh themselves on their next forward call whenever their weights changed (in any way, through
    ``.data`` too); call this to refresh them now, or with other settings.
    ``options`` (``atol``, ``rtol``, ``max_iter``, ``n_iterations``) override each layer's settings.
    """
    return [m.update_lipschitz(**options) for m in module.modules() if isinstance(m, _SpectralNorm)]
