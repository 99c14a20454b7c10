"""Training Glows on images, the parts the ``glow`` and ``flowgan`` studies share: one model run folder per model
inside the study's folder, the data-dependent ActNorm start, non-finite gradients, and the evaluation that keeps a
snapshot every ``--eval-every`` steps (test bits per dimension, the model's samples, round trips)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from invertible.diagnostics import repeated_round_trips
from invertible.models import Flow, Glow

from ..plots import image_grid, line_panels
from ..runs import Run, open_run, read_csv
from ..training import Clock
from .analysis import model_bpd, sample
from .data import GlowData
from .model import mark_actnorm_initialized

__all__ = ["EVAL_BATCH", "STUDY_ONLY", "EvalInputs", "evaluate", "init_actnorm", "last_eval", "model_args",
           "snapshot", "train_models", "training_plot", "zero_nonfinite_grads"]

#: Keys of the study's arguments that a model run does not take over.
STUDY_ONLY = ("models", "variants", "analyze", "no_analyze", "out", "resume", "overwrite", "save_dir")
#: Images in the fixed evaluation batch and sample grid.
EVAL_BATCH = 64


def model_args(args: argparse.Namespace, name: str, data: GlowData, **extra: Any) -> dict[str, Any]:
    """A model run's arguments: the study's, less the study-only keys, plus the model and the data's format."""
    own = {k: v for k, v in vars(args).items() if k not in STUDY_ONLY}
    own.update({"model": name, "label": name, "shape": list(data.shape), "levels": data.levels, **extra})
    return own


def train_models(study: Run, configs: Mapping[str, dict[str, Any]], train: Callable[[Run, str], dict[str, Any]],
                 ignore: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """Train each model in its run folder ``<study>/models/<name>`` (resumed when the study is resumed and the
    folder exists, started afresh otherwise) with ``train(run, name) -> metrics``; returns the metrics by name."""
    results = {}
    for name, config in configs.items():
        folder = study.path / "models" / name
        resume = study.resumed and (folder / "config.json").is_file()
        run = open_run(folder, config, resume=resume, overwrite=not resume and folder.exists(), ignore=ignore)
        try:
            results[name] = train(run, name)
        finally:
            run.close()
    return results


def init_actnorm(model: Glow, data: GlowData, args: argparse.Namespace) -> None:
    """The data-dependent ActNorm initialisation on ``--n-init-batches`` seeded batches, or (for 0) every ActNorm
    starting as the identity, as the original's ``--n_init_batches``."""
    if args.n_init_batches:
        with torch.no_grad():
            model(data.init_batch(args.seed, args.n_init_batches * args.batch_size))
    else:
        mark_actnorm_initialized(model)


def zero_nonfinite_grads(model: torch.nn.Module) -> bool:
    """Set NaN/Inf gradient entries to 0 (as the original does); True if there were any."""
    found = False
    for p in model.parameters():
        if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
            p.grad.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
            found = True
    return found


class EvalInputs:
    """The fixed inputs of a run's evaluations: a dequantised test batch and a latent batch, from ``seed``."""

    def __init__(self, data: GlowData, latent_shape: Sequence[int], seed: int) -> None:
        g = torch.Generator().manual_seed(seed + 2)
        self.fixed = data.to_model(data.test.images[:EVAL_BATCH], g)
        self.z = torch.randn((EVAL_BATCH, *latent_shape), generator=g, dtype=torch.float64).to(data.device,
                                                                                               data.dtype)
        self.seed = seed


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


def snapshot(run: Run, model: Glow, data: GlowData, inputs: EvalInputs, step: int, clock: Clock) -> dict[str, Any]:
    """Evaluate ``model`` after ``step`` updates (see :func:`evaluate`), keep it as ``checkpoints/step_<N>.pt`` for
    the analysis and draw its samples into ``plots/samples_<N>.png``; returns the values (``seconds`` included,
    the samples not)."""
    values = evaluate(model, data, inputs.fixed, inputs.z, inputs.seed)
    samples = values.pop("samples")
    run.save_checkpoint(f"step_{step}", model=model.state_dict(), step=step)
    if run.main:
        bad = int((~torch.isfinite(samples.flatten(1)).all(dim=1)).sum())
        state = f"NaNs ({bad} of {len(samples)} samples not finite)" if bad else "Good"
        image_grid(samples[:32].double().cpu(), out=run.plot_dir / f"samples_{step:06d}.png", ncol=8,
                   value_range=(-0.5, 0.5), title=f"step {step}: {state}")
    return {"seconds": clock.elapsed(), **values}


def last_eval(run: Run, keys: Sequence[str]) -> dict[str, float]:
    """The ``keys`` of the last row of ``eval_log.csv`` that are filled, as floats."""
    rows = read_csv(run.path / "eval_log.csv")
    last = rows[-1] if rows else {}
    return {key: float(last[key]) for key in keys if last.get(key, "") != ""}


def training_plot(folder: Path, panels: Mapping[str, Mapping[str, tuple[str, str]]], logy: Sequence[bool]) -> None:
    """``plots/training.png`` of a model run: ``panels`` maps a title to curves ``label -> (log name, column)`` read
    from ``<log name>.csv`` over its ``step`` column."""
    logs = {name: read_csv(folder / f"{name}.csv") for name in ("train_log", "eval_log")}

    def column(log: str, key: str) -> tuple[list[float], list[float]]:
        pairs = [(float(r["step"]), float(r[key])) for r in logs[log] if r.get(key, "") != ""]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    line_panels({title: {label: column(*where) for label, where in curves.items()} for title, curves in panels.items()},
                folder / "plots" / "training.png", xlabel="training step", logy=list(logy), title=folder.name)
