"""The toy regression's model, data, measurements and training run (see :mod:`experiments.toy_regression`)."""


from __future__ import annotations

import argparse
import copy
import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from invertible import ActNorm, allow_nonfinite
from invertible.checkpoint import load_checkpoint
from invertible.diagnostics import InvertibilityVerdict, jacobian_stats, judge_reconstructions, reconstruction_error
from invertible.models import DenseFlow, FlowStep, standard_normal_log_prob

from ..common.plots import plot_csv
from ..common.runs import Run, read_csv, write_json
from ..common.training import ResumableLoop, Stopwatch
from ..common.verdicts import condition_at_points, point_verdict

__all__ = ["FIELDS", "build_model", "coeff_label", "final_verdict", "make_data", "measure", "plot_runs", "run"]

_log = logging.getLogger(__name__)

#: Columns of each run's CSV log.
#: ``invertible``/``grid_invertible`` are the library's verdict on the training points and on the grid (1: every
#: reconstruction finite and within ``NONINVERTIBLE_RTOL`` relative); ``recon_rel_max``/``grid_recon_rel_max`` the
#: worst relative errors it judged.
FIELDS = ["step", "loss", "mse", "nll", "recon_mean", "recon_max", "recon_rel_max", "recon_nonfinite", "invertible",
          "cond", "sigma_min", "sigma_max", "cond_f32", "grid_recon_max", "grid_recon_rel_max", "grid_nonfinite",
          "grid_invertible", "grid_cond_at_worst", "grid_cond_max", "seconds"]


def coeff_label(coeff: float) -> str:
    """``nf_0``, ``nf_1e-06``: the name of a coefficient's CSV log and metrics entry."""
    return f"nf_{coeff:g}"


def make_data(points: int, seed: int) -> tuple[Tensor, Tensor]:
    """The original's data: ``x = (a, b)`` standard normal, target ``y = (N(0, 1e-24), b)``, float64.

    Drawn with numpy's legacy generator exactly as the original does (two multivariate normals, one with a
    singular covariance), so ``seed=1111, points=10000`` gives the original's data set.
    """
    rs = np.random.RandomState(seed)
    first = rs.multivariate_normal([0, 0], [[1, 0], [0, 1e-24]], size=(points,))
    second = rs.multivariate_normal([0, 0], [[1, 1], [1, 1]], size=(points,))
    x = np.stack([first[:, 0], second[:, 0]]).T
    y = np.stack([first[:, 1], second[:, 1]]).T
    return torch.from_numpy(x), torch.from_numpy(y)


def build_model(steps: int = 24, hidden: int = 10) -> DenseFlow:
    """The original's Glow on 2-D vectors: ``steps`` x (identity-initialised ActNorm, reverse, affine coupling with
    an MLP 1-``hidden``-``hidden``-2 in PyTorch's default initialisation, scale ``sigmoid(h + 2) + 1e-6``)."""
    step = FlowStep(hidden=hidden, permutation="reverse", net="mlp", actnorm_data_init=False, zero_init=False,
                    order="glow", scale_fn="sigmoid_eps", eps=1e-6)
    return DenseFlow(2, steps=steps, step=step)


def _actnorm_logdet(model: nn.Module) -> Tensor:
    """Sum of the ActNorms' log-dets (per sample of flat data: ``sum log s``)."""
    terms = [m.log_scale_value().sum() for m in model.modules() if isinstance(m, ActNorm)]
    return torch.stack(terms).sum()


