"""Maximum-likelihood training of one Glow per model name, then the stability analysis of every snapshot."""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from invertible.checkpoint import CheckpointError
from invertible.diagnostics import repeated_round_trips
from invertible.models import Flow, Glow, bits_per_dim

from ..data import DataFormatError, DatasetNotFound
from ..plots import image_grid, line_panels
from ..runs import ConfigMismatch, Run, RunExists, RunNotFound, open_run, read_csv
from ..training import DeviceError, Meter, ResumableLoop, resolve_device, seed_everything
from . import options
from .analyze import analyze_runs, model_bpd, sample
from .data import GlowData, load
from .model import build_glow, find_model_runs, load_run, mark_actnorm_initialized

__all__ = ["AnalysisError", "Clock", "EVAL_FIELDS", "TRAIN_FIELDS", "analyze_folders", "evaluate",
           "finish_study", "last_snapshot_table", "load_data", "main", "model_args", "open_model_run", "sample_grid",
           "summary", "train_model", "zero_nonfinite_grads"]

_log = logging.getLogger("experiments.glow")

#: Columns of ``train_log.csv`` (every step).
TRAIN_FIELDS = ["step", "epoch", "lr", "bpd", "grad_norm", "nonfinite_grad"]
#: Columns of ``eval_log.csv`` (every ``--eval-every`` steps, at step 0 and at the last step).
EVAL_FIELDS = ["step", "epoch", "seconds", "train_bpd", "test_bpd", "sample_nonfinite", "sample_max_abs", "pad",
               "sample_pad"]
#: Keys of the study's arguments that a model run does not take over.
STUDY_ONLY = ("models", "variants", "analyze", "no_analyze", "out", "resume", "overwrite", "save_dir")
#: Images in the fixed evaluation batch and sample grid.
EVAL_BATCH = 64


class Clock:
    """Wall time of a run, carried across resumptions (tracked in checkpoints)."""

    def __init__(self) -> None:
        self.offset, self.start = 0.0, time.time()

    def elapsed(self) -> float:
        return self.offset + time.time() - self.start

    def state_dict(self) -> dict[str, float]:
        return {"elapsed": self.elapsed()}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.offset, self.start = float(state["elapsed"]), time.time()


def load_data(args: argparse.Namespace, device: torch.device) -> GlowData:
    """The run's data, padded for its number of levels."""
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    return load(args.dataset, data_dir=args.data_dir, download=args.download, levels_of_flow=args.n_levels,
                augment=bool(args.augment), dtype=dtype, device=device)


def model_args(args: argparse.Namespace, name: str, data: GlowData, **extra: Any) -> dict[str, Any]:
    """A model run's arguments: the study's, less the study-only keys, plus the model and the data's format."""
    own = {k: v for k, v in vars(args).items() if k not in STUDY_ONLY}
    own.update({"model": name, "label": name, "shape": list(data.shape), "levels": data.levels, **extra})
    return own


def open_model_run(study: Run, name: str, config: dict[str, Any], ignore: Sequence[str]) -> Run:
    """The model's run folder ``<study>/models/<name>``: resumed if the study is resumed and the folder exists."""
    folder = study.path / "models" / name
    resume = study.resumed and (folder / "config.json").is_file()
    return open_run(folder, config, resume=resume, overwrite=not resume and folder.exists(), ignore=ignore)


class AnalysisError(ValueError):
    """Runs that cannot be analysed together (another data set or image shape)."""


