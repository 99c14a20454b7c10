"""Which module types have a reference implementation, and how a module is turned into its reference map.

A *layer reference* turns an invertible module into a per-sample map ``x -> (y, log|det J|)`` on object arrays
of ``mpf``; a *net reference* turns a plain network module (a coupling network's parts) into ``x -> h``. Both are
looked up by the module's exact type, so a subclass that changes the math is never silently treated as its
parent: it is reported as missing until someone registers a reference for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

from mpmath import mpf
from torch import nn

from .arith import MPArray

__all__ = [
    "Builder",
    "LayerMap",
    "MissingReference",
    "NetMap",
    "has_reference",
    "layer_reference_factory",
    "logdet_wanted",
    "outputs_only",
    "register_layer_reference",
    "register_net_reference",
]

#: One sample ``x`` (channel axis first) to ``(y, log|det dy/dx|)``. Inside :func:`outputs_only` a map whose
#: log-det is expensive (a determinant of its own Jacobian) may return ``mpmath.nan`` for it instead.
LayerMap = Callable[[MPArray], tuple[MPArray, mpf]]
#: One sample ``x`` to the network output ``h``.
NetMap = Callable[[MPArray], MPArray]

LayerFactory = Callable[[nn.Module, "Builder"], LayerMap]
NetFactory = Callable[[nn.Module, "Builder"], NetMap]
F = TypeVar("F", bound=Callable)

_LAYERS: dict[type, LayerFactory] = {}
_NETS: dict[type, NetFactory] = {}
_OUTPUTS_ONLY: ContextVar[bool] = ContextVar("reference_outputs_only", default=False)


@contextmanager
def outputs_only() -> Iterator[None]:
    """Inside the block only the outputs of reference maps are used (finite-difference Jacobians): maps may skip
    an expensive log-det and return ``mpmath.nan`` in its place, so a misuse shows as NaN, never as a number."""
    token = _OUTPUTS_ONLY.set(True)
    try:
        yield
    finally:
        _OUTPUTS_ONLY.reset(token)


def logdet_wanted() -> bool:
    """Whether the caller uses the log-dets of reference maps (``False`` inside :func:`outputs_only`)."""
    return not _OUTPUTS_ONLY.get()


class MissingReference(NotImplementedError):
    """Some modules have no reference implementation; ``names`` lists their types (qualified names)."""

    def __init__(self, names: list[str]) -> None:
        self.names = sorted(set(names))
        super().__init__(
            "no mpmath reference implementation for: " + ", ".join(self.names) + ". Register one with "
            "invertible.reference.register_layer_reference (invertible layers) or register_net_reference "
            "(coupling-network parts), or declare the example out of scope (analytic=False in its registration)."
        )


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_layer_reference(*types: type) -> Callable[[F], F]:
    """Decorator: ``factory(module, builder) -> LayerMap`` is the reference of modules of exactly these types."""

    def decorate(factory: F) -> F:
        for cls in types:
            _LAYERS[cls] = factory
        return factory

    return decorate


def register_net_reference(*types: type) -> Callable[[F], F]:
    """Decorator: ``factory(module, builder) -> NetMap`` is the reference of network modules of these types."""

    def decorate(factory: F) -> F:
        for cls in types:
            _NETS[cls] = factory
        return factory

    return decorate


def layer_reference_factory(cls: type) -> LayerFactory | None:
    """The reference factory registered for exactly ``cls``, or ``None``.

    A subclass with the same math as its parent reuses the parent's reference:
    ``register_layer_reference(MyCoupling)(layer_reference_factory(AffineCoupling))``.
    """
    return _LAYERS.get(cls)


def has_reference(cls: type) -> bool:
    """Whether modules of exactly type ``cls`` have a layer or net reference."""
    return cls in _LAYERS or cls in _NETS


class Builder:
    """Builds reference maps recursively, collecting every module type that has no reference.

    Factories call :meth:`layer` and :meth:`net` for their children. A missing reference is recorded (not raised
    at once) so that one call can list all of them; the returned placeholder raises if it is ever run.
    """

    def __init__(self) -> None:
        self.missing: list[str] = []

    def _placeholder(self, module: nn.Module) -> Callable:
        self.missing.append(_qualname(type(module)))

        def unavailable(*args: object) -> object:
            raise MissingReference([_qualname(type(module))])

        return unavailable

    def layer(self, module: nn.Module) -> LayerMap:
        factory = _LAYERS.get(type(module))
        return self._placeholder(module) if factory is None else factory(module, self)

    def net(self, module: nn.Module) -> NetMap:
        factory = _NETS.get(type(module))
        return self._placeholder(module) if factory is None else factory(module, self)
