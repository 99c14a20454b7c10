"""StabilityMonitor: rows every N steps, flushed as written, values equal to independent computations, and no
side effects on the training run (random state, gradients, train mode)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from invertible.diagnostics import reconstruction_error, singular_values
from invertible.models import DenseFlow
from invertible.monitor import COLUMNS, StabilityMonitor, parameter_norms
from invertible.testing import randomize_

F64 = torch.float64


def _flow() -> DenseFlow:
    flow = DenseFlow(4, steps=2, hidden=8, zero_init=False, seed=0).double()
    randomize_(flow, 0.2, 0)
    return flow


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_rows_every_n_steps_flushed_before_close_with_independent_values(tmp_path: Path) -> None:
    flow = _flow()
    data = torch.randn(32, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    sample = data[:3]
    optimizer = torch.optim.SGD(flow.parameters(), lr=1e-2)
    path = tmp_path / "sub" / "stability.csv"
    monitor = StabilityMonitor(flow, sample, path, every=3)
    for step in range(7):
        optimizer.zero_grad()
        loss = -flow.log_prob(data).mean()
        loss.backward()
        row = monitor.step(step, loss=loss.item())
        if step == 6:
            # the last row, checked against computations that do not go through the monitor
            assert row is not None
            assert row["recon_l2_max"] == pytest.approx(float(reconstruction_error(flow, sample).l2.max()))
            sv = singular_values(flow, sample)
            assert row["sigma_max"] == pytest.approx(float(sv[:, 0].max()), rel=1e-12)
            assert row["sigma_min"] == pytest.approx(float(sv[:, -1].min()), rel=1e-10)
            assert row["condition_number"] == pytest.approx(float((sv[:, 0] / sv[:, -1]).max()), rel=1e-10)
            assert row["logdet_error"] < 1e-10 and row["method"] == "exact"
            grads = torch.cat([p.grad.reshape(-1) for p in flow.parameters() if p.grad is not None])
            weights = torch.cat([p.detach().reshape(-1) for p in flow.parameters()])
            assert row["grad_norm"] == pytest.approx(float(grads.norm()), rel=1e-12)
            assert row["weight_norm"] == pytest.approx(float(weights.norm()), rel=1e-12)
            assert row["loss"] == loss.item()
        else:
            assert (row is None) == (step % 3 != 0)
        optimizer.step()
        if step == 3:
            rows = _read(path)  # flushed while the monitor is still open
            assert [r["step"] for r in rows] == ["0", "3"]
    monitor.close()
    rows = _read(path)
    assert [int(r["step"]) for r in rows] == [0, 3, 6]
    assert list(rows[0]) == [*COLUMNS, "loss"]
    assert all(float(r["time"]) >= 0 for r in rows)
    with pytest.raises(ValueError, match="closed"):
        monitor.log(7)


def test_monitoring_does_not_change_the_training_run(tmp_path: Path) -> None:
    flow = _flow()
    data = torch.randn(16, 4, dtype=F64)
    (-flow.log_prob(data).mean()).backward()
    grads = [p.grad.clone() for p in flow.parameters()]
    flow.train()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    with StabilityMonitor(flow, data[:2], tmp_path / "a.csv", every=1, method="lanczos") as monitor:
        monitor.step(0)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p.grad, g) for p, g in zip(flow.parameters(), grads))
    assert all(m.training for m in flow.modules())


def test_large_samples_use_the_matrix_free_method(tmp_path: Path) -> None:
    flow = _flow()
    sample = torch.randn(2, 4, dtype=F64)
    with StabilityMonitor(flow, sample, tmp_path / "m.csv", every=1, max_exact_dims=2, rtol=1e-8) as monitor:
        row = monitor.step(0)
    assert row is not None and row["method"] == "lanczos" and math.isnan(row["logdet_error"])
    sv = singular_values(flow, sample)
    assert row["sigma_max"] == pytest.approx(float(sv[:, 0].max()), rel=1e-6)
    assert row["sigma_min"] == pytest.approx(float(sv[:, -1].min()), rel=1e-6)
    with StabilityMonitor(flow, sample, tmp_path / "n.csv", every=1, jacobian=False) as monitor:
        row = monitor.step(0)
    assert row is not None and row["method"] == "none" and math.isnan(row["sigma_max"])
    assert math.isnan(row["grad_norm"])  # no backward pass yet: no gradient to measure


def test_append_continues_a_file_and_unknown_columns_are_refused(tmp_path: Path) -> None:
    flow, path = _flow(), tmp_path / "log.csv"
    sample = torch.randn(2, 4, dtype=F64)
    with StabilityMonitor(flow, sample, path, every=1, jacobian=False) as monitor:
        monitor.step(0, loss=1.0)
    with StabilityMonitor(flow, sample, path, every=1, jacobian=False, append=True) as monitor:
        monitor.step(1, loss=0.5)
        with pytest.raises(ValueError, match="no column"):
            monitor.step(2, accuracy=0.1)
    assert [(r["step"], r["loss"]) for r in _read(path)] == [("0", "1.0"), ("1", "0.5")]
    with pytest.raises(ValueError, match="every"):
        StabilityMonitor(flow, sample, path, every=0)


def test_parameter_norms_count_non_finite_gradients() -> None:
    flow = _flow()
    params = list(flow.parameters())
    params[0].grad = torch.full_like(params[0], math.nan)
    params[1].grad = torch.ones_like(params[1])
    norms = parameter_norms(flow)
    assert norms["grad_nonfinite"] == 1.0 and math.isnan(norms["grad_norm"])


def test_non_finite_reconstructions_are_logged_not_raised(tmp_path: Path) -> None:
    flow = _flow()
    sample = torch.randn(3, 4, dtype=F64)
    flow(sample)
    with torch.no_grad():
        flow[0].log_scale.fill_(-800.0)  # scale exp(-800) = 0: every reconstruction is NaN or Inf
    with StabilityMonitor(flow, sample, tmp_path / "nan.csv", every=1, jacobian=False) as monitor:
        row = monitor.step(0)
    assert row is not None and row["recon_nonfinite_samples"] == 1.0
    assert row["recon_nan"] + row["recon_inf"] == 12.0
