"""Examples of the library's own layers and models, one module per family; importing registers them."""

from . import classifier, core, memory, models, residual  # noqa: F401
from . import autoregressive, spline  # noqa: F401  (issue 16: splines and masked autoregressive transforms)
