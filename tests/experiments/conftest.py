"""Fixtures shared by the tests that run whole studies or reports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from experiments.common.training import capture_rng_state, restore_rng_state


@pytest.fixture
def isolated_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Studies set the thread count and seed the global RNGs, and a run or cache without a folder lands in the
    working one: run in ``tmp_path`` and restore the thread count and the RNG states afterwards."""
    monkeypatch.chdir(tmp_path)
    threads, rng = torch.get_num_threads(), capture_rng_state()
    yield
    torch.set_num_threads(threads)
    restore_rng_state(rng)
