"""2-D checkerboard flows: where affine couplings stop being invertible, and where residual flows do not.

The original's ``train_toy_affine.py`` / ``train_toy_resflow.py`` / ``test_toy.py`` (PAPER.md section 2.3): four
flows are trained by maximum likelihood on the 2-D checkerboard (fresh samples every step, Adam with weight
decay) and then examined far beyond the data:

- ``affine``: RealNVP couplings ``y = x * sigmoid(s + 2) + t`` (no global bound on either Lipschitz constant);
- ``bounded``: the "modified affine" scale ``0.5 * sigmoid(s + 2) + 0.5`` in ``(0.5, 1)``;
- ``additive``: ``y = x + t`` (globally bi-Lipschitz when ``t`` is Lipschitz);
- ``iresnet``: residual blocks ``y = x + g(x)`` with spectrally normalised ``g`` (coefficient 0.8), exact log-det.

Coupling networks are pre-activation MLPs ``act -> Linear(1, h) -> act -> ... -> Linear(h, out)`` with LipSwish
activations, as the original's; couplings alternate which coordinate they transform.

Evaluation (after each model is trained, in eval mode):

- a grid over ``[-8, 8)^2`` (``--grid-size`` points per axis; 320 is the original's step of 0.05): the
  reconstruction error ``||x - f^-1(f(x))||`` and the log-det error ``|logdet - log|det J_autograd||`` in the
  model's float32, the condition number of the Jacobian from a float64 copy of the learned map (float32
  Jacobians cannot resolve more than about 1e7), and the model's likelihood; saved as ``grid_<model>.npz`` and
  drawn side by side in ``plots/heatmaps.png``;
- the data region (checkerboard samples) and the boundaries of squares ``[-R, R]^2`` for ``R = 8 ... 1024``
  (``--far-radii``): median and maximum of the same quantities, in ``regions.csv`` and ``plots/far.png``.

Presets: ``paper`` is the original's size (100 blocks = 200 couplings or 100 residual blocks, four hidden layers
of width 128, 50,000 steps of batch 500: hours per model, use a GPU); ``cpu`` (default) trains four small models
within about ten minutes on two cores; ``quick`` is a smoke run for the tests. ``--blocks``, ``--hidden``,
``--iterations``, ``--batch-size``, ``--grid-size`` override a preset.

The trained weights are kept in ``checkpoints/models.pt``; ``python -m experiments.attack2d --flows RUN`` attacks
them.

Examples::

    python -m experiments.flows2d                               # cpu preset, all four models
    python -m experiments.flows2d --models affine iresnet --quick --out runs/flows2d_quick
    python -m experiments.flows2d --preset paper --device cuda --out runs/flows2d_paper
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from invertible import AdditiveCoupling, AffineCoupling, allow_nonfinite, iterative_inverse
from invertible.checkpoint import load_checkpoint
from invertible.diagnostics import eval_mode, jacobian_stats, reconstruction_error
from invertible.layers.activations import make_activation
from invertible.layers.spectral_norm import SpectralNormLinear, SpectralNormOptions, update_lipschitz
from invertible.models import DenseResidualFlow, Flow

from .cli import add_run_args, apply_preset
from .plots import heatmap_grid, line_panels, plot_csv
from .runs import Run, open_run, read_csv
from .training import ResumableLoop, Stopwatch, resolve_device

__all__ = ["MODELS", "PRESETS", "REGION_FIELDS", "build_model", "build_parser", "checkerboard", "evaluate_points",
           "grid_points", "load_models", "main", "square_boundary"]

_log = logging.getLogger(__name__)

#: The model families compared.
MODELS = ("affine", "bounded", "additive", "iresnet")

#: Sizes per preset; ``blocks`` is coupling pairs (two couplings each) or residual blocks.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"blocks": 100, "hidden": [128, 128, 128, 128], "iterations": 50_000, "batch_size": 500,
              "log_every": 500, "grid_size": 320},
    "cpu": {"blocks": 4, "hidden": [32, 32], "iterations": 2_000, "batch_size": 500, "log_every": 100,
            "grid_size": 200},
    "quick": {"blocks": 2, "hidden": [16, 16], "iterations": 150, "batch_size": 256, "log_every": 50,
              "grid_size": 48},
}

#: Columns of ``regions.csv``: one row per model and region (``data`` or the square boundary of half-width R).
REGION_FIELDS = ["model", "region", "radius", "points", "recon_median", "recon_max", "relative_max", "nonfinite",
                 "cond_median", "cond_max", "logdet_error_median", "logdet_error_max", "loglik_max"]

#: What the heatmaps show, with the original's clipping of the errors and likelihood to [1e-8, 1]; kappa runs from 1
#: to the largest value over the models (the original's fixed [1, 1e10] hides the differences of small models).
HEATMAPS: dict[str, tuple[str, bool, tuple[float | None, float | None]]] = {
    "recon": ("reconstruction error", True, (1e-8, 1.0)),
    "logdet_error": ("log-det error", True, (1e-8, 1.0)),
    "cond": ("condition number", True, (1.0, None)),
    "likelihood": ("likelihood p(x)", True, (1e-8, 1.0)),
}


# ----------------------------------------------------------------------------------------------------------------
# Data and models
# ----------------------------------------------------------------------------------------------------------------
def checkerboard(n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """``n`` points of the 2-D checkerboard on ``[-4, 4]^2`` (residual-flows' ``toy_data``), shape ``(n, 2)``."""
    x1 = torch.rand(n, generator=generator, dtype=torch.float64) * 4 - 2
    x2 = torch.rand(n, generator=generator, dtype=torch.float64) - 2 * torch.randint(0, 2, (n,), generator=generator)
    x2 = x2 + torch.floor(x1) % 2
    return (torch.stack([x1, x2], dim=1) * 2).to(dtype)


def coupling_net(hidden: Sequence[int], activation: str = "swish") -> Callable[[int, int], nn.Module]:
    """A factory ``(in, out) -> act -> Linear(in, h1) -> act -> ... -> Linear(h_n, out)`` (the original's
    pre-activation coupling MLP; PyTorch's default initialisation)."""

    def factory(c_in: int, c_out: int) -> nn.Module:
        widths = [c_in, *hidden, c_out]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [make_activation(activation), nn.Linear(a, b)]
        return nn.Sequential(*layers)

    return factory


def build_model(kind: str, *, blocks: int, hidden: Sequence[int], coeff: float = 0.8, activation: str = "swish",
                sn_iterations: int | None = 5) -> Flow:
    """One of :data:`MODELS`: ``2 * blocks`` alternating couplings, or ``blocks`` residual blocks.

    The i-ResNet's spectral norms run ``sn_iterations`` warm-started power iterations whenever the weights
    change (the original's ``--n-lipschitz-iters 5``; ``None`` iterates to the layers' tolerance instead);
    :func:`refresh_spectral_norms` runs 200 before evaluation, as the original's validation does.
    """
    if kind == "iresnet":
        model = DenseResidualFlow(2, blocks=blocks, hidden=tuple(hidden), activation=activation,
                                  spectral=SpectralNormOptions(coeff=coeff, atol=1e-4, rtol=1e-4),
                                  preact=True, zero_init_last=True, logdet="exact")
        if sn_iterations is not None:
            for layer in model.modules():
                if isinstance(layer, SpectralNormLinear):
                    layer.n_iterations = sn_iterations
        return model
    if kind not in MODELS:
        raise ValueError(f"unknown model {kind!r}; choose from {MODELS}")
    net = coupling_net(hidden, activation)
    layers: list[nn.Module] = []
    for i in range(2 * blocks):
        if kind == "additive":
            layers.append(AdditiveCoupling(2, net=net, swap=i % 2 == 1))
        else:
            layers.append(AffineCoupling(2, net=net, swap=i % 2 == 1, order="realnvp",
                                         scale_fn="sigmoid" if kind == "affine" else "bounded"))
    return Flow(*layers, latent_shape=(2,))  # type: ignore[arg-type]


def refresh_spectral_norms(model: nn.Module, iterations: int = 200) -> None:
    """Run ``iterations`` power iterations on every spectral norm of ``model`` (a no-op for couplings)."""
    if any(isinstance(m, SpectralNormLinear) for m in model.modules()):
        update_lipschitz(model, n_iterations=iterations)


def build_models(args: argparse.Namespace) -> nn.ModuleDict:
    """The run's models, each initialised from ``seed`` (so a model does not depend on which others are trained)."""
    models = nn.ModuleDict()
    for kind in args.models:
        torch.manual_seed(args.seed)
        models[kind] = build_model(kind, blocks=args.blocks, hidden=args.hidden, coeff=args.coeff)
    return models


def load_models(run_dir: str | Path, device: torch.device | str = "cpu") -> tuple[nn.ModuleDict, argparse.Namespace]:
    """The trained models of a finished flows2d run folder, in eval mode, and the run's arguments."""
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())["args"]
    args = argparse.Namespace(**config)
    path = run_dir / "checkpoints" / "models.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the flows2d run in {run_dir} has not finished (resume it "
                                "with --resume)")
    models = build_models(args)
    models.load_state_dict(load_checkpoint(path)["models"])
    return models.to(device).eval(), args


