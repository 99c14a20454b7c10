"""Run folder names that say the whole configuration.

A run without ``--out`` goes to ``<--save-dir>/<name>``: the values of the study's leading flags (e.g. the data
set), the preset if it is not the default one, then every flag whose resolved value differs from the study's default
run with the same leading flags and preset, as ``flag=value`` (``flag`` alone for a switch turned on, ``no-flag``
for one turned off). Two runs whose results can differ never share a name; a name longer than
:data:`MAX_LENGTH` keeps its start and ends in a short hash of all the differences.

Example::

    >>> import argparse
    >>> defaults = argparse.Namespace(dataset="digits", lr=1e-3, epochs=10, zero_init=False, out=None)
    >>> args = argparse.Namespace(dataset="digits", lr=1e-4, epochs=10, zero_init=True, out=None)
    >>> run_name(args, defaults, ignored=frozenset({"out"}), leading=("dataset",))
    'digits_lr=0.0001_zero-init'
    >>> run_name(defaults, defaults, ignored=frozenset({"out"}), leading=("dataset",))
    'digits'
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

__all__ = ["MAX_LENGTH", "differences", "run_name"]

#: Longest folder name before the differences are cut short and hashed.
MAX_LENGTH = 100
_UNSAFE = re.compile(r"[^A-Za-z0-9._,+=-]+")


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, os.PathLike):  # the last two parts say enough: runs/flows2d/cpu -> flows2d-cpu
        return "-".join(Path(value).parts[-2:])
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    return str(value)


def differences(args: argparse.Namespace, defaults: argparse.Namespace, ignored: frozenset[str]
                ) -> list[tuple[str, Any]]:
    """``(key, value)`` of every argument of ``args`` that differs from ``defaults``, in ``args``'s order."""
    missing = object()
    return [(key, value) for key, value in vars(args).items()
            if key not in ignored and getattr(defaults, key, missing) != value]


def run_name(args: argparse.Namespace, defaults: argparse.Namespace, ignored: frozenset[str],
             leading: Sequence[str] = (), default_preset: str | None = None) -> str:
    """The folder name of the run ``args`` (see the module docstring); ``default`` when nothing stands out."""
    parts = [_text(getattr(args, key)) for key in leading]
    preset = getattr(args, "preset", None)
    if preset is not None and preset != default_preset:
        parts.append(str(preset))
    diff = differences(args, defaults, ignored | frozenset(leading) | {"preset"})
    for key, value in diff:
        flag = key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif value is False:
            parts.append(f"no-{flag}")
        else:
            parts.append(f"{flag}={'none' if value is None else _text(value)}")
    name = _UNSAFE.sub("-", "_".join(p for p in parts if p)) or "default"
    if len(name) > MAX_LENGTH:
        digest = hashlib.sha1(json.dumps([[k, _text(v)] for k, v in diff]).encode()).hexdigest()[:8]
        name = f"{name[:MAX_LENGTH - 10].rstrip('_=,-')}_{digest}"
    return name
