"""Reading torch files that hold pickled objects of packages we do not have, without running any of their code.

A checkpoint such as residual-flows' ``cifar10_resflow_16-16-16.pth`` is a pickle: besides tensors it holds an
``argparse.Namespace`` and objects of classes from a 2019 package ``lib`` that no longer exists (the EMA helper and,
inside it, the whole model object). ``torch.load`` refuses it with ``weights_only=True`` (unknown globals; in the
legacy format also the ``('module', cls, file, source)`` records that torch wrote for every ``nn.Module`` class),
and plain unpickling would import, and run, whatever the file names.

How this module reads such a file (:func:`read_torch_file`):

1. It hands ``torch.load`` (``weights_only=False``, so that the legacy format's module records are understood) a
   ``pickle_module`` whose ``Unpickler`` resolves globals through an explicit allow-list: torch's tensor and
   parameter rebuild functions, dtypes, ``torch.Size``/``torch.device``, ``collections.OrderedDict``,
   ``argparse.Namespace``, numpy scalars, ``set``/``frozenset``/``complex``/``bytearray`` and ``_codecs.encode``.
   Storages are resolved by torch itself (``StorageType``). Nothing is imported.
2. Every other global, whatever it names (``lib.utils.ExponentialMovingAverage``, ``torch.nn.modules.container.
   ModuleList``, but equally ``os.system`` or ``builtins.eval``), becomes an inert :class:`Placeholder` subclass
   carrying the original module and name. Calling it (pickle's REDUCE/NEWOBJ) only records the arguments;
   restoring its state (BUILD) only stores the state in ``__dict__``. So the only code that runs is the allow-listed
   functions above and this module's own.
3. The names that became placeholders are reported, so callers can check that a file holds what they expect.

The placeholders make the object tree browsable: ``ckpt["ema"].shadow_params`` is the dict of tensors it was, and
``ckpt["ema"].module`` a placeholder whose ``__dict__`` holds the original module's ``_parameters`` etc.

A pickle can still exhaust memory or build deep structures; read only files whose source you trust that much.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import collections
import io
import os
import pickle
import threading
import warnings
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import torch

__all__ = ["Placeholder", "SafeLoad", "read_torch_file", "restricted_pickle_module"]


class Placeholder:
    """Inert stand-in for an object whose class was not resolved (see the module docstring).

    Attributes (class level): ``pickled_module`` and ``pickled_name``, where the pickle said the class lives.
    Instances keep the constructor arguments in ``_args`` and whatever state the pickle restored in their
    ``__dict__`` (or in ``_state`` if it was not a dict); items and list elements a pickle adds are kept in
    ``_items`` and ``_list``.
    """

    pickled_module: ClassVar[str] = ""
    pickled_name: ClassVar[str] = ""
    dump_patches: ClassVar[bool] = False  # read by torch's legacy loader when it compares module sources

    def __new__(cls, *args: Any, **kwargs: Any) -> "Placeholder":
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_args"] = args
        if kwargs:
            self.__dict__["_kwargs"] = kwargs

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            state, slots = state
            if isinstance(slots, dict):
                self.__dict__.update(slots)
        if isinstance(state, dict):
            self.__dict__.update(state)
        elif state is not None:
            self.__dict__["_state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("_items", {})[key] = value

    def append(self, value: Any) -> None:
        self.__dict__.setdefault("_list", []).append(value)

    def extend(self, values: Any) -> None:
        self.__dict__.setdefault("_list", []).extend(values)

    def __repr__(self) -> str:
        return f"<placeholder for {self.pickled_module}.{self.pickled_name}>"


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("argparse", "Namespace"): argparse.Namespace,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
        ("torch._tensor", "_rebuild_from_type_v2"): torch._tensor._rebuild_from_type_v2,
        ("_codecs", "encode"): __import__("_codecs").encode,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "complex"): complex,
        ("builtins", "bytearray"): bytearray,
    }
    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
                 "_rebuild_parameter_with_state"):
        if hasattr(torch._utils, name):
            allowed[("torch._utils", name)] = getattr(torch._utils, name)
    for name in dir(torch):
        value = getattr(torch, name, None)
        if isinstance(value, torch.dtype):
            allowed[("torch", name)] = value
    try:  # numpy scalars (e.g. a float64 metric) pickle as scalar(dtype, bytes)
        import numpy as np

        try:
            from numpy._core.multiarray import scalar
        except ImportError:  # numpy < 2
            from numpy.core.multiarray import scalar  # type: ignore[no-redef]
        for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            allowed[(module, "scalar")] = scalar
        allowed[("numpy", "dtype")] = np.dtype
    except ImportError:  # pragma: no cover - numpy is a dependency of torch here
        pass
    return allowed


_ALLOWED = _allowed_globals()
_PLACEHOLDERS: dict[tuple[str, str], type[Placeholder]] = {}


def _placeholder(module: str, name: str) -> type[Placeholder]:
    key = (module, name)
    if key not in _PLACEHOLDERS:
        cls = type(name.rpartition(".")[2] or "Placeholder", (Placeholder,),
                   {"pickled_module": module, "pickled_name": name, "__module__": __name__})
        _PLACEHOLDERS[key] = cls
    return _PLACEHOLDERS[key]


class _RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only allow-listed globals; every other one becomes a placeholder."""

    def find_class(self, module: str, name: str) -> Any:
        # protocol-2 files name Python 2 modules (``__builtin__``); map them as pickle's own find_class does
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        _found.add(f"{module}.{name}")
        return _placeholder(module, name)


