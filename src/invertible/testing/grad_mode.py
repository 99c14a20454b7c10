"""Whether the contract checks call a module with autograd on.

The checks evaluate modules under ``torch.no_grad()`` (the inference setting, and cheaper). Some modules cannot
run there: their forward calls ``torch.autograd.grad`` itself (FrEIA's i-ResNet log-det, Hutchinson estimators
written that way). ``check_invertible`` then runs every call of the module with autograd on, says so in its
notes, and compares only values (outputs are detached). :func:`no_grad_unless_needed` is the context every part
of the checks uses around module calls.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["calls_with_grad", "module_calls_need_grad", "no_grad_unless_needed"]

_state = threading.local()


def module_calls_need_grad() -> bool:
    """Whether module calls inside the checks run with autograd on."""
    return bool(getattr(_state, "grad", False))


@contextmanager
def calls_with_grad(enabled: bool) -> Iterator[None]:
    """Run the module calls of the checks inside the block with autograd on (``enabled``) or off."""
    previous = module_calls_need_grad()
    _state.grad = enabled
    try:
        yield
    finally:
        _state.grad = previous


def no_grad_unless_needed() -> torch.autograd.grad_mode.set_grad_enabled:
    """``torch.no_grad()``, or autograd on where the module needs it (see the module docstring).

    Example:
        >>> with calls_with_grad(True), no_grad_unless_needed():
        ...     torch.is_grad_enabled()
        True
    """
    return torch.set_grad_enabled(module_calls_need_grad())
