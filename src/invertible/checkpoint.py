"""Safe, atomic checkpoints.

A checkpoint is one file holding named *parts*: tensors, module and optimizer state dicts, RNG states and
JSON-able metadata, wrapped in an envelope with a format marker::

    {"format": "invertible-checkpoint", "version": 1, "created": ..., "torch": ..., "parts": {...}}

Writing is atomic (temporary file in the same folder, fsync, ``os.replace``), so a process killed mid-save leaves
the previous checkpoint intact. Reading always uses ``torch.load(..., weights_only=True)``: a checkpoint is data,
never code, and files that would need code to be unpickled are refused with a :class:`CheckpointError`.

Example::

    >>> import tempfile, os, torch
    >>> path = os.path.join(tempfile.mkdtemp(), "latest.pt")
    >>> model = torch.nn.Linear(2, 2)
    >>> _ = save_checkpoint(path, model=model.state_dict(), step=3, rng=get_rng_state())
    >>> ckpt = load_checkpoint(path)
    >>> model.load_state_dict(ckpt["model"]); ckpt["step"]
    <All keys matched successfully>
    3
"""

from __future__ import annotations

import collections
import datetime as _dt
import logging
import os
import pickle
import random
import re
import secrets
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

__all__ = [
    "FORMAT",
    "VERSION",
    "CheckpointError",
    "CheckpointNotFound",
    "save_checkpoint",
    "load_checkpoint",
    "get_rng_state",
    "set_rng_state",
]

FORMAT = "invertible-checkpoint"
VERSION = 1

_log = logging.getLogger(__name__)

# Exact types that torch.load(weights_only=True) accepts without extra allowlisting. Subclasses (a str subclass
# such as torch.__version__, an IntEnum, a namedtuple) would be pickled by class name, so they are refused.
_LEAF_TYPES = frozenset(
    {type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.Size}
)
_TENSOR_TYPES = frozenset({torch.Tensor, torch.nn.Parameter})
_MAPPING_TYPES = frozenset({dict, collections.OrderedDict})
_SEQUENCE_TYPES = frozenset({list, tuple, set, frozenset})


