"""Adapters for the bijections of FrEIA, nflows, normflows and zuko (``pip install "invertible[peers]"``).

Each wraps an already built object of that library and imports nothing from it, so this module loads without
them. The conventions translated (read from each library's base class):

- FrEIA ``InvertibleModule``: ``(outputs,), log_jac_det = module([x], c=[context], rev=reverse, jac=True)``; a
  volume-preserving block may return the number ``0.``.
- nflows ``Transform``: ``outputs, logabsdet = transform(x, context)`` and ``transform.inverse(y, context)``.
- normflows ``Flow``: ``z, log_det = flow(z)`` and ``flow.inverse(z)`` (``context=`` where the flow takes it).
- zuko: a ``LazyTransform`` (an ``nn.Module`` that builds a ``Transform`` from a context) or a ``Transform``;
  ``y, ladj = t.call_and_ladj(x)``, ``t.inv.call_and_ladj(y)``; an element-wise ``ladj`` is summed per sample.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .base import Adapter, accepts_context, per_sample_logdet

__all__ = ["FrEIA", "NFlows", "NormFlows", "Zuko"]


class FrEIA(Adapter):
    """A FrEIA module (``FrEIA.modules.InvertibleModule``) under our contract.

    Example:
        >>> import torch
        >>> from FrEIA.modules import PermuteRandom  # doctest: +SKIP
        >>> layer = FrEIA(PermuteRandom([(4,)], seed=0)).double()  # doctest: +SKIP
    """

    def __init__(self, module: nn.Module, **kind: Any) -> None:
        super().__init__(**kind)
        self.module = module

    def _run(self, x: Tensor, context: Tensor | None, reverse: bool) -> tuple[Tensor, Tensor]:
        conditions = {} if context is None else {"c": [context]}  # unconditional blocks take no c
        (y, *_), logdet = self.module([x], rev=reverse, jac=True, **conditions)
        return y, per_sample_logdet(logdet, x)


class NFlows(Adapter):
    """An nflows ``Transform`` under our contract (``context`` passed through)."""

    def __init__(self, transform: nn.Module, **kind: Any) -> None:
        super().__init__(**kind)
        self.transform = transform

    def _run(self, x: Tensor, context: Tensor | None, reverse: bool) -> tuple[Tensor, Tensor]:
        fn = self.transform.inverse if reverse else self.transform
        y, logdet = fn(x, context=context)
        return y, per_sample_logdet(logdet, x)


class NormFlows(Adapter):
    """A normflows ``Flow`` under our contract (``context=`` passed to the flows that take it)."""

    def __init__(self, flow: nn.Module, **kind: Any) -> None:
        super().__init__(**kind)
        self.flow = flow

    def _run(self, x: Tensor, context: Tensor | None, reverse: bool) -> tuple[Tensor, Tensor]:
        fn = self.flow.inverse if reverse else self.flow
        y, logdet = fn(x) if context is None and not accepts_context(fn) else fn(x, context=context)
        return y, per_sample_logdet(logdet, x)


class Zuko(Adapter):
    """A zuko ``LazyTransform`` (called with the context) or a ``Transform`` under our contract."""

    def __init__(self, transform: Any, **kind: Any) -> None:
        super().__init__(**kind)
        self.transform = transform  # an nn.Module (LazyTransform) is registered, a Transform is kept as is

    def _run(self, x: Tensor, context: Tensor | None, reverse: bool) -> tuple[Tensor, Tensor]:
        t = self.transform(context) if isinstance(self.transform, nn.Module) else self.transform
        y, ladj = (t.inv if reverse else t).call_and_ladj(x)
        return y, per_sample_logdet(ladj, x)