_found: set[str] = set()  # the placeholders of the load in progress (loads are serialised by _lock)
_lock = threading.Lock()


class _PickleModule:
    """The ``pickle_module`` handed to ``torch.load``: only ``Unpickler``, ``load`` and ``loads``."""

    Unpickler = _RestrictedUnpickler
    UnpicklingError = pickle.UnpicklingError

    @staticmethod
    def load(file: BinaryIO, **kwargs: Any) -> Any:
        return _RestrictedUnpickler(file, **kwargs).load()

    @staticmethod
    def loads(data: bytes, **kwargs: Any) -> Any:
        return _RestrictedUnpickler(io.BytesIO(data), **kwargs).load()


def restricted_pickle_module() -> Any:
    """The restricted ``pickle_module`` for ``torch.load(..., weights_only=False, pickle_module=...)``."""
    return _PickleModule


class SafeLoad:
    """What :func:`read_torch_file` found: the object and the globals that were replaced by placeholders.

    Attributes:
        obj: the unpickled object (tensors, containers, :class:`Placeholder` instances).
        placeholders: sorted ``"module.name"`` of every global that became a placeholder.
        weights_only: whether plain ``torch.load(weights_only=True)`` sufficed.
    """

    def __init__(self, obj: Any, placeholders: list[str], weights_only: bool) -> None:
        self.obj, self.placeholders, self.weights_only = obj, placeholders, weights_only


def _unreadable(path: object, exc: BaseException) -> ValueError:
    detail = str(exc).strip().splitlines()
    return ValueError(
        f"{path} cannot be read as a torch file ({type(exc).__name__}{': ' + detail[0] if detail else ''}): it is "
        "truncated or damaged (an interrupted download or copy: fetch it again) or not a file written by torch.save")


def read_torch_file(path: str | os.PathLike[str] | BinaryIO) -> SafeLoad:
    """Read a ``torch.save`` file (zip or legacy format) without executing code from it.

    First ``torch.load(weights_only=True)``; if that refuses the file, the restricted unpickler described in the
    module docstring. Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file torch cannot
    read at all (empty, truncated, damaged, not a torch file), with a message that says which.

    Example:
        >>> import io, torch
        >>> buffer = io.BytesIO(); torch.save({"w": torch.ones(2)}, buffer); _ = buffer.seek(0)
        >>> read_torch_file(buffer).obj["w"]
        tensor([1., 1.])
    """
    if isinstance(path, (str, os.PathLike)) and not Path(path).is_file():
        what = "a folder, not a file" if Path(path).is_dir() else "no such file"
        raise FileNotFoundError(f"{path}: {what}; pass the path of the torch file")
    opened = open(path, "rb") if isinstance(path, (str, os.PathLike)) else path
    try:
        start = opened.tell()
        if not opened.read(1):
            raise ValueError(f"{path} is empty (0 bytes), probably an interrupted download or copy; fetch it again")
        opened.seek(start)
        try:
            return SafeLoad(torch.load(opened, map_location="cpu", weights_only=True), [], True)
        except pickle.UnpicklingError:
            pass
        except RuntimeError as exc:  # the legacy format refuses weights_only with a RuntimeError
            if "weights_only" not in str(exc) and "Weights only" not in str(exc):
                raise _unreadable(path, exc) from exc
        except Exception as exc:  # noqa: BLE001 - EOFError, OSError, ...: the file is damaged, say so
            raise _unreadable(path, exc) from exc
        opened.seek(start)
        with _lock, warnings.catch_warnings():
            _found.clear()
            # torch's legacy loader compares the module sources stored in the file with the (absent) classes
            warnings.filterwarnings("ignore", message=".*(source code|Couldn't retrieve).*")
            warnings.filterwarnings("ignore", category=torch.serialization.SourceChangeWarning)
            try:
                obj = torch.load(opened, map_location="cpu", weights_only=False,
                                 pickle_module=restricted_pickle_module())
            except Exception as exc:  # noqa: BLE001 - whatever the damage, the answer is: cannot be read
                raise _unreadable(path, exc) from exc
            return SafeLoad(obj, sorted(_found), False)
    finally:
        if opened is not path:
            opened.close()
