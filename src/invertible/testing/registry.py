"""The registry of examples that puts every public layer and model under the contract suite.

An :class:`Example` is a named builder ``build(**params) -> (module, x)`` with a few fixed configurations (for
:func:`examples`) and, optionally, a hypothesis search space over the same parameters (for
:func:`example_strategy`). Registering an example is what puts a layer under test: the property and numerical
suites iterate over this registry.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..base import InvertibleModule

__all__ = ["Example", "example_names", "example_strategy", "examples", "get_example", "randomize_", "register"]

_REGISTRY: dict[str, Example] = {}


@dataclass(frozen=True)
class Example:
    """A named example: ``build(**params)`` returns ``(module, x)`` in float64.

    Attributes:
        name: registry key, e.g. ``"affine_coupling"``.
        build: the builder; every parameter has a default, and ``seed`` fixes parameters and input.
        configs: fixed configurations that :func:`examples` yields (at least the defaults).
        space: returns a dict of hypothesis strategies for ``build``'s parameters (called lazily, so hypothesis is
            only needed by the property tests).
        layer: the class under test (for coverage checks).
        analytic: whether the module has an analytic inverse and exact log-det (the memory-saving and mpmath
            suites use only these).
    """

    name: str
    build: Callable[..., tuple[InvertibleModule, Tensor]]
    configs: tuple[dict[str, Any], ...] = ({},)
    space: Callable[[], dict[str, Any]] | None = None
    layer: type | None = None
    analytic: bool = True
    tags: frozenset[str] = field(default_factory=frozenset)


def register(
    name: str,
    *,
    configs: tuple[dict[str, Any], ...] | list[dict[str, Any]] = ({},),
    space: Callable[[], dict[str, Any]] | None = None,
    layer: type | None = None,
    analytic: bool = True,
    tags: tuple[str, ...] = (),
) -> Callable[[Callable[..., tuple[InvertibleModule, Tensor]]], Callable[..., tuple[InvertibleModule, Tensor]]]:
    """Decorator registering ``build`` under ``name`` (a second registration of the same name is refused)."""

    Build = Callable[..., tuple[InvertibleModule, Tensor]]

    def decorate(build: Build) -> Build:
        if name in _REGISTRY:
            raise ValueError(f"an example named {name!r} is already registered")

        @functools.wraps(build)
        def seeded(**params: Any) -> tuple[InvertibleModule, Tensor]:
            # default initialisations draw from the global generator: fix it, and leave it as it was
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(params.get("seed", 0)))
                return build(**params)

        _REGISTRY[name] = Example(name, seeded, tuple(configs), space, layer, analytic, frozenset(tags))
        return build

    return decorate


def _load_catalog() -> None:
    from . import catalog  # noqa: F401  (registers the library's examples)


def example_names() -> list[str]:
    """Names of all registered examples."""
    _load_catalog()
    return sorted(_REGISTRY)


def get_example(name: str) -> Example:
    """The registered example ``name``."""
    _load_catalog()
    if name not in _REGISTRY:
        raise KeyError(f"no example named {name!r}; registered: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def _config_id(config: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in config.items()) or "default"


def examples(tag: str | None = None) -> Iterator[tuple[str, InvertibleModule, Tensor]]:
    """Yield ``(name, module, x)`` for every registered example and configuration (float64, small inputs)."""
    for name in example_names():
        example = _REGISTRY[name]
        if tag is not None and tag not in example.tags:
            continue
        for config in example.configs:
            module, x = example.build(**config)
            yield f"{name}[{_config_id(config)}]", module, x


def example_strategy(name: str) -> Any:
    """A hypothesis strategy of ``(module, x)`` for example ``name``, drawn over its search space (the same as
    :func:`invertible.testing.strategies.examples`)."""
    from .strategies import examples as example_draws

    return example_draws(name)


def randomize_(module: nn.Module, scale: float = 0.3, seed: int = 0) -> nn.Module:
    """Add ``N(0, scale^2)`` noise to every parameter, so zero-initialised layers are not trivial under test."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
            p.add_(scale * noise.to(p.dtype))
    return module
