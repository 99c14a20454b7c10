"""Examples of the library's own layers and models, one module per family; importing registers them."""

from . import classifier, core, memory, models, residual  # noqa: F401