def objective(model: DenseFlow, x: Tensor, y: Tensor, nf_coeff: float, actnorm_factor: float
              ) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss, mse, nll)`` with ``loss = mse + nf_coeff * nll`` and ``nll = -mean log p(x)``."""
    z, logdet = model(x)
    mse = (z - y).pow(2).mean()
    log_p = standard_normal_log_prob(z) + logdet
    if actnorm_factor != 1.0:
        log_p = log_p + (actnorm_factor - 1.0) * _actnorm_logdet(model)
    nll = -log_p.mean()
    loss = mse + nf_coeff * nll if nf_coeff else mse
    return loss, mse, nll


def grid(extent: float, size: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
         ) -> Tensor:
    """``size x size`` points covering ``[-extent, extent]^2``, shape ``(size^2, 2)``."""
    axis = torch.linspace(-extent, extent, size, dtype=torch.float64)
    a, b = torch.meshgrid(axis, axis, indexing="xy")
    return torch.stack([a.reshape(-1), b.reshape(-1)], dim=1).to(device=device, dtype=dtype)


def _nan_argmax(values: Tensor) -> int:
    """Index of the largest value, a non-finite one counting as the largest."""
    return int(values.double().nan_to_num(nan=math.inf, posinf=math.inf).argmax())


def _kappa(model: nn.Module, x: Tensor) -> Tensor:
    """Condition numbers of the forward Jacobian at each row of ``x`` (float64 results)."""
    return jacobian_stats(model, x, inverse=False, batched=True).condition_number


def measure(model: DenseFlow, x: Tensor, grid_points: Tensor, verdicts: dict[str, Any] | None = None
            ) -> dict[str, float]:
    """Reconstruction errors and condition numbers of ``model`` on the training points and the grid; the library's
    verdict on each set (with kappa at its worst-reconstructed point) goes into ``verdicts`` if given."""
    with torch.no_grad():
        params_finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    exact = copy.deepcopy(model).double() if params_finite else None
    train = reconstruction_error(model, x)
    worst = _nan_argmax(train.l2)
    row: dict[str, float] = {
        "recon_mean": train.summary()["l2_mean"],
        "recon_max": float(train.l2.double().nan_to_num(nan=math.inf, posinf=math.inf).max()),
        "recon_nonfinite": train.summary()["nonfinite_samples"],
        "cond_f32": float(_kappa(model, x[worst:worst + 1])[0]),
    }
    if exact is not None:
        stats = jacobian_stats(exact, x[worst:worst + 1].double(), inverse=False, batched=True)
        row.update(cond=float(stats.condition_number[0]), sigma_min=float(stats.sigma_min[0]),
                   sigma_max=float(stats.sigma_max[0]))
    else:
        row.update(cond=math.nan, sigma_min=math.nan, sigma_max=math.nan)
    # the verdict is decided by the relative error over all points; the worst *relative* point can differ from the
    # worst absolute one, whose kappa is the 'cond' column
    dtype = x.dtype
    kappa_train = {}
    train_verdict = point_verdict(train.relative.cpu(), train.nonfinite.cpu(), dtype=dtype,
                                  norms=x.double().norm(dim=1).cpu())
    w = train_verdict["worst_index"]
    if exact is not None:
        at = jacobian_stats(exact, x[w:w + 1].double(), inverse=False, batched=True)
        kappa_train = dict(cond=at.condition_number.numpy(), sigma_max=at.sigma_max.numpy(),
                           sigma_min=at.sigma_min.numpy())
        train_verdict["at_worst"] = condition_at_points([0], train.relative.cpu()[w:w + 1], **kappa_train).__dict__
        train_verdict["at_worst"]["indices"] = [w]
    row["recon_rel_max"] = train_verdict["worst_relative"]
    row["invertible"] = int(train_verdict["invertible"])
    on_grid = reconstruction_error(model, grid_points)
    worst_grid = _nan_argmax(on_grid.l2)
    row["grid_recon_max"] = float(on_grid.l2.double().nan_to_num(nan=math.inf, posinf=math.inf).max())
    row["grid_nonfinite"] = on_grid.summary()["nonfinite_samples"]
    kappa = None
    if exact is not None:
        kappa = _kappa(exact, grid_points.double())
        row["grid_cond_at_worst"] = float(kappa[worst_grid])
        row["grid_cond_max"] = float(kappa.nan_to_num(nan=math.inf, posinf=math.inf).max())
    else:
        row["grid_cond_at_worst"] = row["grid_cond_max"] = math.nan
    grid_verdict = point_verdict(on_grid.relative.cpu(), on_grid.nonfinite.cpu(), dtype=dtype,
                                 cond=None if kappa is None else kappa.cpu().numpy(),
                                 norms=grid_points.double().norm(dim=1).cpu())
    row["grid_recon_rel_max"] = grid_verdict["worst_relative"]
    row["grid_invertible"] = int(grid_verdict["invertible"])
    if verdicts is not None:
        verdicts.update(train=train_verdict, grid=grid_verdict)
    return row


def final_verdict(model: DenseFlow, x: Tensor, grid_points: Tensor) -> InvertibilityVerdict:
    """The library's verdict on the training points and the grid together. A point at the origin is left out: a
    relative error ``||x - x_hat|| / ||x||`` is undefined at ``x = 0`` (the grid has one when its size is odd, at
    a norm of about ``1e-16`` from the rounding of ``linspace``: any point under ``1e-6`` of the largest norm)."""
    points = torch.cat([x, grid_points])
    norms = points.double().norm(dim=1)
    stats = reconstruction_error(model, points[norms > 1e-6 * norms.max()])
    return judge_reconstructions(stats.relative, stats.nonfinite, dtype=str(points.dtype))


class _Optimizers:
    """A list of optimizers checkpointed as one object."""

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        self.optimizers = list(optimizers)

    def state_dict(self) -> dict[str, Any]:
        return {str(i): opt.state_dict() for i, opt in enumerate(self.optimizers)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for i, opt in enumerate(self.optimizers):
            opt.load_state_dict(state[str(i)])


def _first(rows: list[dict[str, float]], column: str) -> float:
    if not rows or column not in rows[0]:
        return math.nan
    return next((r["step"] for r in rows if r[column] == 0), -1)


def _summary(rows: list[dict[str, float]]) -> dict[str, float]:
    """Final values and maxima over training of one run's log."""
    last = rows[-1]
    finite = lambda key: [r[key] for r in rows if math.isfinite(r[key])]  # noqa: E731
    return {
        "final_step": last["step"], "final_mse": last["mse"], "final_nll": last["nll"],
        "final_cond": last["cond"], "final_sigma_min": last["sigma_min"], "final_cond_f32": last["cond_f32"],
        "final_recon_mean": last["recon_mean"], "final_recon_max": last["recon_max"],
        "final_recon_nonfinite": last["recon_nonfinite"], "final_grid_recon_max": last["grid_recon_max"],
        "final_grid_cond_max": last["grid_cond_max"], "final_grid_nonfinite": last["grid_nonfinite"],
        "max_cond": max(finite("cond"), default=math.nan),
        "max_recon_max": max((r["recon_max"] for r in rows), default=math.nan),
        "max_grid_recon_max": max((r["grid_recon_max"] for r in rows), default=math.nan),
        "first_nonfinite_step": next((r["step"] for r in rows if r["recon_nonfinite"] > 0 or r["grid_nonfinite"] > 0),
                                     -1),
        # the first logged step whose verdict is non-invertible (-1: never; NaN: not logged by this run's code)
        "first_noninvertible_step": _first(rows, "invertible"),
        "first_grid_noninvertible_step": _first(rows, "grid_invertible"),
        "final_invertible": last.get("invertible", math.nan), "final_grid_invertible": last.get("grid_invertible",
                                                                                               math.nan),
    }


