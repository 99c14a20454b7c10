"""The studies' use of the library's one verdict: per-point errors turned into ``verdict.to_dict()``, points at the
origin left out, and an attack's breaks told apart (random start against ascent)."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from experiments.common.verdicts import ORIGIN, attack_verdicts, kappa_at, point_verdict
from invertible.diagnostics import NONINVERTIBLE_RTOL
from invertible.models import DenseFlow


def test_point_verdict_is_the_librarys_judgement_with_kappa_at_the_worst_point() -> None:
    fine = point_verdict(np.full(5, 1e-7), np.zeros(5, bool), cond=np.arange(1.0, 6.0))
    assert fine["invertible"] and fine["nonfinite"] == fine["above_rtol"] == 0 and fine["rtol"] == NONINVERTIBLE_RTOL
    rel = np.array([1e-7, 2 * NONINVERTIBLE_RTOL, 1e-6, 0.5 * NONINVERTIBLE_RTOL])
    bad = point_verdict(rel, np.zeros(4, bool), cond=np.array([1.0, 7e5, 3.0, 9.0]), fixed=[0, 2])
    assert not bad["invertible"] and bad["above_rtol"] == 1 and bad["worst_index"] == 1
    assert bad["at_worst"]["kappa_forward"] == [7e5] and bad["at_worst"]["indices"] == [1]
    assert bad["at_fixed"]["indices"] == [0, 2] and bad["at_fixed"]["kappa_forward"] == [1.0, 3.0]
    # a non-finite reconstruction decides even where its relative error reads small; kappa never decides
    nonfinite = point_verdict(np.full(3, 1e-8), np.array([0, 2, 0]), cond=np.full(3, 1e12))
    assert not nonfinite["invertible"] and nonfinite["nonfinite"] == 1 and nonfinite["worst_relative"] == math.inf
    assert point_verdict(np.full(3, 1e-8), np.zeros(3), cond=np.full(3, 1e12))["invertible"]


def test_points_at_the_origin_are_left_out_and_counted() -> None:
    """A grid through 0 reconstructs it to round-off: an unbounded relative error that says nothing."""
    rel = np.array([1e-7, 6e9, 2e-7])
    norms = np.array([1.0, 1e-16, 2.0])
    assert not point_verdict(rel, np.zeros(3))["invertible"]  # negative control: without the norms it counts
    kept = point_verdict(rel, np.zeros(3), norms=norms)
    assert kept["invertible"] and kept["n"] == 2 and kept["excluded_near_origin"] == 1 and kept["worst_index"] == 2
    near = np.array([1.0, 2 * ORIGIN, 1.0])  # just outside the excluded ball: judged
    assert not point_verdict(rel, np.zeros(3), norms=near)["invertible"]


def _result(clean, errors, x_nat):
    """An AttackResult's fields for points that do not move (x_worst = x_nat)."""
    return SimpleNamespace(clean_error=torch.as_tensor(clean, dtype=torch.float64), x_worst=x_nat,
                           accurate_error=torch.as_tensor(errors, dtype=torch.float64))


def test_attack_verdicts_tell_the_random_start_from_the_ascent() -> None:
    """Point 0 is broken by the random start (step 0 already), point 1 by the ascent (fine at step 0, Inf later),
    point 2 never; the worst verdict counts both, the start verdict only the first."""
    x_nat = torch.ones(3, 2, dtype=torch.float64)
    x_start = x_nat.clone()
    start_error = torch.tensor([0.5, 1e-7, 1e-7], dtype=torch.float64)  # 0.5 / ||x|| = 0.35 > rtol
    steps = [[0.5, 1e-7, 1e-7], [0.6, math.inf, 2e-7]]
    out = attack_verdicts(x_nat, x_start, start_error, _result([1e-7] * 3, steps, x_nat), torch.float32)
    assert (out["breaks_at_start"], out["breaks_by_ascent"], out["broken"], out["points"]) == (1, 1, 2, 3)
    assert out["verdicts"]["clean"]["invertible"]
    assert not out["verdicts"]["start"]["invertible"] and out["verdicts"]["start"]["above_rtol"] == 1
    assert out["verdicts"]["worst"]["nonfinite"] == 1 and out["verdicts"]["worst"]["above_rtol"] == 1
    quiet = attack_verdicts(x_nat, x_start, torch.full((3,), 1e-7, dtype=torch.float64),
                            _result([1e-7] * 3, [[1e-7] * 3, [2e-7] * 3], x_nat), torch.float32)
    assert (quiet["breaks_at_start"], quiet["breaks_by_ascent"], quiet["broken"]) == (0, 0, 0)


def test_kappa_at_is_the_exact_condition_number_of_a_float64_copy() -> None:
    torch.manual_seed(0)
    flow = DenseFlow(2, steps=2, hidden=8, zero_init=False, actnorm_data_init=False)
    x = torch.randn(3, 2)
    kappa = kappa_at(flow, x)
    assert next(flow.parameters()).dtype == torch.float32  # the flow itself is left alone
    ref = copy.deepcopy(flow).double()
    jac = torch.stack([torch.autograd.functional.jacobian(lambda v: ref(v[None])[0][0], r) for r in x.double()])
    s = torch.linalg.svdvals(jac)
    assert kappa == pytest.approx((s[:, 0] / s[:, -1]).numpy(), rel=1e-9)