@torch.no_grad()
def evaluate(model: Flow, data: GlowData, fixed: Tensor, z: Tensor, seed: int) -> dict[str, Any]:
    """Test bits per dimension (dequantised with a fixed noise), samples from the fixed ``z`` (non-finite share,
    largest magnitude), and the pixel distance after 9 round trips of the fixed test batch and of the samples."""
    was_training = model.training
    model.eval()
    try:
        g = torch.Generator().manual_seed(seed + 1)
        bpd = torch.cat([model_bpd(model, data.to_model(part, g), data.levels)
                         for part in data.test.images.split(512)])
        samples = sample(model, z)
        ok = torch.isfinite(samples.flatten(1)).all(dim=1)
        finite = samples[torch.isfinite(samples)]
        pad = repeated_round_trips(model, fixed, passes=9, to_pixels=data.to_levels).pad[8]
        sample_pad = (repeated_round_trips(model, samples[ok], passes=9, to_pixels=data.to_levels).pad[8]
                      if bool(ok.any()) else samples.new_full((1,), math.nan))
    finally:
        model.train(was_training)
    finite_bpd = bpd[torch.isfinite(bpd)]
    return {"test_bpd": float(finite_bpd.double().mean()) if finite_bpd.numel() else math.nan,
            "sample_nonfinite": float((~ok).double().mean()),
            "sample_max_abs": float(finite.abs().max()) if finite.numel() else math.nan,
            "pad": float(pad.double().nan_to_num(nan=math.inf).mean()),
            "sample_pad": float(sample_pad.double().nan_to_num(nan=math.inf).mean()), "samples": samples}


def _optimizer(args: argparse.Namespace, model: torch.nn.Module) -> torch.optim.Optimizer:
    if args.optim_name == "adamax":
        return torch.optim.Adamax(model.parameters(), lr=args.lr, weight_decay=5e-5)
    return torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.5, 0.99))


def zero_nonfinite_grads(model: torch.nn.Module) -> bool:
    """Set NaN/Inf gradient entries to 0 (as the original does); True if there were any."""
    found = False
    for p in model.parameters():
        if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
            p.grad.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
            found = True
    return found


def sample_grid(run: Run, step: int, samples: Tensor) -> None:
    bad = int((~torch.isfinite(samples.flatten(1)).all(dim=1)).sum())
    state = f"NaNs ({bad} of {len(samples)} samples not finite)" if bad else "Good"
    image_grid(samples[:32].double().cpu(), out=run.plot_dir / f"samples_{step:06d}.png", ncol=8,
               value_range=(-0.5, 0.5), title=f"step {step}: {state}")


def train_model(run: Run, args: argparse.Namespace, name: str, data: GlowData, device: torch.device) -> dict[str, Any]:
    """Train the Glow ``name`` by maximum likelihood in the model run folder ``run``; return its metrics."""
    seed_everything(args.seed)
    model: Glow = build_glow(args, data.shape, name).to(device, data.dtype)
    if args.n_init_batches:
        with torch.no_grad():
            model(data.init_batch(args.seed, args.n_init_batches * args.batch_size))
    else:
        mark_actnorm_initialized(model)
    optimizer = _optimizer(args, model)
    warmup = args.warmup
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: min(1.0, (e + 1) / warmup) if warmup else 1.0)
    meter, totals, clock = Meter(), Meter(), Clock()
    loop = ResumableLoop(run, epochs=args.epochs, seed=args.seed, num_examples=len(data.train),
                         batch_size=args.batch_size, checkpoint_every=args.checkpoint_every, desc=name)
    loop.track(model=model, optimizer=optimizer, scheduler=scheduler, meter=meter, totals=totals, clock=clock)
    try:
        loop.restore()
    except (ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{run.checkpoint_dir / 'latest.pt'} does not hold a checkpoint of this run's model "
                              f"({exc}); start afresh with --overwrite") from exc
    train_log, eval_log = run.csv("train_log", TRAIN_FIELDS), run.csv("eval_log", EVAL_FIELDS)
    g = torch.Generator().manual_seed(args.seed + 2)
    fixed = data.to_model(data.test.images[:EVAL_BATCH], g)
    z = torch.randn((EVAL_BATCH, *model.latent_shape), generator=g, dtype=torch.float64).to(device, data.dtype)
    total_steps = args.epochs * loop.steps_per_epoch

    def eval_now(step: int, epoch: int) -> None:
        values = evaluate(model, data, fixed, z, args.seed)
        samples = values.pop("samples")
        eval_log.log(step=step, epoch=epoch, seconds=clock.elapsed(), train_bpd=meter.means().get("bpd", math.nan),
                     **values)
        meter.reset()
        run.save_checkpoint(f"step_{step}", model=model.state_dict(), step=step)
        if run.main:
            sample_grid(run, step, samples)
        _log.info("%s step %d/%d: test bpd %.4f, non-finite samples %.3f, PAD %.3g", name, step, total_steps,
                  values["test_bpd"], values["sample_nonfinite"], values["pad"])

    if loop.global_step == 0 and loop.epoch == 0:
        eval_now(0, 0)
    D = data.dims
    for epoch in loop.epochs():
        for step in loop.steps():
            x = data.batch(step.indices, step.generator)
            bpd = bits_per_dim(model.log_prob(x), D, data.levels)
            loss = bpd.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            bad = zero_nonfinite_grads(model)
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm or math.inf)
            optimizer.step()
            value = float(loss.detach())
            if math.isfinite(value):
                meter.add(count=len(x), bpd=value * len(x))
            totals.add(count=1, nonfinite_grad=float(bad), nonfinite_loss=float(not math.isfinite(value)))
            iteration = step.global_step + 1
            train_log.log(step=iteration, epoch=epoch, lr=optimizer.param_groups[0]["lr"], bpd=value,
                          grad_norm=float(norm), nonfinite_grad=int(bad))
            loop.set_postfix(bpd=value)
            if iteration % args.eval_every == 0 or iteration == total_steps:
                eval_now(iteration, epoch)
        scheduler.step()
    return _final_metrics(run, loop, totals, clock, model)


