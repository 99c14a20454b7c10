"""The peers' layers that ``python -m invertible.verify`` checks: FrEIA 0.2, nflows 0.14, normflows 1.7.3, zuko 1.6.

Each entry builds one layer as a user of that library would (its public constructor, small sizes, a seeded
random initialisation: zero-initialised networks are jittered so that no layer is the identity), wraps it with
:mod:`invertible.adapters`, and returns ``(adapter, x, context)`` in float64. What an adapter declares (an
iterative inverse and its tolerance, a stochastic log-det) is taken from the library's own documentation and
written beside the entry; nothing else about a layer is told to the checks.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..base import InvertibleModule

__all__ = ["ENTRIES", "LIBRARIES", "Entry", "library_version"]

#: The libraries and the versions the catalogue was written for (their import names).
LIBRARIES = {"FrEIA": ("FrEIA", "0.2"), "nflows": ("nflows", "0.14"), "normflows": ("normflows", "1.7.3"),
             "zuko": ("zuko", "1.6")}

DT = torch.float64
Built = tuple[InvertibleModule, Tensor, "Tensor | None"]


@dataclass(frozen=True)
class Entry:
    """One peer layer: ``build()`` returns ``(adapter, x, context)`` in float64 (seeded)."""

    library: str
    name: str
    build: Callable[[], Built]
    declared: str = ""  # what the adapter declares beyond the defaults, and the library's documentation for it

    @property
    def key(self) -> str:
        return f"{self.library}.{self.name}"


ENTRIES: list[Entry] = []


def entry(library: str, name: str, declared: str = "") -> Callable[[Callable[[], Built]], Callable[[], Built]]:
    def add(build: Callable[[], Built]) -> Callable[[], Built]:
        def seeded() -> Built:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                import numpy as np

                np.random.seed(0)  # FrEIA draws permutations and orthogonal matrices with numpy
                return build()

        ENTRIES.append(Entry(library, name, seeded, declared))
        return build

    return add


def library_version(library: str) -> str | None:
    """The installed version of ``library`` (``None`` when it is not installed)."""
    try:
        module = importlib.import_module(LIBRARIES[library][0])
    except ImportError:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(LIBRARIES[library][0])
    except PackageNotFoundError:  # pragma: no cover - an uninstalled source tree
        return str(getattr(module, "__version__", "?"))


def flat(batch: int = 4, dims: int = 6, scale: float = 1.0, offset: float = 0.0) -> Tensor:
    g = torch.Generator().manual_seed(1)
    return offset + scale * torch.randn(batch, dims, generator=g, dtype=DT)


def image(batch: int = 3, channels: int = 4, size: int = 4) -> Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, channels, size, size, generator=g, dtype=DT)


def context(batch: int = 4, dims: int = 3) -> Tensor:
    g = torch.Generator().manual_seed(2)
    return torch.randn(batch, dims, generator=g, dtype=DT)


def jitter(module: nn.Module, scale: float = 0.3) -> nn.Module:
    """Add seeded noise to the trainable floating parameters (frozen structure, e.g. a fixed permutation, is left
    alone), so zero-initialised networks do not make a layer the identity."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad and p.is_floating_point():
                p.add_(scale * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))
    return module


def mlp(c_in: int, c_out: int, hidden: int = 16) -> nn.Module:
    return nn.Sequential(nn.Linear(c_in, hidden), nn.Tanh(), nn.Linear(hidden, c_out))


def conv(c_in: int, c_out: int, hidden: int = 8) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c_in, hidden, 3, padding=1), nn.Tanh(), nn.Conv2d(hidden, c_out, 3, padding=1))


def initialised(adapter: InvertibleModule, x: Tensor, c: Tensor | None = None) -> Built:
    """Run one forward pass in training mode (data-dependent initialisations), then return the triple."""
    adapter.train()
    with torch.no_grad():
        adapter(x) if c is None else adapter(x, context=c)
    return adapter, x, c


from . import catalog_freia, catalog_nflows, catalog_normflows, catalog_zuko  # noqa: E402,F401  (register entries)