class CheckpointError(ValueError):
    """A checkpoint could not be written or read; the message names the file and the problem."""


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist."""


# ----------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------
def _check_storable(value: Any, where: str) -> None:
    """Raise CheckpointError if ``value`` holds anything that weights-only loading would refuse."""
    kind = type(value)
    if kind in _TENSOR_TYPES or kind in _LEAF_TYPES:
        return
    if kind in _MAPPING_TYPES:
        for key, item in value.items():
            if type(key) not in (str, int):
                raise CheckpointError(
                    f"{where} has a key {key!r} of type {type(key).__qualname__}; use plain str or int keys"
                )
            _check_storable(item, f"{where}[{key!r}]")
        return
    if kind in _SEQUENCE_TYPES:
        for i, item in enumerate(value):
            _check_storable(item, f"{where}[{i}]")
        return
    hint = ""
    if isinstance(value, (str, int, float, tuple, dict, list)):
        base = next(b for b in type(value).__mro__ if b in (str, int, float, tuple, dict, list))
        hint = f"; convert it to a plain {base.__name__}"
    elif isinstance(value, torch.Tensor):
        hint = "; convert it to a plain tensor with torch.Tensor.as_subclass(t, torch.Tensor)"
    elif isinstance(value, torch.nn.Module) or hasattr(value, "state_dict"):
        hint = "; store its .state_dict() instead"
    elif isinstance(value, np.ndarray):
        hint = "; convert it with torch.from_numpy()"
    elif isinstance(value, np.generic):
        hint = "; convert it with .item()"
    raise CheckpointError(
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which a checkpoint cannot hold "
        f"(only tensors, numbers, strings, and dicts/lists/tuples of them){hint}"
    )


def _fsync_dir(folder: Path) -> None:
    """Flush a directory entry to disk where the platform allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | os.PathLike[str], **parts: Any) -> Path:
    """Write ``parts`` to ``path`` atomically, with the format marker; return the path.

    Every part must be storable without pickling code (tensors, numbers, strings, and dicts/lists/tuples of them);
    anything else raises :class:`CheckpointError` before the file is touched.
    """
    path = Path(path)
    for name, value in parts.items():
        _check_storable(value, f"checkpoint part {name!r}")
    folder = path.parent
    if not folder.is_dir():
        raise CheckpointError(f"cannot write checkpoint {path}: folder {folder} does not exist")
    envelope = {
        "format": FORMAT,
        "version": VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": str(torch.__version__),
        "parts": parts,
    }
    tmp_name = folder / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    # os.open with mode 0o666 lets the umask decide the permissions, as for an ordinary file.
    fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(envelope, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(folder)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------------
def _describe(obj: Any) -> str:
    """Say briefly what a foreign object is (type and top-level keys)."""
    if isinstance(obj, Mapping):
        keys = [repr(k) for k in list(obj.keys())[:12]]
        more = ", ..." if len(obj) > 12 else ""
        return f"a {type(obj).__name__} with top-level keys [{', '.join(keys)}{more}]"
    if isinstance(obj, torch.Tensor):
        return f"a tensor of shape {tuple(obj.shape)}"
    return f"a {type(obj).__name__}"


def _unsafe_globals(path: Path) -> list[str]:
    """List the code objects a torch zip checkpoint refers to (scanning only, never executing)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001 - best effort diagnostics only
        return []


def _load_error(path: Path, exc: BaseException) -> CheckpointError:
    """Turn an exception raised by torch.load into a clear CheckpointError."""
    message = str(exc)
    with open(path, "rb") as handle:
        head = handle.read(4)
    is_zip = head.startswith(b"PK\x03\x04")
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in message:
        names = _unsafe_globals(path) if is_zip else []
        if not names:
            names = re.findall(r"Unsupported global: GLOBAL ([\w.]+)", message)
        if names:
            return CheckpointError(
                f"refusing to load {path}: it needs unpickling of code ({', '.join(sorted(set(names)))}), and "
                "checkpoints are loaded with weights_only=True, which refuses to execute code. If you trust "
                "the file, convert it once to a state dict in a separate, trusted step"
            )
        if not is_zip:
            return CheckpointError(
                f"cannot load {path}: it is not a torch checkpoint (it looks like a plain Python pickle or "
                "another format) and weights-only loading refuses it"
            )
        return CheckpointError(f"cannot load {path}: weights-only loading refused it ({message.splitlines()[-1]})")
    if isinstance(exc, (RuntimeError, EOFError, zipfile.BadZipFile)) or is_zip:
        return CheckpointError(
            f"cannot load {path}: the file is truncated or corrupted ({type(exc).__name__}: "
            f"{message.split('. ')[0] if message else 'unexpected end of file'})"
        )
    return CheckpointError(
        f"cannot load {path}: not a torch checkpoint of any known layout ({type(exc).__name__}: {message[:200]})"
    )


def load_checkpoint(
    path: str | os.PathLike[str], *, map_location: str | torch.device | Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` and return its parts as a dict.

    Loading uses ``weights_only=True``; missing, empty, truncated, foreign and code-carrying files and files from a
    newer format version raise :class:`CheckpointError` naming the file and the problem.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFound(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"cannot load {path}: the file is empty (0 bytes), probably an interrupted copy")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - classified and re-raised below
        raise _load_error(path, exc) from exc
    if not isinstance(obj, Mapping) or obj.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not an invertible checkpoint (no format marker {FORMAT!r}); found {_describe(obj)}"
        )
    version = obj.get("version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path} has an invalid format version {version!r}")
    if version > VERSION:
        raise CheckpointError(
            f"{path} has format version {version}, newer than this library reads (up to {VERSION}); "
            "upgrade invertible to load it"
        )
    parts = obj.get("parts")
    if not isinstance(parts, Mapping):
        raise CheckpointError(f"{path} is damaged: its 'parts' entry is {_describe(parts)}, not a dict")
    return dict(parts)


# ----------------------------------------------------------------------------------------------------------------
# RNG states as plain data
# ----------------------------------------------------------------------------------------------------------------
def get_rng_state() -> dict[str, Any]:
    """Capture the python, numpy, torch CPU and (if initialised) CUDA RNG states as checkpoint-safe data."""
    py_version, py_internal, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(py_internal, dtype=torch.int64),
            "gauss_next": py_gauss,
        },
        "numpy": {
            "kind": str(np_kind),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore RNG states captured by :func:`get_rng_state` (CUDA states are skipped, with a warning, if absent)."""
    try:
        py = state["python"]
        random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss_next"]))
        npst = state["numpy"]
        np.random.set_state(
            (
                npst["kind"],
                npst["keys"].numpy().astype(np.uint32),
                int(npst["pos"]),
                int(npst["has_gauss"]),
                float(npst["cached_gaussian"]),
            )
        )
        torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    except (KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"RNG state is incomplete or malformed ({type(exc).__name__}: {exc})") from exc
    cuda = state.get("cuda")
    if cuda:
        if not torch.cuda.is_available():
            _log.warning("checkpoint holds CUDA RNG states but CUDA is not available; they were not restored")
            return
        count = torch.cuda.device_count()
        if count != len(cuda):
            _log.warning("checkpoint holds %d CUDA RNG states for %d visible devices", len(cuda), count)
        for index, s in enumerate(cuda[:count]):
            torch.cuda.set_rng_state(s, device=index)
