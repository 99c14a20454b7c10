"""Memory-saving backprop: train a flow without storing activations, with a self-check against autograd.

- :class:`MemorySaving` wraps a flow of analytic layers: ``z, logdet = ms(x)``, ``x, logdet = ms.inverse(z)``,
  ``loss.backward()`` rebuilds each layer's input with its inverse and fills ``.grad`` as usual.
- ``with ms.checking():`` compares the memory-saving gradients of the calls inside with standard autograd's
  (:class:`GradientCheck`: angle, relative error, rebuilt-input error) and applies the ``on_mismatch`` policy.
- :func:`compare_gradients` measures the same for any loss (the paper's gradient-angle study).

Example (the classification study's step: a head on ``z``, finite-difference terms every 10 steps, a
self-check every 100 steps that falls back to standard gradients if the inverse has become inaccurate):
    >>> import torch, invertible
    >>> from invertible.models import Glow
    >>> from invertible.regularizers import Regularization
    >>> flow = Glow((3, 8, 8), levels=2, depth=2, hidden=8, split=False)
    >>> head = torch.nn.Linear(3 * 8 * 8, 10)
    >>> ms = invertible.MemorySaving(flow, on_mismatch="fallback")
    >>> reg = Regularization(fd_coeff=1e-4, fd_inv_coeff=1e-4, every=10)
    >>> opt = torch.optim.Adam([*flow.parameters(), *head.parameters()], lr=1e-3)
    >>> x, labels = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    >>> for step in range(2):
    ...     with ms.checking(step % 100 == 0):
    ...         z, logdet = ms(x)
    ...         loss = torch.nn.functional.cross_entropy(head(z.flatten(1)), labels)
    ...         loss = loss + sum(reg.terms(ms, x, z, logdet, step).values())
    ...     opt.zero_grad()
    ...     loss.backward()
    ...     opt.step()
    >>> ms.last_check.agreed
    True
"""

from .check import (
    POLICIES,
    GradientCheck,
    GradientMismatchError,
    GradientMismatchWarning,
    gradient_discrepancy,
)
from .rebuild import flatten_layers, relinearize
from .saving import MemorySaving, compare_gradients

__all__ = [
    "POLICIES",
    "GradientCheck",
    "GradientMismatchError",
    "GradientMismatchWarning",
    "MemorySaving",
    "compare_gradients",
    "flatten_layers",
    "gradient_discrepancy",
    "relinearize",
]
