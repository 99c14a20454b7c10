"""The contract suite, public so that other projects can verify their own layers with it.

- :func:`check_invertible` runs every contract check on one module and one input and says which property failed,
  by how much and at which input; :func:`check_gradients` runs ``gradcheck`` in both directions.
- :func:`examples` yields ``(name, module, x)`` for every registered layer and model; :func:`register` adds yours.
- :mod:`invertible.testing.strategies` has hypothesis strategies for shapes, parameters and inputs.

Example:
    >>> import torch, invertible
    >>> from invertible.testing import check_invertible
    >>> layer = invertible.ActNorm(3).double()
    >>> report = check_invertible(layer, torch.randn(4, 3, 2, 2, dtype=torch.float64) * 2 + 1)
    >>> report.ok
    True
"""

from .check import (
    BOUNDS_RTOL,
    CHECKS,
    CheckReport,
    ContractError,
    check_gradients,
    check_invertible,
    check_state_dict,
    exact_jacobian,
)
from .registry import Example, example_names, example_strategy, examples, get_example, randomize_, register
from .tolerances import LOGDET_K, ROUNDTRIP_K, ErrorScales, fixed_point_allowance

__all__ = [
    "BOUNDS_RTOL",
    "CHECKS",
    "ErrorScales",
    "LOGDET_K",
    "ROUNDTRIP_K",
    "CheckReport",
    "ContractError",
    "Example",
    "check_gradients",
    "check_invertible",
    "check_state_dict",
    "exact_jacobian",
    "fixed_point_allowance",
    "example_names",
    "example_strategy",
    "examples",
    "get_example",
    "randomize_",
    "register",
]
