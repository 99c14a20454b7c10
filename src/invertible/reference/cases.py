"""Tiny configurations of the registered examples, sized for the mpmath reference.

Every configuration of every registered example (:mod:`invertible.testing`) is built again with a batch of 2 and
the smallest spatial size its builder accepts (``size=2``), so that new layers are picked up automatically. An
example that stays too large (more than :data:`MAX_DIMS` entries per sample) is reported, not silently skipped.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..base import InvertibleModule
from ..testing import example_names, get_example

__all__ = ["MAX_DIMS", "TINY", "TinyCase", "tiny_case", "tiny_cases", "tiny_configurations"]

#: Overrides applied to each builder that accepts them.
TINY: dict[str, Any] = {"batch": 2, "size": 2}
#: Largest number of entries per sample the reference handles in the test suite.
MAX_DIMS = 32


@dataclass
class TinyCase:
    """One tiny configuration: ``module`` in float64 eval mode, initialised on ``x``."""

    id: str
    name: str
    config: dict[str, Any]
    analytic: bool
    module: InvertibleModule
    x: Tensor

    @property
    def dims(self) -> int:
        return int(self.x[0].numel())


def _config_id(config: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in config.items()) or "default"


def tiny_case(name: str, config: dict[str, Any]) -> TinyCase:
    """Build example ``name`` with ``config`` and the :data:`TINY` overrides its builder accepts."""
    example = get_example(name)
    accepted = inspect.signature(example.build).parameters
    params = {**config, **{k: v for k, v in TINY.items() if k in accepted and k not in config}}
    module, x = example.build(**params)
    module.eval()
    with torch.no_grad():
        module(x)  # data-dependent initialisation happens here, before the reference reads the parameters
    return TinyCase(f"{name}[{_config_id(config)}]", name, dict(config), example.analytic, module, x)


def tiny_configurations() -> Iterator[tuple[str, str, dict[str, Any], bool]]:
    """``(id, name, config, analytic)`` for every configuration of every registered example, without building."""
    for name in example_names():
        example = get_example(name)
        for config in example.configs:
            yield f"{name}[{_config_id(config)}]", name, dict(config), example.analytic


def tiny_cases() -> Iterator[TinyCase]:
    """A tiny case for every configuration of every registered example."""
    for _, name, config, _ in tiny_configurations():
        yield tiny_case(name, config)