def plot_runs(csvs: Mapping[str, str | Path], out: str | Path) -> None:
    """The study's figure: condition numbers, the worst grid reconstruction error and the MSE over training, one
    line per run."""
    plot_csv(csvs, ["cond", "grid_cond_max", "grid_recon_max", "mse"], out, x="step", logy=True,
             title="toy regression: kappa at the worst training point (cond) and on the grid, worst grid "
                   "reconstruction error, MSE")


def run(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    """Train one model per NF coefficient, one after the other, logging the measurements; returns the summaries."""
    device, dtype = run.device, torch.float64 if args.float64 else torch.float32
    x64, y64 = make_data(args.points, args.seed)
    x, y = x64.to(device, dtype), y64.to(device, dtype)
    grid_points = grid(args.grid_extent, args.grid_size, dtype, device)
    models, optimizers = nn.ModuleList(), []
    for _ in args.nf_coeff:
        torch.manual_seed(args.seed)  # every run starts from the same initialisation, as separate runs of the original
        model = build_model(args.steps, args.hidden).to(device, dtype)
        models.append(model)
        optimizers.append(torch.optim.Adam(model.parameters(), lr=args.lr, foreach=True))
    opts = _Optimizers(optimizers)
    loop = ResumableLoop(run, epochs=len(args.nf_coeff), seed=args.seed, steps_per_epoch=args.iterations,
                         checkpoint_every=args.checkpoint_every, desc="toy regression")
    loop.track(models=models, optimizers=opts)
    loop.restore()
    logs = {c: run.csv(f"train_{coeff_label(c)}", FIELDS) for c in args.nf_coeff}
    watch = Stopwatch()

    def record(coeff: float, model: DenseFlow, step: int) -> None:
        with torch.no_grad():
            loss, mse, nll = objective(model, x, y, coeff, args.actnorm_logdet_factor)
        verdicts: dict[str, Any] = {}
        row = {"step": step, "loss": float(loss), "mse": float(mse), "nll": float(nll),
               **measure(model, x, grid_points, verdicts), "seconds": watch.seconds()["wall_seconds"]}
        logs[coeff].log(**row)
        if step == args.iterations and run.main:  # the final verdicts, read into metrics.json (also after a resume)
            write_json(run.path / f"verdicts_{coeff_label(coeff)}.json", verdicts)
        loop.set_postfix(nf=coeff, cond=row["cond"], recon=row["recon_max"])

    for run_index in loop.epochs():
        coeff, model, optimizer = args.nf_coeff[run_index], models[run_index], optimizers[run_index]
        for step in loop.steps():
            if step.index % args.log_every == 0:
                record(coeff, model, step.index)
            with allow_nonfinite():
                loss, _, _ = objective(model, x, y, coeff, args.actnorm_logdet_factor)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step.index == args.iterations - 1:
                record(coeff, model, args.iterations)

    metrics: dict[str, Any] = {"preset": args.preset}
    csvs = {}
    for coeff, model in zip(args.nf_coeff, models):
        path = run.path / f"train_{coeff_label(coeff)}.csv"
        rows = [{k: float(v) if v != "" else math.nan for k, v in r.items()} for r in read_csv(path)]
        metrics[coeff_label(coeff)] = {**_summary(rows), "verdict": final_verdict(model, x, grid_points).to_dict()}
        verdicts = run.path / f"verdicts_{coeff_label(coeff)}.json"
        if verdicts.is_file():
            metrics[coeff_label(coeff)]["verdicts"] = json.loads(verdicts.read_text())
        csvs[f"NF {coeff:g}"] = path
    run.update_metrics(**metrics)
    if run.main:
        plot_runs(csvs, run.plot_dir / "toy_regression.png")
    return dict(run.metrics)


def remeasure(args: argparse.Namespace, device: torch.device) -> int:
    """``--remeasure RUN_FOLDER``: the final measurements of a finished run (also one written by older code of this
    study) taken again from its last checkpoint with the current code: the verdicts per set into
    ``verdicts_<coeff>.json`` and ``metrics.json`` (``remeasured``: the final row of each coefficient). The training
    logs are left as they are. Exit status 0."""
    folder = Path(args.remeasure)
    stored = json.loads((folder / "config.json").read_text())["args"]
    parts = load_checkpoint(folder / "checkpoints" / "latest.pt", map_location=device)
    state = parts["state"]["models"] if "state" in parts else parts["models"]
    dtype = torch.float64 if stored.get("float64") else torch.float32
    x64, _ = make_data(stored["points"], stored["seed"])
    x = x64.to(device, dtype)
    grid_points = grid(stored["grid_extent"], stored["grid_size"], dtype, device)
    models = nn.ModuleList(build_model(stored["steps"], stored["hidden"]) for _ in stored["nf_coeff"])
    models.load_state_dict(state)
    models.to(device, dtype)
    metrics_path = folder / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    for coeff, model in zip(stored["nf_coeff"], models):
        verdicts: dict[str, Any] = {}
        row = measure(model, x, grid_points, verdicts)
        write_json(folder / f"verdicts_{coeff_label(coeff)}.json", verdicts)
        entry = metrics.setdefault(coeff_label(coeff), {})
        entry.update(verdicts=verdicts, remeasured=row)
        print(f"{coeff_label(coeff)}: train {verdicts['train']['reason']}; grid {verdicts['grid']['reason']}")
    write_json(metrics_path, metrics)
    return 0
