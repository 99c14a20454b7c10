"""The lock of a run folder: one live process at a time may write into it.

A run holds an exclusive ``flock`` on ``<run>/.lock`` from the moment it opens its folder until it closes it; the
file names the holder (process id, host, start time). The operating system drops the ``flock`` when the process
dies, however it dies, so a lock left by a killed run is *stale*: the file is still there, nobody holds it. The next
run that opens the folder takes it over and logs which process left it. A live holder is never overridden: opening
its folder (to overwrite or resume it) raises :class:`RunLocked`, which the studies report as a usage error.

Example::

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> lock = RunLock(folder).acquire()
    >>> try:
    ...     RunLock(folder).acquire()
    ... except RunLocked as exc:
    ...     print("refused:", "is in use by process" in str(exc))
    refused: True
    >>> lock.release()
    >>> RunLock(folder).acquire().release()
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import logging
import os
import socket
from pathlib import Path
from typing import IO, Any

__all__ = ["LOCK_NAME", "RunLock", "RunLocked"]

_log = logging.getLogger(__name__)

#: The lock file's name inside a run folder.
LOCK_NAME = ".lock"


class RunLocked(RuntimeError):
    """The run folder is in use by a live process (another run writes into it)."""


class RunLock:
    """An exclusive, crash-safe lock on a run folder (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._handle: IO[str] | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._handle is not None

    def acquire(self) -> "RunLock":
        """Take the lock, taking over a stale one; raise :class:`RunLocked` if a live process holds it."""
        if self._handle is not None:
            return self
        for _ in range(10):  # retried only when the file was replaced between open and flock
            handle = open(self.path, "a+")
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _describe(_read(handle))
                handle.close()
                raise RunLocked(
                    f"run folder {self.path.parent} is in use by {holder}; wait for that run to end or stop it, "
                    "or choose another --out") from None
            try:
                same = os.fstat(handle.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder released (unlinked) it in between: lock the new file instead
                handle.close()
                continue
            previous = _read(handle)
            if previous:
                _log.warning("took over the stale lock of %s left by %s, which no longer holds it", self.path.parent,
                             _describe(previous))
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(_me()) + "\n")
            handle.flush()
            self._handle = handle
            return self
        raise RunLocked(f"could not lock {self.path}: it keeps being replaced by another process")

    def release(self) -> None:
        """Give the lock up and remove its file (a no-op if not held)."""
        if self._handle is None:
            return
        try:
            if os.fstat(self._handle.fileno()).st_ino == os.stat(self.path).st_ino:
                self.path.unlink()
        except FileNotFoundError:
            pass
        finally:
            self._handle.close()  # drops the flock
            self._handle = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _me() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def _read(handle: IO[str]) -> dict[str, Any] | None:
    handle.seek(0)
    text = handle.read().strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {"text": text[:200]}
    return value if isinstance(value, dict) else {"text": text[:200]}


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another process (its lock file is still empty)"
    if "pid" not in holder:
        return f"an unknown process ({holder.get('text', '')!r})"
    return f"process {holder['pid']} on {holder.get('host', '?')} (since {holder.get('since', '?')})"
