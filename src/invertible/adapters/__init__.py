"""Adapters: other libraries' bijections, and plain function pairs, under our layer contract.

Wrapped, a FrEIA module, an nflows transform, a normflows flow, a zuko transform or two callables is an
:class:`~invertible.InvertibleModule`: ``check_invertible``, the contract suite (:mod:`invertible.testing.suite`),
:class:`~invertible.Sequential`, the diagnostics and bounds all take it. Conditional maps take ``context=`` in
both directions. See :mod:`invertible.adapters.base` for what an adapter declares (iterative inverses and their
tolerance, stochastic log-dets, bounds) and :mod:`invertible.adapters.peers` for each library's convention.

Example:
    >>> import torch
    >>> from invertible.adapters import Callables
    >>> layer = Callables(lambda x: (x + 1, torch.zeros(len(x))), lambda y: (y - 1, torch.zeros(len(y))))
    >>> layer(torch.zeros(2, 3))[0]
    tensor([[1., 1., 1.],
            [1., 1., 1.]])
"""

from .base import Adapter, Callables, per_sample_logdet
from .peers import FrEIA, NFlows, NormFlows, Zuko

__all__ = ["Adapter", "Callables", "FrEIA", "NFlows", "NormFlows", "Zuko", "per_sample_logdet"]
