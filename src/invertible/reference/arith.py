"""Arithmetic on numpy object arrays of mpmath numbers: exact conversion, elementwise functions, linear maps.

Everything here is written from the textbook definitions (no torch arithmetic is involved): a tensor becomes an
object array of ``mpf`` that holds exactly the same binary values (float32 and float64 are exact in 50 digits),
and every operation runs in mpmath at the working precision set by :func:`precision`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import mpmath
import numpy as np
import torch
from mpmath import mp, mpf
from torch import Tensor

__all__ = [
    "DPS",
    "MPArray",
    "conv2d",
    "elementwise",
    "from_tensor",
    "linear",
    "matvec",
    "log",
    "exp",
    "norm",
    "per_channel",
    "precision",
    "sigmoid",
    "to_float64",
]

#: Decimal digits of the reference computations.
DPS = 50

#: A numpy array of dtype ``object`` whose entries are ``mpmath.mpf``.
MPArray = np.ndarray


@contextmanager
def precision(dps: int = DPS) -> Iterator[None]:
    """Run the block at ``dps`` decimal digits (mpmath's global context; restored afterwards)."""
    with mp.workdps(dps):
        yield


def from_tensor(t: Tensor) -> MPArray:
    """The exact values of ``t`` (any float dtype up to float64) as an object array of ``mpf``."""
    values = t.detach().cpu().to(torch.float64).numpy()
    out = np.empty(values.shape, dtype=object)
    flat = out.reshape(-1)
    for i, v in enumerate(values.reshape(-1)):
        flat[i] = mpf(float(v))  # a Python float converts to mpf without rounding
    return out


def to_float64(a: MPArray) -> np.ndarray:
    """Round an object array of ``mpf`` to float64 (nearest)."""
    return np.array([float(v) for v in np.asarray(a).reshape(-1)], dtype=np.float64).reshape(np.shape(a))


def elementwise(fn: Callable[[mpf], mpf]) -> Callable[[MPArray], MPArray]:
    """Lift a scalar mpmath function to object arrays."""
    lifted = np.frompyfunc(fn, 1, 1)
    return lambda a: np.asarray(lifted(a), dtype=object)


def _sigmoid(v: mpf) -> mpf:
    return 1 / (1 + mp.exp(-v))


exp = elementwise(lambda v: mp.exp(v))
log = elementwise(lambda v: mp.log(v))
sigmoid = elementwise(_sigmoid)


def per_channel(values: MPArray, ndim: int) -> MPArray:
    """Reshape per-channel values ``(C,)`` to broadcast against one sample of rank ``ndim`` (channel first)."""
    return values.reshape((-1,) + (1,) * (ndim - 1))


def matvec(matrix: MPArray, x: MPArray) -> MPArray:
    """``matrix @ x`` for a 2-D ``matrix`` and a vector ``x``; each entry is one correctly rounded dot product."""
    out = np.empty(matrix.shape[0], dtype=object)
    for i, row in enumerate(matrix):
        out[i] = mp.fdot(row, x)
    return out


def linear(x: MPArray, weight: MPArray, bias: MPArray | None) -> MPArray:
    """``weight @ x + bias`` for one flat sample ``x`` of shape ``(in,)``."""
    y = matvec(weight, x)
    return y if bias is None else y + bias


def conv2d(x: MPArray, weight: MPArray, bias: MPArray | None, padding: tuple[int, int],
           circular: bool = False) -> MPArray:
    """Cross-correlation with zero padding and stride 1 (what ``nn.Conv2d`` computes) of one sample.

    ``y[o, i, j] = bias[o] + sum_{c, a, b} weight[o, c, a, b] * xpad[c, i + a, j + b]`` with ``x`` of shape
    ``(C_in, H, W)`` and ``xpad`` the input padded by ``padding`` zeros on each side. The terms that fall on the
    padding are zero, so only the kernel taps ``(a, b)`` that land inside ``x`` are summed (at the tiny sizes of
    the reference most of a 3x3 window is padding). With ``circular`` the padding repeats the opposite edge
    (``padding_mode="circular"``): ``xpad[c, i, j] = x[c, (i - ph) mod H, (j - pw) mod W]``.
    """
    c_in, height, width = x.shape
    c_out, c_w, kh, kw = weight.shape
    if c_w != c_in:
        raise ValueError(f"conv2d: the weight expects {c_w} input channels, the input has {c_in}")
    ph, pw = padding
    out_h, out_w = height + 2 * ph - kh + 1, width + 2 * pw - kw + 1
    y = np.empty((c_out, out_h, out_w), dtype=object)
    for i in range(out_h):
        for j in range(out_w):
            taps = [(a, b) for a in range(kh) for b in range(kw)
                    if circular or (0 <= i + a - ph < height and 0 <= j + b - pw < width)]
            inputs = np.concatenate([x[:, (i + a - ph) % height, (j + b - pw) % width] for a, b in taps])
            weights = np.concatenate([weight[:, :, a, b] for a, b in taps], axis=1)
            y[:, i, j] = matvec(weights, inputs)
    return y if bias is None else y + per_channel(bias, 3)


def norm(a: MPArray) -> mpf:
    """Euclidean norm of all entries."""
    return mpmath.sqrt(mpmath.fsum(v * v for v in np.asarray(a).reshape(-1)))
