r"""Scale functions of affine couplings: ``s = g(h) > 0`` from the raw network output ``h``, as small objects.

Each scale function owns its algebra, so that the coupling, the local bounds, the classifier and memory saving
ask it instead of branching on a name:

- ``s, log_s = g(h)``: the scale and its logarithm (computed stably, e.g. ``logsigmoid``);
- :meth:`~ScaleFunction.range`: the open interval ``s`` lies in, whatever ``h`` is;
- :meth:`~ScaleFunction.interval`: ``(min s, max s, max g')`` over a box ``lo <= h <= hi`` (every ``g`` here is
  increasing with a unimodal ``g'`` peaking at a known ``h*``, so ``max g' = g'(clamp(h*, lo, hi))``);
- :meth:`~ScaleFunction.with_eps`: the variant whose scale is kept away from 0 by ``eps`` (the paper's
  ``--affine-eps``), or a :class:`ValueError` where there is none.

============== ========================= ======================================= ===================
name           class                     ``g(h)``                                range of ``s``
============== ========================= ======================================= ===================
sigmoid        :class:`Sigmoid`          ``sigmoid(h + shift)`` (Glow)            ``(0, 1)``
sigmoid_eps    :class:`SigmoidEps`       ``sigmoid(h + shift) + eps``             ``(eps, 1 + eps)``
exp            :class:`Exp`              ``exp(h)`` (RealNVP)                     ``(0, inf)``
bounded        :class:`Bounded`          ``0.5 * sigmoid(h + shift) + 0.5``       ``(0.5, 1)``
tanh_exp       :class:`TanhExp`          ``exp(log(max_scale) * tanh(h))``        ``(1/M, M)``
symmetric      :class:`Symmetric`        ``(2 sigmoid(h) - 1)(1 - eps) + 1``      ``(eps, 2 - eps)``
============== ========================= ======================================= ===================

Names stay accepted wherever a scale function is (``AffineCoupling(..., scale_fn="bounded")``): :func:`make_scale`
turns a registered name and its parameters into the object. :func:`register_scale` adds a scale function of your
own under a name.

Example:
    >>> g = make_scale("sigmoid_eps", eps=0.1)
    >>> g
    SigmoidEps(shift=2.0, eps=0.1)
    >>> s, log_s = g(torch.tensor([-100.0, 100.0]))
    >>> s, g.range()
    (tensor([0.1000, 1.1000]), (0.1, 1.1))
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields, replace
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SCALE_FNS", "SCALE_FUNCTIONS", "Bounded", "Exp", "ScaleFunction", "Sigmoid", "SigmoidEps", "Symmetric",
           "TanhExp", "make_scale", "register_scale"]


def _sigmoid_prime(u: Tensor) -> Tensor:
    s = torch.sigmoid(u)
    return s * (1 - s)


def _peak(h_star: float, lo: Tensor, hi: Tensor) -> Tensor:
    return torch.clamp(torch.full_like(lo, h_star), lo, hi)


class ScaleFunction(ABC):
    """An increasing map ``s = g(h) > 0`` (see the module docstring). Subclasses are frozen dataclasses whose
    fields are the function's parameters and whose class attribute ``name`` is its registered name."""

    name: ClassVar[str]

    @abstractmethod
    def __call__(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """``(s, log s)`` at ``h``."""

    @abstractmethod
    def range(self) -> tuple[float, float]:
        """The open interval that ``s`` lies in, whatever ``h`` is."""

    @abstractmethod
    def interval(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(min s, max s, max g')`` over ``lo <= h <= hi``, entrywise, in float64."""

    def with_eps(self, eps: float) -> ScaleFunction:
        """The variant of this function with the constant ``eps`` (``sigmoid`` becomes ``sigmoid_eps``)."""
        raise ValueError(f"the {self.name} scale function has no eps variant; use sigmoid, sigmoid_eps or symmetric")


@dataclass(frozen=True)
class Sigmoid(ScaleFunction):
    """``s = sigmoid(h + shift)`` in ``(0, 1)`` (Glow)."""

    shift: float = 2.0
    name: ClassVar[str] = "sigmoid"

    def __call__(self, h: Tensor) -> tuple[Tensor, Tensor]:
        z = h + self.shift
        return torch.sigmoid(z), F.logsigmoid(z)

    def range(self) -> tuple[float, float]:
        return 0.0, 1.0

    def interval(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        lo, hi = lo.double(), hi.double()
        return (torch.sigmoid(lo + self.shift), torch.sigmoid(hi + self.shift),
                _sigmoid_prime(_peak(-self.shift, lo, hi) + self.shift))

    def with_eps(self, eps: float) -> ScaleFunction:
        return SigmoidEps(self.shift, eps)


@dataclass(frozen=True)
class SigmoidEps(ScaleFunction):
    """``s = sigmoid(h + shift) + eps`` in ``(eps, 1 + eps)``; ``0 < eps < 1``."""

    shift: float = 2.0
    eps: float = 0.01
    name: ClassVar[str] = "sigmoid_eps"

    def __post_init__(self) -> None:
        if not 0 < self.eps < 1:
            raise ValueError(f"{self.name}: eps must be in (0, 1), got {self.eps}")

    def __call__(self, h: Tensor) -> tuple[Tensor, Tensor]:
        s = torch.sigmoid(h + self.shift) + self.eps
        return s, torch.log(s)

    def range(self) -> tuple[float, float]:
        return self.eps, 1.0 + self.eps

    def interval(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        s_lo, s_hi, dg = Sigmoid(self.shift).interval(lo, hi)
        return s_lo + self.eps, s_hi + self.eps, dg

    def with_eps(self, eps: float) -> ScaleFunction:
        return replace(self, eps=eps)


@dataclass(frozen=True)
class Exp(ScaleFunction):
    """``s = exp(h)`` in ``(0, inf)`` (RealNVP); ``log s = h`` exactly."""

    name: ClassVar[str] = "exp"

    def __call__(self, h: Tensor) -> tuple[Tensor, Tensor]:
        return torch.exp(h), h

    def range(self) -> tuple[float, float]:
        return 0.0, math.inf

    def interval(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        lo, hi = lo.double(), hi.double()
        return torch.exp(lo), torch.exp(hi), torch.exp(hi)


@dataclass(frozen=True)
class Bounded(ScaleFunction):
    """``s = 0.5 * sigmoid(h + shift) + 0.5`` in ``(0.5, 1)``."""

    shift: float = 2.0
    name: ClassVar[str] = "bounded"

    def __call__(self, h: Tensor) -> tuple[Tensor, Tensor]:
        s = 0.5 * torch.sigmoid(h + self.shift) + 0.5
        return s, torch.log(s)

    def range(self) -> tuple[float, float]:
        return 0.5, 1.0

    def interval(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        s_lo, s_hi, dg = Sigmoid(self.shift).interval(lo, hi)
        return 0.5 * s_lo + 0.5, 0.5 * s_hi + 0.5, 0.5 * dg


@dataclass(frozen=True)
class TanhExp(ScaleFunction):
    """``s = exp(log(M) tanh(h))`` in ``(1/M, M)``; ``log s = log(M) tanh(h)`` exactly; ``M > 1``."""

    max_scale: float = 2.0
    name: ClassVar[str] = "tanh_exp"

    def __post_init__(self) -> None:
        if not self.max_scale > 1:
            raise ValueError(f"{self.name}: max_scale must be > 1, got {self.max_scale}")

    def __call__(self, h: Tensor) -> tuple[Tensor, Tensor]:
        log_s = math.log(self.max_scale) * torch.tanh(h)
        return torch.exp(log_s), log_s

    def range(self) -> tuple[float, float]:
        return 1.0 / self.max_scale, self.max_scale

    def interval(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        lo, hi = lo.double(), hi.double()
        c = math.log(self.max_scale)

        def g(h: Tensor) -> Tensor:
            return torch.exp(c * torch.tanh(h))

        h_star = _peak(math.atanh((math.sqrt(1 + c * c) - 1) / c), lo, hi)  # where g' = c (1 - tanh^2) g peaks
        return g(lo), g(hi), c * (1 - torch.tanh(h_star) ** 2) * g(h_star)


@dataclass(frozen=True)
class Symmetric(ScaleFunction):
    """``s = (2 sigmoid(h) - 1)(1 - eps) + 1`` in ``(eps, 2 - eps)``, 1 at ``h = 0``; ``0 < eps < 1``."""

    eps: float = 0.01
    name: ClassVar[str] = "symmetric"

    def __post_init__(self) -> None:
        if not 0 < self.eps < 1:
            raise ValueError(f"{self.name}: eps must be in (0, 1), got {self.eps}")

    def __call__(self, h: Tensor) -> tuple[Tensor, Tensor]:
        s = (2 * torch.sigmoid(h) - 1) * (1 - self.eps) + 1
        return s, torch.log(s)

    def range(self) -> tuple[float, float]:
        return self.eps, 2.0 - self.eps

    def interval(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        lo, hi = lo.double(), hi.double()

        def g(h: Tensor) -> Tensor:
            return (2 * torch.sigmoid(h) - 1) * (1 - self.eps) + 1

        return g(lo), g(hi), 2 * (1 - self.eps) * _sigmoid_prime(_peak(0.0, lo, hi))

    def with_eps(self, eps: float) -> ScaleFunction:
        return replace(self, eps=eps)


#: The registered scale functions by name (:func:`register_scale` adds one).
SCALE_FUNCTIONS: dict[str, type[ScaleFunction]] = {
    cls.name: cls for cls in (Sigmoid, SigmoidEps, Exp, Bounded, TanhExp, Symmetric)}
#: Names of the library's own scale functions, in the order of the table above.
SCALE_FNS = tuple(SCALE_FUNCTIONS)


def register_scale(cls: type[ScaleFunction]) -> type[ScaleFunction]:
    """Register a :class:`ScaleFunction` subclass under its ``name`` (usable as a decorator); a taken name is
    refused."""
    if not (isinstance(cls, type) and issubclass(cls, ScaleFunction)):
        raise TypeError(f"register_scale takes a ScaleFunction subclass, got {cls!r}")
    if cls.name in SCALE_FUNCTIONS:
        raise ValueError(f"a scale function named {cls.name!r} is already registered")
    SCALE_FUNCTIONS[cls.name] = cls
    return cls


def make_scale(spec: str | ScaleFunction, *, shift: float | None = None, eps: float | None = None,
               max_scale: float | None = None) -> ScaleFunction:
    """The scale function ``spec``: an object as it is, or a registered name with its parameters.

    For a name, each of ``shift``, ``eps`` and ``max_scale`` that is given and is a parameter of that function is
    used (the others are ignored, so one set of keywords serves every name); an object takes no parameters here.

    Example:
        >>> make_scale("tanh_exp", max_scale=3.0, eps=0.5), make_scale(Exp())
        (TanhExp(max_scale=3.0), Exp())
    """
    given = {k: v for k, v in {"shift": shift, "eps": eps, "max_scale": max_scale}.items() if v is not None}
    if isinstance(spec, ScaleFunction):
        if given:
            raise ValueError(f"make_scale: {sorted(given)} are parameters for a scale function given by name; "
                             f"{spec!r} already carries its own")
        return spec
    if spec not in SCALE_FUNCTIONS:
        raise ValueError(f"scale_fn must be one of {tuple(SCALE_FUNCTIONS)} or a ScaleFunction, got {spec!r}")
    cls = SCALE_FUNCTIONS[spec]
    own = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in given.items() if k in own})
