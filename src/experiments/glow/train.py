"""Maximum-likelihood training of one Glow per model name, then the stability analysis of every snapshot."""

from __future__ import annotations

import argparse
import logging
import math
from typing import Any

import torch

from invertible.checkpoint import CheckpointError
from invertible.models import Glow, bits_per_dim

from ..common.glow.analysis import analyze_study, summary
from ..common.glow.data import GlowData, load_data
from ..common.glow.model import build_glow
from ..common.glow.training import (EvalInputs, init_actnorm, last_eval, model_args, snapshot, train_models,
                                    training_plot, zero_nonfinite_grads)
from ..common.runs import Run
from ..common.training import Clock, Meter, ResumableLoop, seed_everything
from .options import NON_RESULT

__all__ = ["EVAL_FIELDS", "TRAIN_FIELDS", "prepare", "run", "train_model"]

_log = logging.getLogger("experiments.glow")

#: Columns of ``train_log.csv`` (every step).
TRAIN_FIELDS = ["step", "epoch", "lr", "bpd", "grad_norm", "nonfinite_grad"]
#: Columns of ``eval_log.csv`` (every ``--eval-every`` steps, at step 0 and at the last step).
EVAL_FIELDS = ["step", "epoch", "seconds", "train_bpd", "test_bpd", "sample_nonfinite", "sample_max_abs", "pad",
               "sample_pad"]


def _optimizer(args: argparse.Namespace, model: torch.nn.Module) -> torch.optim.Optimizer:
    if args.optim_name == "adamax":
        return torch.optim.Adamax(model.parameters(), lr=args.lr, weight_decay=5e-5)
    return torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.5, 0.99))


def train_model(run: Run, args: argparse.Namespace, name: str, data: GlowData, device: torch.device) -> dict[str, Any]:
    """Train the Glow ``name`` by maximum likelihood in the model run folder ``run``; return its metrics."""
    seed_everything(args.seed)
    model: Glow = build_glow(args, data.shape, name).to(device, data.dtype)
    init_actnorm(model, data, args)
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
    inputs = EvalInputs(data, model.latent_shape, args.seed)
    total_steps = args.epochs * loop.steps_per_epoch

    def eval_now(step: int, epoch: int) -> None:
        values = snapshot(run, model, data, inputs, step, clock)
        eval_log.log(step=step, epoch=epoch, train_bpd=meter.means().get("bpd", math.nan), **values)
        meter.reset()
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
    metrics = last_eval(run, ("test_bpd", "train_bpd", "sample_nonfinite", "pad", "sample_pad"))
    metrics.update(status="completed", steps=loop.global_step, epochs=loop.epoch, seconds=clock.elapsed(),
                   nonfinite_grad_steps=totals.sums.get("nonfinite_grad", 0.0),
                   nonfinite_loss_steps=totals.sums.get("nonfinite_loss", 0.0),
                   parameters=sum(p.numel() for p in model.parameters()))
    run.update_metrics(**metrics)
    if run.main:
        training_plot(run.path, {
            "bits per dimension": {"train batch": ("train_log", "bpd"), "test": ("eval_log", "test_bpd")},
            "non-finite samples (share)": {"samples": ("eval_log", "sample_nonfinite")},
            "pixel distance after 9 round trips": {"test batch": ("eval_log", "pad"),
                                                   "samples": ("eval_log", "sample_pad")}},
            logy=[False, False, True])
    return dict(run.metrics)


def prepare(args: argparse.Namespace, device: torch.device) -> GlowData:
    """The data, loaded before the run folder exists (a missing data set leaves nothing behind)."""
    return load_data(args, device)


def run(study: Run, args: argparse.Namespace) -> dict[str, Any]:
    """Train every ``--models`` entry in ``<study>/models/<name>``, then analyse their snapshots."""
    data: GlowData = study.inputs
    configs = {name: model_args(args, name, data) for name in args.models}
    models = train_models(study, configs, lambda run, name: train_model(run, args, name, data, study.device),
                          NON_RESULT)
    study.update_metrics(models=models)
    rows = analyze_study(study, args, study.device)
    print(f"Glow MLE on {args.dataset}: {study.path}\n" + summary(rows, models))
    return {"models": models}
