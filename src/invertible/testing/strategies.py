"""Hypothesis strategies for shapes, inputs, parameters and registered examples (needs ``hypothesis``).

The contract suite (``tests/property``) draws everything it tests from here, and so can a project that verifies its
own layers: :func:`examples` gives ``(module, x)`` pairs of a registered example over its whole search space,
:func:`shapes` and :func:`inputs` give tensors for a layer of your own.

Inputs are drawn as a seed and a scale, not entry by entry: a float64 tensor ``offset + scale * N(0, I)`` from a
seeded generator, so hypothesis shrinks a failure to a small seed and scale, and every draw is reproducible from
the falsifying example it prints.

Example:
    >>> import torch, invertible
    >>> from hypothesis import given, settings
    >>> from invertible.testing import check_invertible, strategies
    >>> @settings(max_examples=5, deadline=None)
    ... @given(strategies.inputs(strategies.shapes(kind="flat", channels=(3, 3))))
    ... def test_my_layer(x: torch.Tensor) -> None:
    ...     check_invertible(invertible.ActNorm(3).double(), x)
    >>> test_my_layer()
"""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import strategies as st
from torch import Tensor

from ..base import InvertibleModule

__all__ = [
    "SCALES",
    "batch_sizes",
    "example_names",
    "example_space",
    "examples",
    "inputs",
    "named_examples",
    "scales",
    "seeds",
    "shapes",
]

#: Input scales the registry's search spaces draw from (inputs of size ~0.5 to ~3 per entry).
SCALES = (0.5, 1.0, 3.0)


def seeds() -> st.SearchStrategy[int]:
    """Seeds for parameters and inputs, ``0 .. 2**16``.

    Example:
        >>> from invertible.testing.strategies import seeds
        >>> 0 <= seeds().example() <= 2**16
        True
    """
    return st.integers(0, 2**16)


def scales(values: tuple[float, ...] = SCALES) -> st.SearchStrategy[float]:
    """Input scales (standard deviations), sampled from ``values``."""
    return st.sampled_from(values)


def batch_sizes(low: int = 1, high: int = 3) -> st.SearchStrategy[int]:
    """Batch sizes ``low .. high`` (a batch of 1 is drawn too: it exercises the batch-independence edge)."""
    return st.integers(low, high)


def shapes(kind: str = "any", batch: tuple[int, int] = (1, 3), channels: tuple[int, int] = (2, 5),
           sizes: tuple[int, ...] = (2, 4)) -> st.SearchStrategy[tuple[int, ...]]:
    """Input shapes: flat ``(B, C)`` or images ``(B, C, H, H)``.

    Args:
        kind: ``"flat"``, ``"image"`` or ``"any"`` (either).
        batch, channels: inclusive ranges of ``B`` and ``C``.
        sizes: the spatial sizes ``H`` to choose from.

    Example:
        >>> from invertible.testing.strategies import shapes
        >>> shape = shapes(kind="image", channels=(3, 3), sizes=(4,)).example()
        >>> shape[1:]
        (3, 4, 4)
    """
    if kind not in ("flat", "image", "any"):
        raise ValueError(f"shapes: kind must be 'flat', 'image' or 'any', got {kind!r}")
    b, c = st.integers(*batch), st.integers(*channels)
    flat = st.tuples(b, c)
    image = st.tuples(b, c, st.sampled_from(sizes)).map(lambda t: (t[0], t[1], t[2], t[2]))
    return {"flat": flat, "image": image, "any": st.one_of(flat, image)}[kind]  # type: ignore[return-value]


def _normal(shape: tuple[int, ...], seed: int, scale: float, offset: float, dtype: torch.dtype) -> Tensor:
    generator = torch.Generator().manual_seed(10_000 + seed)
    return (offset + scale * torch.randn(shape, generator=generator, dtype=torch.float64)).to(dtype)


def inputs(shape: tuple[int, ...] | st.SearchStrategy[tuple[int, ...]], *, scale: Any = None, offset: float = 0.0,
           dtype: torch.dtype = torch.float64) -> st.SearchStrategy[Tensor]:
    """Tensors ``offset + scale * N(0, I)`` of ``shape`` (a shape or a strategy of shapes), from a drawn seed.

    ``scale`` is a number or a strategy (default :func:`scales`). The same seed, scale and shape give the same
    tensor (the registry's examples use the same rule, :func:`invertible.testing.catalog.core.sample_input`).

    Example:
        >>> import torch
        >>> from invertible.testing.strategies import inputs
        >>> x = inputs((2, 3), scale=1.0, dtype=torch.float32).example()
        >>> x.shape, x.dtype
        (torch.Size([2, 3]), torch.float32)
    """
    shape_st = shape if isinstance(shape, st.SearchStrategy) else st.just(tuple(shape))
    scale_st = scale if isinstance(scale, st.SearchStrategy) else scales() if scale is None else st.just(float(scale))
    return st.builds(lambda s, seed, sc: _normal(s, seed, sc, offset, dtype), shape_st, seeds(), scale_st)


def example_names(tag: str | None = None) -> list[str]:
    """Names of the registered examples (with ``tag``, only those carrying it)."""
    from .registry import example_names as names
    from .registry import get_example

    return [n for n in names() if tag is None or tag in get_example(n).tags]


def example_space(name: str) -> st.SearchStrategy[dict[str, Any]]:
    """The constructor arguments of registered example ``name`` over its search space (its fixed configurations
    when it declares none).

    Example:
        >>> from invertible.testing.strategies import example_space
        >>> params = example_space("actnorm").example()
        >>> {"batch", "channels", "seed", "scale"} <= set(params)
        True
    """
    from .registry import get_example

    example = get_example(name)
    if example.space is None:
        return st.sampled_from(example.configs)
    return st.fixed_dictionaries(example.space())


def examples(name: str) -> st.SearchStrategy[tuple[InvertibleModule, Tensor]]:
    """``(module, x)`` of registered example ``name`` (float64), built from a draw of :func:`example_space`.

    Example:
        >>> import torch
        >>> from invertible.testing.strategies import examples
        >>> module, x = examples("affine_coupling").example()
        >>> x.dtype, module(x)[1].shape == x.shape[:1]
        (torch.float64, True)
    """
    from .registry import get_example

    build = get_example(name).build
    return example_space(name).map(lambda params: build(**params))


def named_examples(names: list[str] | None = None) -> st.SearchStrategy[tuple[str, InvertibleModule, Tensor]]:
    """``(name, module, x)`` over several registered examples (all of them by default)."""
    chosen = names if names is not None else example_names()
    return st.sampled_from(chosen).flatmap(lambda n: examples(n).map(lambda mx: (n, *mx)))
