"""Helpers shared by the diagnostics: evaluation mode and per-sample norms."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor, nn

__all__ = ["eval_mode", "flat_norm"]


@contextmanager
def eval_mode(module: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Run ``module`` (and every submodule) in eval mode inside the block, restoring each one's mode after.

    Diagnostics measure the deterministic map: dequantisation noise and other training-only behaviour are off.
    """
    if not enabled:
        yield
        return
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.train(mode)


def flat_norm(t: Tensor) -> Tensor:
    """Euclidean norm of each sample, shape ``(batch,)``."""
    return t.reshape(t.shape[0], -1).norm(dim=1)
