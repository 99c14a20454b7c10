"""Readers for the on-disk formats of the image data sets: idx (MNIST family), CIFAR python batches, SVHN .mat.

Each reader checks what it reads and raises :class:`DataFormatError` naming the file and the problem. No reader
executes code from a file: CIFAR batches are pickles, so they are read with an unpickler that allows only the few
numpy constructors those files use.
"""

from __future__ import annotations

import codecs
import gzip
import math
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DataFormatError", "read_idx", "read_cifar_batch", "read_svhn_mat", "IDX_DTYPES"]

#: idx type codes (third magic byte) and the big-endian numpy dtypes they denote.
IDX_DTYPES: dict[int, str] = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataFormatError(ValueError):
    """A data file exists but does not hold what its format promises."""


def _read_bytes(path: Path) -> bytes:
    """Read a file, gunzipping it when it starts with the gzip magic (whatever its name)."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataFormatError(f"{path}: damaged gzip data ({exc})") from exc
    return raw


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (optionally gzipped) into a native-endian numpy array of the stored shape."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataFormatError(
            f"{path} is not an idx file: it starts with bytes {raw[:4].hex(' ') or '(none)'}, expected "
            "00 00 <type code 08/09/0b/0c/0d/0e> <number of dimensions>"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFormatError(f"{path}: idx header for {ndim} dimensions is cut short")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    expected = math.prod(dims) * dtype.itemsize
    found = len(raw) - header
    if found != expected:
        raise DataFormatError(
            f"{path}: idx header says shape {dims} ({expected} bytes of data) but the file holds {found} bytes"
            + (" (truncated)" if found < expected else "")
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


# ----------------------------------------------------------------------------------------------------------------
# CIFAR python batches
# ----------------------------------------------------------------------------------------------------------------
# The constructors numpy's pickles call, found from numpy itself so that numpy 1 (numpy.core) and numpy 2
# (numpy._core) names both resolve.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_SCALAR = np.float64(0).__reduce__()[0]
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]
_ALLOWED: dict[tuple[str, str], Any] = {}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_module, "_reconstruct")] = _RECONSTRUCT
    _ALLOWED[(_module, "scalar")] = _SCALAR
for _module in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_module, "_frombuffer")] = _FROMBUFFER
_ALLOWED[("numpy", "ndarray")] = np.ndarray
_ALLOWED[("numpy", "dtype")] = np.dtype
_ALLOWED[("_codecs", "encode")] = codecs.encode  # how protocol-2 pickles written by python 3 store bytes


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that builds only numpy arrays, numpy scalars and plain python data."""

    def __init__(self, handle: Any, path: Path) -> None:
        super().__init__(handle, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DataFormatError(
                f"{self._path}: refusing to unpickle {module}.{name}; CIFAR batches hold only numpy arrays and "
                "lists, so this file is not a CIFAR batch (and loading it could execute code)"
            ) from None


def _plain_key(key: Any) -> Any:
    return key.decode("latin1") if isinstance(key, bytes) else key


def read_cifar_batch(path: str | Path, *, label_key: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR python batch; return images (N, 3, 32, 32) uint8 and labels (N,) int64."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            obj = _RestrictedUnpickler(handle, path).load()
    except DataFormatError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise DataFormatError(f"{path}: not a readable CIFAR batch ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise DataFormatError(f"{path}: a CIFAR batch is a dict, found a {type(obj).__name__}")
    obj = {_plain_key(k): v for k, v in obj.items()}
    if "data" not in obj or label_key not in obj:
        raise DataFormatError(f"{path}: a CIFAR batch has keys 'data' and {label_key!r}, found {sorted(obj)}")
    data = np.asarray(obj["data"])
    labels = np.asarray(obj[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataFormatError(
            f"{path}: 'data' should be uint8 of shape (N, 3072), found {data.dtype} {data.shape}"
        )
    if labels.ndim != 1 or labels.shape[0] != data.shape[0] or not np.issubdtype(labels.dtype, np.integer):
        raise DataFormatError(
            f"{path}: {label_key!r} should be {data.shape[0]} integers, found {labels.dtype} {labels.shape}"
        )
    # Rows hold the red plane, then green, then blue, each 32x32 in row-major order.
    return data.reshape(-1, 3, 32, 32).copy(), labels.astype(np.int64)


# ----------------------------------------------------------------------------------------------------------------
# SVHN .mat files
# ----------------------------------------------------------------------------------------------------------------
def read_svhn_mat(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an SVHN ``*_32x32.mat`` file; return images (N, 3, 32, 32) uint8 and labels 0..9 (10 means 0)."""
    import scipy.io

    path = Path(path)
    try:
        mat = scipy.io.loadmat(path)
    except NotImplementedError as exc:  # MATLAB v7.3 (HDF5) files
        raise DataFormatError(f"{path}: unsupported MATLAB version ({exc})") from exc
    except (ValueError, TypeError, OSError, EOFError) as exc:
        raise DataFormatError(f"{path}: not a readable MATLAB file ({type(exc).__name__}: {exc})") from exc
    if "X" not in mat or "y" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataFormatError(f"{path}: an SVHN file holds variables 'X' and 'y', found {found}")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DataFormatError(f"{path}: 'X' should have shape (32, 32, 3, N), found {x.shape}")
    if y.shape[0] != x.shape[3]:
        raise DataFormatError(f"{path}: {x.shape[3]} images but {y.shape[0]} labels")
    if y.size and (y.min() < 1 or y.max() > 10):
        raise DataFormatError(f"{path}: SVHN labels run 1..10, found {y.min()}..{y.max()}")
    if x.dtype != np.uint8 and x.size and (x.min() < 0 or x.max() > 255 or not np.all(x == np.round(x))):
        raise DataFormatError(f"{path}: 'X' should hold 8-bit pixel values, found {x.dtype} outside 0..255")
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1)).astype(np.uint8)
    labels = y.astype(np.int64) % 10
    return images, labels
