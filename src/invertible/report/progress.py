"""A progress bar for the report's steps: tqdm when it is installed, else a plain counter on stderr."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["Progress"]


class Progress:
    """``step(description)`` advances by one of ``total`` steps; ``close()`` ends the bar. ``enabled=False`` is
    silent."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total, self.done, self.enabled = total, 0, enabled
        self._bar: Any = None
        if enabled:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, desc="report", unit="step", file=sys.stderr, leave=False)
            except ImportError:
                self._bar = None

    def step(self, description: str) -> None:
        if not self.enabled:
            return
        if self.done:
            self._advance()
        self.done += 1
        if self._bar is not None:
            self._bar.set_postfix_str(description)
        else:
            sys.stderr.write(f"\r[{self.done}/{self.total}] {description:<40}")
            sys.stderr.flush()

    def _advance(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.done:
            self._advance()
        if self._bar is not None:
            self._bar.close()
        else:
            sys.stderr.write("\n")
