"""A training monitor: stability diagnostics every N steps, one CSV row each, from any training loop.

Usage (two lines in the loop)::

    monitor = StabilityMonitor(model, x_fixed, "run/stability.csv", every=100)
    for step, batch in enumerate(loader):
        loss = -model.log_prob(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        monitor.step(step, loss=loss.item())  # after backward (gradient norms), before the optimizer step
        optimizer.step()
    monitor.close()

Each logged row holds the reconstruction statistics of the fixed sample, the extreme singular values and condition
number of the model's Jacobian at it (exact for small inputs, matrix-free Lanczos otherwise), the log-det error
(exact method only), the weight and gradient norms, and any extra values passed to :meth:`StabilityMonitor.step`.
Rows are flushed as they are written, so a crashed run keeps its log. The monitor touches neither the global random
state nor the parameters' gradients, so monitoring does not change the training run.
"""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path
from types import TracebackType
from typing import IO

import torch
from torch import Tensor

from .base import InvertibleModule
from .diagnostics import eval_mode, extreme_singular_values, jacobian_stats, reconstruction_error

__all__ = ["COLUMNS", "StabilityMonitor", "parameter_norms"]

#: The columns every row has, in order (extra values follow, sorted by name).
COLUMNS = (
    "step", "time", "recon_l2_mean", "recon_l2_max", "recon_relative_max", "recon_nonfinite_samples", "recon_nan",
    "recon_inf", "sigma_max", "sigma_min", "condition_number", "inverse_lipschitz", "logdet_error", "method",
    "weight_norm", "grad_norm", "grad_nonfinite",
)


def parameter_norms(module: torch.nn.Module) -> dict[str, float]:
    """``weight_norm`` and ``grad_norm`` (Euclidean norms over all parameters, and over the gradients present) and
    ``grad_nonfinite``, the number of parameters whose gradient has a non-finite entry."""
    weights = [p.detach().double().pow(2).sum() for p in module.parameters()]
    grads = [p.grad.detach() for p in module.parameters() if p.grad is not None]
    return {
        "weight_norm": float(torch.stack(weights).sum().sqrt()) if weights else 0.0,
        "grad_norm": float(torch.stack([g.double().pow(2).sum() for g in grads]).sum().sqrt()) if grads else math.nan,
        "grad_nonfinite": float(sum(int(not bool(torch.isfinite(g).all())) for g in grads)),
    }


