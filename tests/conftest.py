"""Shared test configuration.

- One torch thread per xdist worker: two workers on two cores with two threads each run five times slower.
- ``--runslow`` runs the tests marked ``slow`` (paper-scale studies); the default run skips them.
- Hypothesis profiles (choose with ``--hypothesis-profile=NAME`` or ``HYPOTHESIS_PROFILE=NAME``):

  - ``ci`` (default): 12 derandomized examples per property (reproducible; ``gradcheck`` gets half, see
    ``tests/property/test_contract.py``). Chosen from a measured budget: at 8 examples the property suite cost
    120 CPU-seconds, of which ~105 scale with the count (``gradcheck`` 36 of them, ~0.22 s per example); the whole
    default run at 16 examples cost 642 CPU-seconds (~5.3 minutes on 2 cores with ``-n 2``, measured under a
    load of ~12), over the ~5-minute budget; at 12 it is ~590 CPU-seconds, ~4.9 minutes.
  - ``dev``: 50 random examples per property, for local exploration.
  - ``thorough``: 200 random examples per property (hundreds, ``gradcheck`` 100), run before a release or after
    changing a tolerance: about 2,000 CPU-seconds (~20 minutes with ``-n 2`` on 2 quiet cores). Its last run is
    recorded in ``benchmarks/results/check_discrimination.md``.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

_COMMON = {"deadline": None, "print_blob": True,
           "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("ci", max_examples=12, derandomize=True, **_COMMON)
settings.register_profile("dev", max_examples=50, **_COMMON)
settings.register_profile("thorough", max_examples=200, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow study: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
