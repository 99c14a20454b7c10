"""Toy 2-D regression onto a rank-1 target: an affine Glow loses its inverse unless the NF term is on.

The original's ``toy_2d_regression.py`` (PAPER.md section 2.2): a 24-step affine Glow on 2-D inputs ``x = (a, b)``,
``a, b ~ N(0, 1)``, trained by full-batch mean squared error to map ``x`` onto the target ``(~0, b)`` (first
coordinate drawn with variance 1e-24). The target map is rank 1, so fitting it drives one singular value of the
Jacobian towards 0: the inverse explodes. The NF term ``-nf_coeff * mean log p(x)`` penalises that contraction.

Every ``--log-every`` steps, each run logs to ``train_nf_<coeff>.csv``:

- the training loss, its MSE and negative log-likelihood parts;
- the reconstruction error ``||x - f^-1(f(x))||`` over the training points (mean, max, fraction non-finite) and
  the condition number ``kappa = sigma_max / sigma_min`` of the Jacobian at the worst training point (the
  original's measurement) -- ``cond`` from a float64 copy of the learned map (its true conditioning, beyond what
  float32 can resolve) and ``cond_f32`` from the float32 Jacobian as the original computed it;
- the same on a grid over ``[-E, E]^2`` (``--grid-extent``): the largest reconstruction error, the condition
  number at that worst grid point, and the largest condition number anywhere on the grid.

Quirks of the original and what this script does (PAPER.md sections 2.2 and 5):

- ActNorm starts as the identity (no data initialisation): kept.
- The original's ActNorm log-det is multiplied by the feature count (2), which only changes the NF term's weight
  on the ActNorm scales: the correct log-det by default, ``--actnorm-logdet-factor 2`` reproduces the quirk.
- Coupling scale ``sigmoid(h + 2) + 1e-6`` with log-det ``log sigmoid(h + 2)`` in the original; here the log-det
  is ``log(sigmoid(h + 2) + 1e-6)``, the exact one (a relative difference below 1e-6).
- The data are drawn exactly as the original draws them (numpy's legacy generator seeded with ``--seed``, 1111 by
  default), so ``--preset paper`` trains on the original's 10,000 points.

Presets: ``paper`` is the original (10,000 points, Adam 1e-4, 40,000 full-batch steps; hours on a CPU, minutes on
a GPU); ``cpu`` (default) uses 500 points and Adam 1e-3 for 5,000 steps, about ten minutes for both runs on 2
cores (Adam moves a parameter by up to about ``lr`` per step, so this can travel as far as the original's run),
long enough for the NF run to settle while the unregularized one keeps contracting; ``quick`` is a smoke run for
the tests. Any of ``--points``, ``--iterations``, ``--lr``, ``--log-every`` overrides the preset.

Examples::

    python -m experiments.toy_regression                          # both runs (NF 0 and 1e-6), one figure
    python -m experiments.toy_regression --nf-coeff 1e-6 --out runs/toy_nf
    python -m experiments.toy_regression --preset paper --device cuda --out runs/toy_paper
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from invertible import ActNorm, allow_nonfinite
from invertible.diagnostics import jacobian_stats, reconstruction_error
from invertible.models import DenseFlow, FlowStep, standard_normal_log_prob

from .cli import add_run_args, apply_preset
from .plots import plot_csv
from .runs import Run, open_run, read_csv
from .training import ResumableLoop, Stopwatch, resolve_device

__all__ = ["PRESETS", "FIELDS", "build_model", "build_parser", "coeff_label", "make_data", "measure", "main"]

_log = logging.getLogger(__name__)

#: Training size per preset; ``paper`` is the original script.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"points": 10_000, "iterations": 40_000, "lr": 1e-4, "log_every": 200},
    "cpu": {"points": 500, "iterations": 5_000, "lr": 1e-3, "log_every": 100},
    "quick": {"points": 200, "iterations": 300, "lr": 1e-2, "log_every": 50},
}

#: Columns of each run's CSV log.
FIELDS = ["step", "loss", "mse", "nll", "recon_mean", "recon_max", "recon_nonfinite", "cond", "sigma_min",
          "sigma_max", "cond_f32", "grid_recon_max", "grid_nonfinite", "grid_cond_at_worst", "grid_cond_max",
          "seconds"]


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


def measure(model: DenseFlow, x: Tensor, grid_points: Tensor) -> dict[str, float]:
    """Reconstruction errors and condition numbers of ``model`` on the training points and the grid."""
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
    on_grid = reconstruction_error(model, grid_points)
    worst_grid = _nan_argmax(on_grid.l2)
    row["grid_recon_max"] = float(on_grid.l2.double().nan_to_num(nan=math.inf, posinf=math.inf).max())
    row["grid_nonfinite"] = on_grid.summary()["nonfinite_samples"]
    if exact is not None:
        kappa = _kappa(exact, grid_points.double())
        row["grid_cond_at_worst"] = float(kappa[worst_grid])
        row["grid_cond_max"] = float(kappa.nan_to_num(nan=math.inf, posinf=math.inf).max())
    else:
        row["grid_cond_at_worst"] = row["grid_cond_max"] = math.nan
    return row


class _Optimizers:
    """A list of optimizers checkpointed as one object."""

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        self.optimizers = list(optimizers)

    def state_dict(self) -> dict[str, Any]:
        return {str(i): opt.state_dict() for i, opt in enumerate(self.optimizers)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for i, opt in enumerate(self.optimizers):
            opt.load_state_dict(state[str(i)])


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
    }


def plot_runs(csvs: Mapping[str, str | Path], out: str | Path) -> None:
    """The study's figure: condition numbers, the worst grid reconstruction error and the MSE over training, one
    line per run."""
    plot_csv(csvs, ["cond", "grid_cond_max", "grid_recon_max", "mse"], out, x="step", logy=True,
             title="toy regression: kappa at the worst training point (cond) and on the grid, worst grid "
                   "reconstruction error, MSE")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.toy_regression", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nf-coeff", type=float, nargs="+", default=[0.0, 1e-6],
                        help="NF coefficient(s); one run each, trained one after the other in the same run folder "
                             "(default: %(default)s, the original's two runs).")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                        help="Training size: paper (the original), cpu (minutes on 2 cores) or quick (tests) "
                             "(default: %(default)s).")
    parser.add_argument("--quick", action="store_true", help="Same as --preset quick.")
    parser.add_argument("--points", type=int, help="Training points (overrides the preset).")
    parser.add_argument("--iterations", type=int, help="Full-batch Adam steps per run (overrides the preset).")
    parser.add_argument("--lr", type=float, help="Adam learning rate (overrides the preset).")
    parser.add_argument("--log-every", type=int, help="Steps between measurements (overrides the preset).")
    parser.add_argument("--steps", type=int, default=24, help="Flow steps (default: %(default)s = 3 levels x 8).")
    parser.add_argument("--hidden", type=int, default=10, help="Coupling MLP width (default: %(default)s).")
    parser.add_argument("--actnorm-logdet-factor", type=float, default=1.0,
                        help="Weight of the ActNorm log-det in the NF term; 2 reproduces the original's quirk "
                             "(default: %(default)s).")
    parser.add_argument("--grid-extent", type=float, default=4.0,
                        help="The grid covers [-E, E]^2 (default: %(default)s; the data lie inside).")
    parser.add_argument("--grid-size", type=int, default=41, help="Grid points per axis (default: %(default)s).")
    parser.add_argument("--float64", action="store_true", help="Train in float64 instead of float32.")
    parser.add_argument("--seed", type=int, default=1111,
                        help="Seeds the data (numpy, as the original) and the initialisation (default: %(default)s).")
    parser.add_argument("--checkpoint-every", type=int, default=500, help="Steps between checkpoints.")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch; the models are too small to gain from more, and extra threads "
                             "slow down badly on a busy machine (default: %(default)s).")
    add_run_args(parser, auto_out="runs/toy_regression_<preset>")
    return parser


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the preset's values into the arguments left unset."""
    if args.quick:
        args.preset = "quick"
    apply_preset(args, PRESETS[args.preset])
    if args.iterations < 1 or args.points < 2 or args.log_every < 1:
        raise SystemExit("--iterations and --log-every must be >= 1 and --points >= 2")
    if args.out is None:
        args.out = Path("runs") / f"toy_regression_{args.preset}"
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the study; returns the metrics (also written to metrics.json)."""
    args = resolve_args(build_parser().parse_args(argv))
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = torch.float64 if args.float64 else torch.float32
    run = open_run(args.out, args, resume=args.resume, overwrite=args.overwrite,
                   ignore={"checkpoint_every", "threads"})
    try:
        return _train(run, args, device, dtype)
    finally:
        run.close()


def _train(run: Run, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
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
        row = {"step": step, "loss": float(loss), "mse": float(mse), "nll": float(nll),
               **measure(model, x, grid_points), "seconds": watch.seconds()["wall_seconds"]}
        logs[coeff].log(**row)
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


    metrics: dict[str, Any] = {"preset": args.preset, "timing": watch.seconds()}
    csvs = {}
    for coeff in args.nf_coeff:
        path = run.path / f"train_{coeff_label(coeff)}.csv"
        rows = [{k: float(v) if v != "" else math.nan for k, v in r.items()} for r in read_csv(path)]
        metrics[coeff_label(coeff)] = _summary(rows)
        csvs[f"NF {coeff:g}"] = path
    run.update_metrics(**metrics)
    if run.main:
        plot_runs(csvs, run.plot_dir / "toy_regression.png")
    return dict(run.metrics)



if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(sys.argv[1:])