class StabilityMonitor:
    """Log stability diagnostics of ``model`` at the fixed ``sample`` every ``every`` steps to a CSV file.

    Args:
        model: the flow being trained.
        sample: a fixed batch (a few samples) in the model's dtype and device; measurements are taken at it.
        path: the CSV file (its folder is created).
        every: log when ``step % every == 0``.
        method: singular values ``"exact"``, ``"lanczos"`` or ``"auto"`` (exact up to ``max_exact_dims`` entries
            per sample); see :func:`~invertible.diagnostics.extreme_singular_values`.
        jacobian: measure singular values (the costly part; turn off for reconstruction and norms only).
        append: continue an existing file (e.g. a resumed run) instead of overwriting it.
        max_iter, rtol: Lanczos settings.

    Example:
        >>> import tempfile, torch, invertible
        >>> from invertible.models import DenseFlow
        >>> flow = DenseFlow(2, steps=2, hidden=8).double()
        >>> x = torch.randn(64, 2, dtype=torch.float64)
        >>> path = tempfile.mkdtemp() + "/stability.csv"
        >>> with StabilityMonitor(flow, x[:4], path, every=5) as monitor:
        ...     for step in range(10):
        ...         loss = -flow.log_prob(x).mean()
        ...         loss.backward()
        ...         row = monitor.step(step, loss=loss.item())
        >>> rows = open(path).read().splitlines()
        >>> len(rows), rows[0].split(",")[:3]
        (3, ['step', 'time', 'recon_l2_mean'])
    """

    def __init__(
        self,
        model: InvertibleModule,
        sample: Tensor,
        path: str | os.PathLike[str],
        *,
        every: int = 100,
        method: str = "auto",
        max_exact_dims: int = 1024,
        jacobian: bool = True,
        append: bool = False,
        max_iter: int = 40,
        rtol: float = 1e-2,
    ) -> None:
        if every < 1:
            raise ValueError(f"StabilityMonitor: every must be >= 1, got {every}")
        if method not in ("auto", "exact", "lanczos"):
            raise ValueError(f"StabilityMonitor: method must be 'auto', 'exact' or 'lanczos', got {method!r}")
        self.model, self.sample, self.every = model, sample.detach(), every
        self.method, self.max_exact_dims, self.jacobian = method, max_exact_dims, jacobian
        self.max_iter, self.rtol = max_iter, rtol
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._columns: list[str] | None = None
        if append and self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open(newline="") as f:
                self._columns = next(csv.reader(f))
        self._file: IO[str] | None = self.path.open("a" if append else "w", newline="")
        self._writer: csv.DictWriter | None = None
        self._start = time.perf_counter()

    def step(self, step: int, **extra: float) -> dict[str, float | str] | None:
        """Log a row if ``step % every == 0`` (returning it), else do nothing and return ``None``.

        Call it after ``loss.backward()`` so that the gradient norm is the step's; ``extra`` values (the loss, the
        learning rate, ...) are logged in their own columns.
        """
        return self.log(step, **extra) if step % self.every == 0 else None

    def measure(self) -> dict[str, float | str]:
        """The diagnostics at the fixed sample and the parameter norms, without writing them."""
        row: dict[str, float | str] = {}
        stats = reconstruction_error(self.model, self.sample).summary()
        row.update({"recon_l2_mean": stats["l2_mean"], "recon_l2_max": stats["l2_max"],
                    "recon_relative_max": stats["relative_max"],
                    "recon_nonfinite_samples": stats["nonfinite_samples"], "recon_nan": stats["nan"],
                    "recon_inf": stats["inf"]})
        nan = math.nan
        sigma_max = sigma_min = cond = logdet_error = nan
        method = "none"
        if self.jacobian:
            method = self.method
            if method == "auto":
                method = "exact" if self.sample[0].numel() <= self.max_exact_dims else "lanczos"
            with eval_mode(self.model):
                if method == "exact":  # sigma_min through the inverse, as extreme_singular_values does
                    js = jacobian_stats(self.model, self.sample, eval=False)
                    s_max, s_min, logdet_error = js.sigma_max, 1.0 / js.inverse[:, 0], float(js.logdet_error.max())
                else:
                    sv = extreme_singular_values(self.model, self.sample, method="lanczos", max_iter=self.max_iter,
                                                 rtol=self.rtol, eval=False)
                    s_max, s_min = sv.sigma_max, sv.sigma_min
            sigma_max, sigma_min = float(s_max.max()), float(s_min.min())
            cond = float((s_max / s_min).max())
        row.update({"sigma_max": sigma_max, "sigma_min": sigma_min, "condition_number": cond,
                    "inverse_lipschitz": 1.0 / sigma_min if sigma_min == sigma_min else nan,
                    "logdet_error": logdet_error, "method": method})
        row.update(parameter_norms(self.model))
        return row

    def log(self, step: int, **extra: float) -> dict[str, float | str]:
        """Measure and write a row now, whatever the step."""
        if self._file is None:
            raise ValueError(f"StabilityMonitor({self.path}) is closed")
        row: dict[str, float | str] = {"step": step, "time": time.perf_counter() - self._start}
        row.update(self.measure())
        row.update({k: float(v.detach()) if isinstance(v, Tensor) else float(v) for k, v in extra.items()})
        if self._columns is None:
            self._columns = [*COLUMNS, *sorted(extra)]
        unknown = sorted(set(row) - set(self._columns))
        if unknown:
            raise ValueError(f"StabilityMonitor.log: the values {unknown} have no column in {self.path}; pass the "
                             "same extra values at every logged step (the header is fixed by the first row)")
        if self._writer is None:
            self._writer = csv.DictWriter(self._file, fieldnames=self._columns)
            if self._file.tell() == 0:
                self._writer.writeheader()
        self._writer.writerow(row)
        self._file.flush()
        return row

    def close(self) -> None:
        """Close the file (further logging raises)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> StabilityMonitor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
