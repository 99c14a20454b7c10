"""The coupling networks: an alias of :mod:`invertible.layers.nets`, where they live beside the layers that use
them (kept so that ``from invertible.nets import ...`` keeps working)."""

from .layers.nets import (
    NetActNorm,
    ZeroConv2d,
    ZeroLinear,
    conv_net,
    interval_bounds,
    lipschitz_bound,
    mlp,
    net_bounds,
)

__all__ = ["NetActNorm", "ZeroConv2d", "ZeroLinear", "conv_net", "interval_bounds", "lipschitz_bound", "mlp",
           "net_bounds"]
