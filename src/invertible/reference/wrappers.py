"""References of wrappers whose map is the wrapped module's own (memory-saving backprop changes gradients only)."""

from __future__ import annotations

from torch import nn

from .registry import Builder, LayerMap, register_layer_reference

__all__: list[str] = []

try:  # the memory-saving package is being built in parallel; without it there is nothing to register
    from ..memory import MemorySaving
except ImportError:  # pragma: no cover
    MemorySaving = None

if MemorySaving is not None:

    @register_layer_reference(MemorySaving)
    def _memory_saving(module: nn.Module, builder: Builder) -> LayerMap:
        """``MemorySaving(flow)`` computes exactly ``flow``'s map and log-det."""
        return builder.layer(module.flow)
