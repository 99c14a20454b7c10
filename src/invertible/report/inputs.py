"""The input sets a report measures, all in the flow's input space and working precision.

- the subject's own data (a run's test images; a factory's inputs), unless ``--data`` replaces it;
- ``digits``: scikit-learn's 8x8 digits (all 1,797, unit range, mapped by the subject's ``from_unit``);
- ``.npy`` files (``--data file.npy``): arrays of shape ``(n, *input_shape)`` (or ``(n, prod(input_shape))``),
  already in the flow's input space;
- noise sets of unit-range images mapped by the subject's ``from_unit``: ``gaussian`` (``0.5 + N(0, 1)``,
  unclipped), ``uniform`` (``U(0, 1)``), ``rademacher`` (``{0, 1}``) and ``constant`` (one ``U(0, 1)`` value per
  image), as the OOD study draws them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .sources import ReportError, Subject

__all__ = ["NOISE_SETS", "build_sets", "noise_set"]

#: The noise sets by name.
NOISE_SETS = ("gaussian", "uniform", "rademacher", "constant")


def noise_set(kind: str, n: int, shape: tuple[int, ...], seed: int = 0) -> Tensor:
    """``n`` unit-range noise images of ``kind`` (float64).

    Example:
        >>> x = noise_set("constant", 3, (1, 2, 2))
        >>> x.shape, bool((x.flatten(1) == x.flatten(1)[:, :1]).all())
        (torch.Size([3, 1, 2, 2]), True)
    """
    g = torch.Generator().manual_seed(seed)
    size = (n, *shape)
    if kind == "gaussian":
        return 0.5 + torch.randn(size, generator=g, dtype=torch.float64)
    if kind == "uniform":
        return torch.rand(size, generator=g, dtype=torch.float64)
    if kind == "rademacher":
        return (torch.rand(size, generator=g, dtype=torch.float64) < 0.5).double()
    if kind == "constant":
        return torch.rand((n, *[1] * len(shape)), generator=g, dtype=torch.float64).expand(size).clone()
    raise ReportError(f"unknown noise set {kind!r}; choose from {', '.join(NOISE_SETS)} (or none)")


def _npy(path: Path, shape: tuple[int, ...] | None, dtype: torch.dtype) -> Tensor:
    if not path.is_file():
        raise ReportError(f"--data {path}: no such file (give a .npy array of inputs, or 'default')")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ReportError(f"--data {path} is not a readable .npy array ({exc})") from exc
    if array.dtype.kind not in "fiub" or array.ndim < 2:
        raise ReportError(f"--data {path}: need a numeric array (n, *input_shape), got dtype {array.dtype} and shape "
                          f"{array.shape}")
    x = torch.from_numpy(np.ascontiguousarray(array)).to(dtype)
    if shape is not None and tuple(x.shape[1:]) != shape:
        if x[0].numel() == math.prod(shape):
            x = x.reshape(x.shape[0], *shape)
        else:
            raise ReportError(f"--data {path}: inputs of shape {tuple(x.shape[1:])} do not fit the flow's input "
                              f"shape {shape} (an array of shape (n, {', '.join(map(str, shape))}) is needed)")
    return x


def builtin_digits() -> Tensor:
    """scikit-learn's 1,797 8x8 digits as unit-range images ``(n, 1, 8, 8)`` (grey levels 0..16 divided by 16)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ReportError("--data digits needs scikit-learn (pip install invertible[experiments])") from exc
    return torch.from_numpy(load_digits().images).double().div(16).unsqueeze(1)


def build_sets(subject: Subject, *, data: list[str] | None = None, noise: list[str] | None = None,
               n_noise: int = 256, seed: int = 0, limit: int | None = None) -> dict[str, Tensor]:
    """The named input sets (module docstring), each of shape ``(n, *input_shape)`` in the subject's dtype.

    ``data``: ``"default"`` (the subject's own sets), ``"digits"`` and/or ``.npy`` paths (``None``: the default).
    ``noise``: names from :data:`NOISE_SETS`. ``limit``: keep at most this many inputs of each data set.
    """
    dtype = subject.dtype
    sets: dict[str, Tensor] = {}
    shape = subject.input_shape
    for item in (["default"] if data is None else data):
        if item == "default":
            sets.update({k: v.to(dtype) for k, v in subject.data.items()})
        elif item == "digits":
            if shape is not None and shape != (1, 8, 8):
                raise ReportError(f"--data digits: 8x8 grey images do not fit the flow's input shape {shape}")
            shape = (1, 8, 8)
            sets["digits"] = subject.from_unit(builtin_digits()).to(dtype)
        else:
            x = _npy(Path(item), shape, dtype)
            shape = tuple(x.shape[1:]) if shape is None else shape
            sets[Path(item).stem] = x
    if limit is not None:
        sets = {k: v[:limit] for k, v in sets.items()}
    if shape is None and (noise or not sets):
        raise ReportError(f"{subject.source}: the flow's input shape is unknown; give inputs with --data FILE.npy or "
                          "--shape C,H,W (or let the factory return (flow, inputs))")
    for kind in noise or []:
        assert shape is not None
        sets[kind] = subject.from_unit(noise_set(kind, n_noise, shape, seed)).to(dtype)
    if not sets:
        raise ReportError(f"{subject.source}: no inputs to measure; give --data FILE.npy or noise sets (--noise)")
    for name, x in sets.items():
        if x.shape[0] == 0:
            raise ReportError(f"input set {name!r} is empty")
    return sets