def _final_metrics(run: Run, loop: ResumableLoop, totals: Meter, clock: Clock, model: Glow) -> dict[str, Any]:
    rows = read_csv(run.path / "eval_log.csv")
    last = rows[-1] if rows else {}
    metrics = {key: float(last[key]) for key in ("test_bpd", "train_bpd", "sample_nonfinite", "pad", "sample_pad")
               if last.get(key, "") != ""}
    metrics.update(status="completed", steps=loop.global_step, epochs=loop.epoch, seconds=clock.elapsed(),
                   nonfinite_grad_steps=totals.sums.get("nonfinite_grad", 0.0),
                   nonfinite_loss_steps=totals.sums.get("nonfinite_loss", 0.0),
                   parameters=sum(p.numel() for p in model.parameters()))
    run.update_metrics(**metrics)
    if run.main:
        _training_plot(run.path)
    return dict(run.metrics)


def _training_plot(folder: Path) -> None:
    train = read_csv(folder / "train_log.csv")
    evals = read_csv(folder / "eval_log.csv")

    def col(rows: list[dict[str, str]], key: str) -> tuple[list[float], list[float]]:
        pairs = [(float(r["step"]), float(r[key])) for r in rows if r.get(key, "") != ""]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    line_panels({"bits per dimension": {"train batch": col(train, "bpd"), "test": col(evals, "test_bpd")},
                 "non-finite samples (share)": {"samples": col(evals, "sample_nonfinite")},
                 "pixel distance after 9 round trips": {"test batch": col(evals, "pad"),
                                                        "samples": col(evals, "sample_pad")}},
                folder / "plots" / "training.png", xlabel="training step", logy=[False, False, True],
                title=folder.name)


# ----------------------------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------------------------
def analyze_folders(folders: Sequence[Path], out: Path | None, args: argparse.Namespace,
                    device: torch.device) -> list[dict[str, Any]]:
    """Analyse the model runs found in ``folders`` (study folders or model folders); results go to ``out``."""
    runs = [load_run(p) for folder in folders for p in find_model_runs(folder)]
    if not runs:
        raise FileNotFoundError(f"no model runs found in {', '.join(map(str, folders))}")
    first = runs[0].args
    if any(r.args.dataset != first.dataset or list(r.args.shape) != list(first.shape) for r in runs):
        raise AnalysisError("the runs to analyse together must share the data set and image shape")
    data_args = argparse.Namespace(**{**vars(first), "augment": False})
    data = load_data(data_args, device)
    target = out if out is not None else Path(folders[0])
    samples = args.analysis_samples or first.analysis_samples
    jac = args.jacobian_samples or first.jacobian_samples
    started = time.time()
    rows = analyze_runs(runs, data, target, analysis_samples=samples, jacobian_samples=jac, ood=args.ood,
                        data_dir=args.data_dir, seed=first.seed, device=device,
                        progress=lambda text: _log.info("analysing %s", text))
    _log.info("analysed %d runs in %.0f s; results in %s", len(runs), time.time() - started, target)
    return rows