# ----------------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------------
def grid_points(extent: float, size: int) -> Tensor:
    """The original's grid ``arange(-extent, extent, 2 extent / size)`` per axis, row-major with y slowest,
    shape ``(size^2, 2)``, float64."""
    axis = -extent + torch.arange(size, dtype=torch.float64) * (2 * extent / size)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def square_boundary(radius: float, per_side: int) -> Tensor:
    """``4 * per_side`` points evenly spaced on the boundary of ``[-radius, radius]^2``, float64."""
    t = -radius + torch.arange(per_side, dtype=torch.float64) * (2 * radius / per_side)
    r = torch.full_like(t, radius)
    return torch.cat([torch.stack(p, dim=1) for p in ((t, -r), (r, t), (-t, r), (-r, -t))])


def evaluate_points(model: nn.Module, x: Tensor, *, chunk: int = 8192, exact: nn.Module | None = None
                    ) -> dict[str, np.ndarray]:
    """Per point: reconstruction error (absolute and relative to ``||x||``), log-det error, log-likelihood (in the
    model's dtype) and the condition number of the Jacobian (from ``exact``, a float64 copy of the model, made here
    when not given).

    Iterative inverses run with their own settings but return instead of raising when they do not converge, so a
    failed inverse shows up as a reconstruction error.
    """
    param = next(model.parameters())
    if exact is None:
        exact = copy.deepcopy(model).double()
    out: dict[str, list[np.ndarray]] = {"recon": [], "relative": [], "logdet_error": [], "cond": [], "loglik": []}
    with eval_mode(model), eval_mode(exact), iterative_inverse(on_failure="return"):
        for part in x.split(chunk):
            xp = part.to(param.device, param.dtype)
            recon = reconstruction_error(model, xp)
            out["recon"].append(recon.l2.double().cpu().numpy())
            out["relative"].append(recon.relative.double().cpu().numpy())
            with torch.no_grad(), allow_nonfinite():
                out["loglik"].append(model.log_prob(xp).double().cpu().numpy())
            stats = jacobian_stats(model, xp, inverse=False, batched=True)
            out["logdet_error"].append(stats.logdet_error.cpu().numpy())
            stats64 = jacobian_stats(exact, part.to(param.device, torch.float64), inverse=False, batched=True)
            out["cond"].append(stats64.condition_number.cpu().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def _region_row(kind: str, region: str, radius: float, values: Mapping[str, np.ndarray]) -> dict[str, Any]:
    def stat(name: str, fn: Callable[[np.ndarray], float]) -> float:
        a = np.nan_to_num(values[name], nan=np.inf, posinf=np.inf)
        return float(fn(a))

    return {"model": kind, "region": region, "radius": radius, "points": len(values["recon"]),
            "recon_median": stat("recon", np.median), "recon_max": stat("recon", np.max),
            "relative_max": stat("relative", np.max),
            "nonfinite": float(np.mean(~np.isfinite(values["recon"]))),
            "cond_median": stat("cond", np.median), "cond_max": stat("cond", np.max),
            "logdet_error_median": stat("logdet_error", np.median),
            "logdet_error_max": stat("logdet_error", np.max),
            "loglik_max": float(np.nanmax(values["loglik"])) if np.isfinite(values["loglik"]).any() else math.nan}


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.flows2d", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS),
                        help="Models to train, one after the other (default: all).")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                        help="Sizes: paper (the original, for a GPU), cpu (about ten minutes on 2 cores) or quick "
                             "(tests) (default: %(default)s).")
    parser.add_argument("--quick", action="store_true", help="Same as --preset quick.")
    parser.add_argument("--blocks", type=int, help="Coupling pairs or residual blocks (overrides the preset).")
    parser.add_argument("--hidden", type=int, nargs="+", help="Hidden widths of each network (overrides the preset).")
    parser.add_argument("--iterations", type=int, help="Training steps per model (overrides the preset).")
    parser.add_argument("--batch-size", type=int, help="Fresh samples per step (overrides the preset).")
    parser.add_argument("--log-every", type=int, help="Steps between test-set evaluations (overrides the preset).")
    parser.add_argument("--grid-size", type=int, help="Grid points per axis on [-8, 8)^2 (overrides the preset).")
    parser.add_argument("--coeff", type=float, default=0.8,
                        help="Spectral-norm coefficient of the i-ResNet (default: %(default)s).")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: %(default)s).")
    parser.add_argument("--weight-decay", type=float, default=1e-5, help="Adam weight decay (default: %(default)s).")
    parser.add_argument("--test-size", type=int, default=10_000, help="Test samples (default: %(default)s).")
    parser.add_argument("--grid-extent", type=float, default=8.0, help="Grid half-width (default: %(default)s).")
    parser.add_argument("--far-radii", type=float, nargs="+", default=[8, 16, 32, 64, 128, 256, 512, 1024],
                        help="Half-widths R of the squares whose boundaries are probed (default: %(default)s).")
    parser.add_argument("--far-points", type=int, default=100,
                        help="Points per side of each square (default: %(default)s).")
    parser.add_argument("--data-points", type=int, default=5_000,
                        help="Checkerboard samples for the data-region statistics (default: %(default)s).")
    parser.add_argument("--seed", type=int, default=0, help="Seeds initialisation and data (default: %(default)s).")
    parser.add_argument("--checkpoint-every", type=int, default=500, help="Steps between checkpoints.")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for torch; the models are too small to gain from more (default: "
                             "%(default)s).")
    add_run_args(parser, auto_out="runs/flows2d_<preset>")
    return parser


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the preset's values into the arguments left unset."""
    if args.quick:
        args.preset = "quick"
    apply_preset(args, PRESETS[args.preset])
    if min(args.blocks, args.iterations, args.batch_size, args.log_every, args.grid_size) < 1:
        raise SystemExit("--blocks, --iterations, --batch-size, --log-every and --grid-size must be >= 1")
    args.models = list(dict.fromkeys(args.models))
    if args.out is None:
        args.out = Path("runs") / f"flows2d_{args.preset}"
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train, evaluate and plot; returns the metrics (also in metrics.json)."""
    args = resolve_args(build_parser().parse_args(argv))
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    run = open_run(args.out, args, resume=args.resume, overwrite=args.overwrite,
                   ignore={"checkpoint_every", "threads"})
    try:
        return _run(run, args, device)
    finally:
        run.close()


def _run(run: Run, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    models = build_models(args).to(device)
    optimizers = {kind: torch.optim.Adam(m.parameters(), lr=args.lr, weight_decay=args.weight_decay, foreach=True)
                  for kind, m in models.items()}
    loop = ResumableLoop(run, epochs=len(args.models), seed=args.seed, steps_per_epoch=args.iterations,
                         checkpoint_every=args.checkpoint_every, desc="flows2d")
    loop.track(models=models, **{f"optimizer_{k}": o for k, o in optimizers.items()})
    loop.restore()
    test = checkerboard(args.test_size, torch.Generator().manual_seed(args.seed + 1)).to(device)
    data = checkerboard(args.data_points, torch.Generator().manual_seed(args.seed + 2))
    regions = run.csv("regions", REGION_FIELDS)
    watch = Stopwatch()

    for index in loop.epochs():
        kind = args.models[index]
        model, optimizer = models[kind], optimizers[kind]
        log = run.csv(f"train_{kind}", ["step", "train_nll", "test_nll", "seconds"])
        model.train()
        for step in loop.steps():
            x = checkerboard(args.batch_size, step.generator).to(device)
            loss = -model.log_prob(x).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if (step.index + 1) % args.log_every == 0 or step.index == args.iterations - 1:
                with eval_mode(model), torch.no_grad(), allow_nonfinite():
                    test_nll = float(-model.log_prob(test).mean())
                log.log(step=step.index + 1, train_nll=float(loss.detach()), test_nll=test_nll,
                        seconds=watch.seconds()["wall_seconds"])
                loop.set_postfix(model=kind, test_nll=test_nll)
        refresh_spectral_norms(model)
        _evaluate(run, args, kind, model, data, regions)

    run.save_checkpoint("models", models=models.state_dict())
    metrics = _metrics(run, args)
    run.update_metrics(**metrics, timing=watch.seconds())
    if run.main:
        plot_run(run.path, args.models)
    return dict(run.metrics)


def _evaluate(run: Run, args: argparse.Namespace, kind: str, model: nn.Module, data: Tensor, regions: Any) -> None:
    """Grid arrays (``grid_<kind>.npz``) and the region rows of one trained model."""
    exact = copy.deepcopy(model).double()
    started = time.perf_counter()
    on_grid = evaluate_points(model, grid_points(args.grid_extent, args.grid_size), exact=exact)
    if run.main:
        np.savez_compressed(run.path / f"grid_{kind}.npz", extent=args.grid_extent, size=args.grid_size, **on_grid)
    regions.log(**_region_row(kind, "data", 4.0, evaluate_points(model, data, exact=exact)))
    for radius in args.far_radii:
        values = evaluate_points(model, square_boundary(radius, args.far_points), exact=exact)
        regions.log(**_region_row(kind, f"square R={radius:g}", radius, values))
    _log.info("evaluated %s in %.0f s", kind, time.perf_counter() - started)


def _metrics(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    """Per model: final test NLL, grid maxima, data-region and far-region statistics."""
    metrics: dict[str, Any] = {"preset": args.preset}
    rows = read_csv(run.path / "regions.csv")
    for kind in args.models:
        train = read_csv(run.path / f"train_{kind}.csv")
        grid = np.load(run.path / f"grid_{kind}.npz")
        mine = [r for r in rows if r["model"] == kind]
        far = [r for r in mine if r["region"] != "data"]
        entry: dict[str, Any] = {
            "test_nll": float(train[-1]["test_nll"]),
            "grid_recon_max": float(np.nan_to_num(grid["recon"], nan=np.inf, posinf=np.inf).max()),
            "grid_nonfinite": float(np.mean(~np.isfinite(grid["recon"]))),
            "grid_cond_max": float(np.nan_to_num(grid["cond"], nan=np.inf, posinf=np.inf).max()),
            "grid_cond_median": float(np.median(np.nan_to_num(grid["cond"], nan=np.inf, posinf=np.inf))),
            "grid_logdet_error_max": float(np.nan_to_num(grid["logdet_error"], nan=np.inf, posinf=np.inf).max()),
        }
        for r in mine:
            if r["region"] == "data":
                entry.update({f"data_{k}": float(r[k]) for k in ("recon_max", "cond_median", "cond_max")})
        if far:
            last = far[-1]
            entry.update({"far_radius": float(last["radius"]), "far_recon_max": float(last["recon_max"]),
                          "far_cond_max": float(last["cond_max"]), "far_nonfinite": float(last["nonfinite"])})
        metrics[kind] = entry
    return metrics


def plot_run(run_dir: str | Path, kinds: Sequence[str], out_dir: str | Path | None = None, *, dpi_scale: float = 1.0
             ) -> list[Path]:
    """The study's figures from a run folder: heatmaps side by side, the far sweep and the test NLL curves."""
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "plots"
    grids = {kind: np.load(run_dir / f"grid_{kind}.npz") for kind in kinds}
    extent = float(next(iter(grids.values()))["extent"])
    rows: dict[str, dict[str, np.ndarray]] = {}
    for key, (label, _, _) in HEATMAPS.items():
        rows[label] = {}
        for kind, g in grids.items():
            size = int(g["size"])
            values = np.exp(g["loglik"]) if key == "likelihood" else g[key]
            rows[label][kind] = values.reshape(size, size)
    paths = [out_dir / "heatmaps.png", out_dir / "far.png", out_dir / "training.png"]
    heatmap_grid(rows, paths[0], log=[v[1] for v in HEATMAPS.values()], clip=[v[2] for v in HEATMAPS.values()],
                 cmap="inferno", extent=(-extent, extent, -extent, extent),
                 title="checkerboard flows on [-8, 8)^2 (red: not finite)")
    regions = read_csv(run_dir / "regions.csv")
    panels: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for column, title in (("recon_max", "max reconstruction error"), ("cond_max", "max condition number"),
                          ("logdet_error_max", "max log-det error")):
        panels[title] = {}
        for kind in kinds:
            far = [r for r in regions if r["model"] == kind and r["region"] != "data"]
            panels[title][kind] = ([float(r["radius"]) for r in far], [float(r[column]) for r in far])
    line_panels(panels, paths[1], xlabel="half-width R of the square", logy=True, logx=True,
                title="far from the data: the boundary of [-R, R]^2")
    plot_csv({kind: run_dir / f"train_{kind}.csv" for kind in kinds}, ["test_nll"], paths[2], x="step",
             title="test negative log-likelihood")
    return paths


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(sys.argv[1:])
