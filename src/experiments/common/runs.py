"""Run folders: config, CSV logs, metrics and checkpoints of one experiment run.

Layout of ``--out``::

    config.json          arguments, versions (python, torch, numpy), git commit, command line
    <name>.csv           CSV logs, flushed after every row
    metrics.json         final (or current) scalar results
    checkpoints/latest.pt  written atomically with invertible.checkpoint
    plots/               figures
    .lock                held while a process writes into the folder (:mod:`experiments.common.lock`)

:func:`open_run` refuses to reuse an existing run folder unless ``overwrite`` or ``resume`` is given, and refuses
both while another live process holds the folder's lock (a lock left by a killed process is taken over). On resume it
checks that the stored config matches (apart from keys such as ``device`` that do not change results), loads
``checkpoints/latest.pt`` and cuts every CSV back to the rows it had when that checkpoint was written, so a resumed
run's logs equal an uninterrupted run's. Only the main process (rank 0) writes.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import io
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch

from invertible.checkpoint import load_checkpoint, save_checkpoint

from . import distributed
from .lock import LOCK_NAME, RunLock, RunLocked

__all__ = [
    "NON_RESULT_KEYS",
    "OutNotWritable",
    "RunExists",
    "RunLocked",
    "RunNotFound",
    "ConfigMismatch",
    "Run",
    "CsvLog",
    "open_run",
    "read_csv",
    "truncate_csv",
    "to_jsonable",
    "environment_info",
    "check_folder",
    "check_writable",
    "write_json",
]

_log = logging.getLogger(__name__)

#: Config keys that may differ on ``--resume`` because they do not change results.
NON_RESULT_KEYS = frozenset({"out", "resume", "overwrite", "data_dir", "download", "device", "progress", "threads",
                             "save_dir", "preset"})
_RUN_PART = "_run"


class RunExists(FileExistsError):
    """The output folder already holds a run (or other files) and neither overwrite nor resume was asked."""


class RunNotFound(FileNotFoundError):
    """``--resume`` was given for a folder that holds no run."""


class ConfigMismatch(ValueError):
    """``--resume`` was given with arguments that change results."""


class OutNotWritable(PermissionError):
    """The run folder cannot be created or written (a file in the way, no permission, a read-only disk)."""


def check_writable(out: str | os.PathLike[str]) -> None:
    """Raise :class:`OutNotWritable` unless ``out`` can be a run folder: the folder itself or its nearest existing
    ancestor must be a folder this process can create files in (tried with a temporary file, which root's
    permission bits would not show). Nothing is left behind."""
    path = Path(out)
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        what = "is a file" if existing == path else f"lies below the file {existing}"
        raise OutNotWritable(f"--out {path} {what}; choose a folder path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=existing)
    except OSError as exc:
        raise OutNotWritable(f"--out {path}: cannot create files in {existing} ({exc.strerror or exc}); choose "
                             "another --out") from exc
    os.close(fd)
    os.unlink(probe)


# ----------------------------------------------------------------------------------------------------------------
# JSON and environment
# ----------------------------------------------------------------------------------------------------------------
def to_jsonable(value: Any) -> Any:
    """Convert tensors, numpy values, paths and non-finite floats (as "NaN"/"Infinity") into strict JSON data."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = value.item() if value.dim() == 0 else value.tolist()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    raise TypeError(f"cannot store a {type(value).__name__} in JSON: {value!r}")


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as strict JSON (see :func:`to_jsonable`) atomically (temp file + os.replace)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def _git_info() -> dict[str, Any] | None:
    """Commit and dirtiness of the repository holding this package, or None outside git."""
    root = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())}


def environment_info() -> dict[str, Any]:
    """Versions of python, torch and numpy, the platform, and the git commit (if any)."""
    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cuda": torch.version.cuda,
        "git": _git_info(),
    }


# ----------------------------------------------------------------------------------------------------------------
# CSV logs
# ----------------------------------------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def read_csv(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Read a CSV log as a list of row dicts (strings), skipping a cut-off last line."""
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return []
        return [dict(zip(header, row)) for row in reader if len(row) == len(header)]