def summary(rows: Sequence[dict[str, Any]], models: dict[str, dict[str, Any]] | None = None) -> str:
    """A plain-text table of the last snapshot of each model: one line per probe set."""
    lines = []
    if models:
        lines.append(f"{'model':<22}{'steps':>7}{'test bpd':>10}{'NaN samples':>13}{'seconds':>9}")
        for name, m in models.items():
            lines.append(f"{name:<22}{m.get('steps', 0):>7}{m.get('test_bpd', math.nan):>10.4f}"
                         f"{m.get('sample_nonfinite', math.nan):>13.3f}{m.get('seconds', math.nan):>9.0f}")
        lines.append("")
    if rows:
        lines.append(f"{'model':<22}{'step':>7} {'set':<11}{'non-fin in':>11}{'bpd':>8}{'cond':>10}{'dlogdet':>10}"
                     f"{'mse_9 max':>11}{'non-fin rec':>12}")
        for name in dict.fromkeys(r["model"] for r in rows):
            last = max(int(r["step"]) for r in rows if r["model"] == name)
            for r in rows:
                if r["model"] == name and int(r["step"]) == last:
                    lines.append(f"{name:<22}{last:>7} {r['set']:<11}{r['input_nonfinite']:>11.3f}{r['bpd']:>8.3f}"
                                 f"{r['cond_max']:>10.3g}{r['logdet_error_max']:>10.2g}{r['mse_9_max']:>11.3g}"
                                 f"{r['recon_nonfinite_9']:>12.3f}")
    return "\n".join(lines)


def finish_study(study: Any, args: argparse.Namespace, device: torch.device, wall: float, cpu: float
                 ) -> list[dict[str, Any]]:
    """The end of a study run: the stability analysis of its model runs (unless ``--no-analyze``) and the
    timing, both into the study's metrics. ``wall``/``cpu`` are ``time.time()``/``time.process_time()`` at its
    start. Returns the analysis rows."""
    rows: list[dict[str, Any]] = []
    if not args.no_analyze:
        rows = analyze_folders([study.path], study.path, args, device)
        study.update_metrics(last_snapshot=last_snapshot_table(rows))
    study.update_metrics(timing={"wall_seconds": time.time() - wall, "cpu_seconds": time.process_time() - cpu,
                                 "threads": torch.get_num_threads(), "resumed": study.resumed})
    return rows


def last_snapshot_table(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["model"] for r in rows):
        last = max(int(r["step"]) for r in rows if r["model"] == name)
        out[name] = {r["set"]: {k: v for k, v in r.items() if k not in ("model", "set")}
                     for r in rows if r["model"] == name and int(r["step"]) == last}
    return out


def _study(args: argparse.Namespace, device: torch.device) -> int:
    wall, cpu = time.time(), time.process_time()
    data = load_data(args, device)  # before the folder exists: missing data leaves nothing behind
    study = open_run(args.out, args, resume=args.resume, overwrite=args.overwrite, ignore=options.NON_RESULT)
    try:
        models = {}
        for name in args.models:
            run = open_model_run(study, name, model_args(args, name, data), options.NON_RESULT)
            try:
                models[name] = train_model(run, args, name, data, device)
            finally:
                run.close()
        study.update_metrics(models=models)
        rows = finish_study(study, args, device, wall, cpu)
        print(f"Glow MLE on {args.dataset}: {study.path}\n" + summary(rows, models))
    finally:
        study.close()
    return 0


_USER_ERRORS = (DatasetNotFound, DataFormatError, RunExists, RunNotFound, ConfigMismatch, CheckpointError,
                DeviceError, FileNotFoundError, AnalysisError)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m experiments.glow``: returns the exit status (0 ok, 2 bad input)."""
    args = options.parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
        if args.analyze is not None:
            rows = analyze_folders(args.analyze, args.out, args, device)
            print(summary(rows))
            return 0
        return _study(args, device)
    except _USER_ERRORS as exc:
        _log.debug("stopped by a user error", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2
