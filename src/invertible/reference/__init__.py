"""An independent mpmath re-implementation (50 digits) of the layers and models, for tiny sizes.

The ground truth of the numerical tests. For a torch module, :func:`reference_map` reads its parameters, buffers
and settings (converted exactly from float32/float64) and returns the per-sample map
``x -> (y, log|det dy/dx|)`` computed in mpmath from each layer's documented math: no torch arithmetic and no
code shared with the layers. Coupling networks are re-implemented too (zero-padded convolution, linear layers,
activations, Glow's ``ZeroConv2d`` and the optional ActNorm inside the net), and so are the residual blocks'
branches, with their exact Jacobians (:mod:`invertible.reference.residual`).

The analytic log-dets are then checked against a second, formula-free computation: the mpmath determinant of the
reference map's Jacobian by central differences with a step of ``1e-20`` (:func:`reference_jacobians`; about
30 correct digits). The same Jacobians give exact singular values for checking Lipschitz bounds.

Coverage is by exact type: a module whose type (or a child's type) has no registered reference makes
:func:`reference_map` raise :class:`MissingReference` listing them; :func:`register_layer_reference` and
:func:`register_net_reference` add references for new types.

Cost: pure-Python mpmath, about 1e5 scalar operations per second; keep ``D`` (entries per sample) at a few dozen
and networks at a handful of channels.

Example:
    >>> import torch, invertible
    >>> from invertible.reference import reference_forward, reference_jacobians, log_abs_det
    >>> layer = invertible.ActNorm(2, data_init=False).double()
    >>> with torch.no_grad():
    ...     _ = layer.log_scale.fill_(0.5)
    >>> x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    >>> y, logdet = reference_forward(layer, x)
    >>> float(logdet[0])
    1.0
    >>> float(log_abs_det(reference_jacobians(layer, x)[0]))
    1.0
"""

from . import layers as _layers  # noqa: F401  (registers the layer references)
from . import nets as _nets  # noqa: F401  (registers the network references)
from . import residual as _residual  # noqa: F401  (registers the residual-flow references, after nets)
from . import wrappers as _wrappers  # noqa: F401  (registers the wrapper references)
from . import spline as _spline  # noqa: F401  (registers the spline and autoregressive references)
from .arith import DPS, from_tensor, precision, to_float64
from .cases import MAX_DIMS, TINY, TinyCase, tiny_case, tiny_cases, tiny_configurations
from .compare import (
    ReferenceComparison,
    compare_with_reference,
    missing_references,
    reference_forward,
    reference_jacobians,
    reference_map,
)
from .jacobian import STEP, finite_difference_jacobian, log_abs_det, singular_values
from .layers import lu_weight, scale_function
from .registry import (
    MissingReference,
    has_reference,
    layer_reference_factory,
    logdet_wanted,
    outputs_only,
    register_layer_reference,
    register_net_reference,
)
from .residual import Jet, branch_jet, jet_factory, register_jet, spectral_sigma

__all__ = [
    "DPS",
    "Jet",
    "MAX_DIMS",
    "MissingReference",
    "ReferenceComparison",
    "STEP",
    "TINY",
    "TinyCase",
    "branch_jet",
    "compare_with_reference",
    "finite_difference_jacobian",
    "from_tensor",
    "has_reference",
    "jet_factory",
    "layer_reference_factory",
    "log_abs_det",
    "logdet_wanted",
    "lu_weight",
    "missing_references",
    "outputs_only",
    "precision",
    "reference_forward",
    "reference_jacobians",
    "reference_map",
    "register_jet",
    "register_layer_reference",
    "register_net_reference",
    "scale_function",
    "singular_values",
    "spectral_sigma",
    "tiny_case",
    "tiny_cases",
    "tiny_configurations",
    "to_float64",
]