def truncate_csv(path: str | os.PathLike[str], rows: int) -> None:
    """Keep the header and the first ``rows`` complete rows of a CSV file (atomic rewrite)."""
    path = Path(path)
    with open(path, newline="") as handle:
        lines = handle.read().splitlines(keepends=True)
    complete = [line for line in lines if line.endswith("\n")]
    kept = complete[: rows + 1]
    if len(kept) < rows + 1:
        raise ValueError(f"{path} has {max(len(complete) - 1, 0)} complete rows, fewer than the {rows} to keep")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)


class CsvLog:
    """Append-only CSV log with a fixed header; every row is flushed to the OS at once."""

    def __init__(self, path: str | os.PathLike[str], fields: Iterable[str], *, enabled: bool = True) -> None:
        self.path = Path(path)
        self.fields = list(fields)
        self.enabled = enabled
        self.rows = 0
        self._handle: io.TextIOWrapper | None = None
        if not enabled:
            return
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, newline="") as handle:
                header = next(csv.reader(handle), [])
            if header != self.fields:
                raise ValueError(f"{self.path} has columns {header}, but this run logs {self.fields}")
            self.rows = len(read_csv(self.path))
            self._handle = open(self.path, "a", newline="")
        else:
            self._handle = open(self.path, "w", newline="")
            self._handle.write(",".join(self.fields) + "\n")
            self._handle.flush()

    def log(self, **row: Any) -> None:
        """Append one row; unknown columns are an error, missing ones are left empty."""
        unknown = set(row) - set(self.fields)
        if unknown:
            raise KeyError(f"{self.path.name}: unknown columns {sorted(unknown)}; columns are {self.fields}")
        if not self.enabled:
            return
        assert self._handle is not None
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow([_cell(row.get(f)) for f in self.fields])
        self._handle.write(buffer.getvalue())
        self._handle.flush()
        self.rows += 1

    def close(self) -> None:
        """Close the file."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


# ----------------------------------------------------------------------------------------------------------------
# Run folder
# ----------------------------------------------------------------------------------------------------------------
class Run:
    """One run folder: config, CSV logs, metrics and checkpoints (writes happen on the main process only).

    A study's ``run(run, args)`` also finds here what the runner prepared for it: ``device`` (the torch device) and
    ``inputs`` (what the study's ``prepare`` hook returned before the folder was opened, or ``None``).
    """

    def __init__(self, path: Path, config: dict[str, Any], *, resumed: bool, main: bool,
                 lock: RunLock | None = None) -> None:
        self.path = path
        self.config = config
        self.resumed = resumed
        self.main = main
        self.metrics: dict[str, Any] = {}
        self.resume_state: dict[str, Any] | None = None  # checkpoint parts loaded on resume
        self.device = torch.device("cpu")
        self.inputs: Any = None
        self._logs: dict[str, CsvLog] = {}
        self._lock = lock

    @property
    def checkpoint_dir(self) -> Path:
        """Folder of the checkpoints."""
        return self.path / "checkpoints"

    @property
    def plot_dir(self) -> Path:
        """Folder for figures (created on first use)."""
        folder = self.path / "plots"
        if self.main:
            folder.mkdir(exist_ok=True)
        return folder

    def csv(self, name: str, fields: Iterable[str]) -> CsvLog:
        """The CSV log ``<name>.csv`` with the given columns (opened once, appended to on resume)."""
        if name not in self._logs:
            self._logs[name] = CsvLog(self.path / f"{name}.csv", fields, enabled=self.main)
        return self._logs[name]

    def update_metrics(self, **values: Any) -> None:
        """Merge ``values`` into metrics.json (rewritten atomically)."""
        self.metrics.update(to_jsonable(values))
        if self.main:
            write_json(self.path / "metrics.json", self.metrics)

    def save_checkpoint(self, name: str = "latest", **parts: Any) -> Path | None:
        """Save ``checkpoints/<name>.pt`` atomically with the CSV row counts and metrics; main process only."""
        if _RUN_PART in parts:
            raise ValueError(f"checkpoint part name {_RUN_PART!r} is reserved")
        if not self.main:
            return None
        bookkeeping = {"csv_rows": {n: log.rows for n, log in self._logs.items()},
                       "metrics": json.dumps(self.metrics)}
        self.checkpoint_dir.mkdir(exist_ok=True)
        return save_checkpoint(self.checkpoint_dir / f"{name}.pt", **parts, **{_RUN_PART: bookkeeping})

    def load_checkpoint(self, name: str = "latest", map_location: Any = None) -> dict[str, Any] | None:
        """Parts of ``checkpoints/<name>.pt`` (without the run's bookkeeping), or None if it does not exist."""
        path = self.checkpoint_dir / f"{name}.pt"
        if not path.exists():
            return None
        parts = load_checkpoint(path, map_location=map_location)
        parts.pop(_RUN_PART, None)
        return parts

    def close(self) -> None:
        """Close all CSV logs and release the folder's lock."""
        for log in self._logs.values():
            log.close()
        if self._lock is not None:
            self._lock.release()

    def _rewind(self, check: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Load latest.pt, let ``check`` refuse it, and cut CSV logs and metrics back to the state recorded in it."""
        path = self.checkpoint_dir / "latest.pt"
        parts = load_checkpoint(path) if path.exists() else None
        bookkeeping = parts.pop(_RUN_PART, {}) if parts else {}
        if parts and check is not None:
            check(parts)  # before anything in the folder changes
        rows: dict[str, int] = dict(bookkeeping.get("csv_rows", {}))
        self.metrics = json.loads(bookkeeping.get("metrics", "{}"))
        self.resume_state = parts
        if not self.main:
            return
        for stale in self.checkpoint_dir.glob(".*.tmp"):  # left by a process killed while saving
            stale.unlink()
        for csv_path in sorted(self.path.glob("*.csv")):
            keep = rows.get(csv_path.stem, 0)
            if keep == 0:
                csv_path.unlink()
            else:
                truncate_csv(csv_path, keep)
        if self.metrics:
            write_json(self.path / "metrics.json", self.metrics)
        else:
            (self.path / "metrics.json").unlink(missing_ok=True)
        where = f"step recorded in {path}" if parts else "the start (no checkpoint yet)"
        _log.info("resuming %s from %s", self.path, where)


def _config_dict(config: Mapping[str, Any] | argparse.Namespace) -> dict[str, Any]:
    items = vars(config) if isinstance(config, argparse.Namespace) else dict(config)
    return to_jsonable(items)


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], ignore: frozenset[str]) -> list[str]:
    lines = []
    for key in sorted(set(old) | set(new)):
        if key in ignore:
            continue
        missing = object()
        a, b = old.get(key, missing), new.get(key, missing)
        if a != b:
            show = lambda v: "(absent)" if v is missing else repr(v)  # noqa: E731
            lines.append(f"  {key}: {show(a)} (stored) != {show(b)} (now)")
    return lines


def open_run(
    out: str | os.PathLike[str],
    config: Mapping[str, Any] | argparse.Namespace,
    *,
    resume: bool = False,
    overwrite: bool = False,
    ignore: Iterable[str] = (),
    main: bool | None = None,
    check_checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> Run:
    """Create (or, with ``resume``, reopen) the run folder ``out`` for a run with arguments ``config``, and lock it
    (on the main process) until :meth:`Run.close`.

    On resume, ``check_checkpoint(parts)`` may raise to refuse a checkpoint that belongs to another model before
    the logs are cut back to it.
    """
    path = Path(out)
    args = _config_dict(config)
    main = distributed.is_main() if main is None else main
    ignored = NON_RESULT_KEYS | frozenset(ignore)
    if resume and overwrite:
        raise ValueError("--resume and --overwrite contradict each other: choose one")
    lock: RunLock | None = None
    error: Exception | None = None
    if main:
        try:
            lock = _check_resume(path, args, ignored) if resume else _create_folder(path, args, overwrite)
        except (RunExists, RunNotFound, ConfigMismatch, RunLocked, OSError) as exc:
            error = exc
    # Every rank raises rank 0's error, rather than waiting at the barrier for a rank that has given up.
    error = distributed.broadcast_object(error) if distributed.is_distributed() else error
    if error is not None:
        raise error
    run = Run(path, args, resumed=resume, main=main, lock=lock)
    if resume:
        try:
            run._rewind(check_checkpoint)
        except BaseException:
            run.close()
            raise
    distributed.barrier()
    return run


def check_folder(out: str | os.PathLike[str], config: Mapping[str, Any] | argparse.Namespace, *, resume: bool = False,
                 overwrite: bool = False, ignore: Iterable[str] = ()) -> None:
    """Raise what :func:`open_run` would raise about the folder itself (it exists, holds no run to resume, holds
    another configuration, is locked by a live run), changing nothing: a check to make before long preparations.
    :func:`open_run` checks again, under the lock."""
    path = Path(out)
    if resume:
        _stored_args(path, _config_dict(config), NON_RESULT_KEYS | frozenset(ignore))
    elif path.exists():
        _existing_run(path, overwrite)
    if path.is_dir():
        RunLock(path).acquire().release()


def _stored_args(path: Path, args: dict[str, Any], ignored: frozenset[str]) -> dict[str, Any]:
    """The stored arguments of the run in ``path``; raise unless they match ``args`` (up to ``ignored``)."""
    config_path = path / "config.json"
    if not config_path.is_file():
        raise RunNotFound(f"cannot resume: {path} holds no run (no config.json); drop --resume to start one")
    try:
        stored = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise RunNotFound(f"cannot resume: {config_path} is not valid JSON ({exc})") from exc
    diff = _differences(stored.get("args", {}), args, ignored)
    if diff:
        raise ConfigMismatch(
            f"cannot resume {path}: these arguments differ from the stored run and change results:\n"
            + "\n".join(diff) + "\nUse the stored values, or start a new run in another --out folder"
        )
    return dict(stored.get("args", {}))


def _check_resume(path: Path, args: dict[str, Any], ignored: frozenset[str]) -> RunLock:
    """Lock the run folder ``path`` for a resume after checking that its stored arguments match ``args``."""
    stored = _stored_args(path, args, ignored)
    lock = RunLock(path).acquire()
    for line in _differences(stored, args, frozenset()):
        _log.warning("resuming with a changed non-result argument:%s", line)
    return lock


def _existing_run(path: Path, overwrite: bool) -> None:
    """Raise :class:`RunExists` unless the existing ``path`` is an empty folder or (with ``overwrite``) a run."""
    if not path.is_dir():
        raise RunExists(f"--out {path} exists and is not a folder")
    if any(p.name != LOCK_NAME for p in path.iterdir()):
        if not (path / "config.json").is_file():
            raise RunExists(f"--out {path} exists and is not a run folder (no config.json); refusing to write "
                            "into it or delete it; choose another --out")
        if not overwrite:
            raise RunExists(f"run folder {path} already exists; pass --overwrite to replace it, --resume to "
                            "continue it, or choose another --out")


def _create_folder(path: Path, args: dict[str, Any], overwrite: bool) -> RunLock:
    """Create and lock a fresh run folder with config.json, replacing an old run only if ``overwrite`` (and only
    when no live process holds it)."""
    config_path = path / "config.json"
    if path.exists():
        _existing_run(path, overwrite)
    path.mkdir(parents=True, exist_ok=True)
    lock = RunLock(path).acquire()
    try:
        old = [p for p in path.iterdir() if p.name != LOCK_NAME]
        if old:
            _log.warning("overwriting run folder %s", path)
        for item in old:  # the lock stays, so no other process can start in the folder meanwhile
            shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
        write_json(config_path, {
            "args": args,
            "command": [sys.executable, *sys.argv],
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "environment": environment_info(),
        })
    except BaseException:
        lock.release()
        raise
    return lock
