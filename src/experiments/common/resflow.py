"""A small Residual Flow trained by maximum likelihood on images: the residual model of the OOD and attack studies.

residual-flows' recipe at a CPU's scale: dequantised images ``x = (k + u) / L`` in ``[0, 1]``, the logit transform
(alpha 0.05), ``levels`` of (residual block, ActNorm) with a squeeze between levels and a fully connected tail,
LipSwish branches spectrally normalised to ``coeff`` 0.98, the unbiased Russian-roulette log-det estimator with the
Neumann-series gradient in training, Adam with linear warm-up, gradient-norm clipping at 1 and an exponential moving
average of the weights (0.999) that is what gets saved and evaluated. The test bits/dim at the end are taken at the
bin centres ``(k + 1/2) / L`` with the exact log-det (brute force; the images are small).

A run folder (:mod:`experiments.common.runs`) holds ``config.json`` (``kind: "resflow"``), ``train_log.csv``,
``metrics.json`` (``status: "completed"`` when done), ``checkpoints/latest.pt`` (resumable) and
``checkpoints/model.pt`` (the EMA weights). :func:`load_resflow_run` rebuilds the model.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping

import torch

from invertible.checkpoint import load_checkpoint
from invertible import InverseOptions, SpectralNormOptions
from invertible.models import ResidualFlow, bits_per_dim, resflow_estimator

from .data import load_dataset, pad_to_multiple
from .runs import Run, RunNotFound, open_run, read_csv
from .training import Meter, ResumableLoop, Stopwatch, seed_everything

__all__ = ["RESFLOW_PRESETS", "ResflowRun", "build_resflow", "is_resflow_run", "load_resflow_run", "train_resflow"]

_log = logging.getLogger(__name__)

#: Architectures and schedules: ``default`` for the embedded digits (230 steps, 2.6 minutes of CPU; 22 minutes on
#: a shared machine), ``quick`` for the tests (seconds).
RESFLOW_PRESETS: dict[str, dict[str, Any]] = {
    "default": dict(blocks=[3, 3], hidden=32, fc_blocks=2, fc_hidden=64, epochs=10, batch_size=64, lr=1e-3,
                    warmup=50),
    "quick": dict(blocks=[1, 1], hidden=8, fc_blocks=1, fc_hidden=16, epochs=2, batch_size=128, lr=2e-3, warmup=5),
}
TRAIN_FIELDS = ["step", "epoch", "lr", "bpd", "grad_norm"]


def build_resflow(config: Mapping[str, Any], logdet: Any = None) -> ResidualFlow:
    """The run's ResidualFlow (``on_failure="return"``: a non-converging inverse is measured, not raised)."""
    return ResidualFlow(tuple(config["shape"]), blocks=tuple(config["blocks"]), hidden=config["hidden"],
                        fc_blocks=config["fc_blocks"], fc_hidden=config["fc_hidden"], logit=0.05,
                        spectral=SpectralNormOptions(coeff=0.98, atol=1e-3, rtol=1e-3),
                        logdet=logdet if logdet is not None else resflow_estimator(),
                        inverse=InverseOptions(on_failure="return"),
                        seed=config["seed"])


def is_resflow_run(folder: str | Path) -> bool:
    """Whether ``folder`` is a run folder written by :func:`train_resflow`."""
    config = Path(folder) / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("args", {}).get("kind") == "resflow"


class ResflowRun:
    """A finished run folder of :func:`train_resflow`: its config and its (EMA) model."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.config: dict[str, Any] = json.loads((path / "config.json").read_text())["args"]

    @property
    def levels(self) -> int:
        return int(self.config["levels"])

    def load(self, *, logdet: Any = "exact", dtype: torch.dtype = torch.float32) -> ResidualFlow:
        """The EMA model in eval mode (exact log-det by default: the images are small)."""
        model = build_resflow(self.config, logdet).to(dtype)
        model.load_state_dict(load_checkpoint(self.path / "checkpoints" / "model.pt")["model"])
        return model.eval()


def load_resflow_run(folder: str | Path) -> ResflowRun:
    """The finished :func:`train_resflow` run in ``folder``."""
    path = Path(folder)
    if not is_resflow_run(path):
        raise RunNotFound(f"{path} is not a run folder of a zoo Residual Flow (config.json with kind 'resflow')")
    if not (path / "checkpoints" / "model.pt").is_file():
        raise RunNotFound(f"{path} holds no checkpoints/model.pt: the run has not finished")
    return ResflowRun(path)


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.mul_(decay).add_(p.detach(), alpha=1 - decay)


def train_resflow(out: str | Path, *, dataset: str = "digits", data_dir: Path = Path("data"), preset: str = "default",
                  seed: int = 0, resume: bool = True, **overrides: Any) -> ResflowRun:
    """Train (or finish, or reuse) the Residual Flow of ``preset`` on ``dataset`` in the run folder ``out``.

    A completed run (``metrics.json`` with ``status: completed`` and the same config) is reused as it is; an
    unfinished one is resumed from its last checkpoint.
    """
    out = Path(out)
    train = load_dataset(dataset, "train", data_dir=data_dir)
    test = load_dataset(dataset, "test", data_dir=data_dir)
    settings = {**RESFLOW_PRESETS[preset], **overrides}
    multiple = 2 ** (len(settings["blocks"]) - 1)
    train_images, test_images = pad_to_multiple(train.images, multiple), pad_to_multiple(test.images, multiple)
    config = {"kind": "resflow", "dataset": dataset, "preset": preset, "seed": seed, "levels": train.levels,
              "shape": list(train_images.shape[1:]), **settings}
    metrics = out / "metrics.json"
    if metrics.is_file() and json.loads(metrics.read_text()).get("status") == "completed":
        stored = json.loads((out / "config.json").read_text())["args"]
        if all(stored.get(k) == v for k, v in config.items()):
            _log.info("reusing the finished Residual Flow run %s", out)
            return ResflowRun(out)
    run = open_run(out, config, resume=resume and (out / "config.json").is_file(),
                   overwrite=not resume and out.exists())
    try:
        _train(run, config, train_images, test_images, train.levels)
    finally:
        run.close()
    return ResflowRun(out)


def _train(run: Run, config: dict[str, Any], train_images: torch.Tensor, test_images: torch.Tensor,
           levels: int) -> None:
    seed_everything(config["seed"])
    watch = Stopwatch()
    model = build_resflow(config)
    g = torch.Generator().manual_seed(config["seed"])
    with torch.no_grad():  # data-dependent ActNorm initialisation on a dequantised batch
        order = torch.randperm(len(train_images), generator=g)[:256]
        images = train_images[order].double()
        model.train()(((images + torch.rand(images.shape, generator=g, dtype=torch.float64)) / levels).float())
    ema = copy.deepcopy(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"], betas=(0.9, 0.99))
    warmup = config["warmup"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    meter = Meter()
    loop = ResumableLoop(run, epochs=config["epochs"], seed=config["seed"], num_examples=len(train_images),
                         batch_size=config["batch_size"], checkpoint_every=200, desc="resflow")
    loop.track(model=model, ema=ema, optimizer=optimizer, scheduler=scheduler, meter=meter)
    loop.restore()
    log = run.csv("train_log", TRAIN_FIELDS)
    dims = math.prod(train_images.shape[1:])
    model.train()
    for epoch in loop.epochs():
        for step in loop.steps():
            k = train_images[step.indices].double()
            x = ((k + torch.rand(k.shape, generator=step.generator, dtype=torch.float64)) / levels).float()
            bpd = bits_per_dim(model.log_prob(x), dims, levels).mean()
            optimizer.zero_grad(set_to_none=True)
            bpd.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            if torch.isfinite(norm):
                optimizer.step()
            scheduler.step()
            _ema_update(ema, model, 0.999 if step.global_step > 100 else 0.0)
            value = float(bpd.detach())
            meter.add(count=1, bpd=value)
            log.log(step=step.global_step + 1, epoch=epoch, lr=optimizer.param_groups[0]["lr"], bpd=value,
                    grad_norm=float(norm))
            loop.set_postfix(bpd=value)
    ema.update_lipschitz(max_iter=200)
    run.save_checkpoint("model", model=ema.state_dict())
    exact = build_resflow(config, "exact")
    exact.load_state_dict(ema.state_dict())
    exact.eval()
    with torch.no_grad():
        test_bpd = torch.cat([bits_per_dim(exact.log_prob((part.double() / levels + 0.5 / levels).float()), dims,
                                           levels) for part in test_images.split(256)])
    rows = read_csv(run.path / "train_log.csv")
    tail = [float(r["bpd"]) for r in rows[-len(rows) // 10 or -1:]]
    run.update_metrics(status="completed", steps=loop.global_step, test_bpd=float(test_bpd.double().mean()),
                       train_bpd_last_tenth=sum(tail) / max(len(tail), 1),
                       parameters=sum(p.numel() for p in model.parameters()), **watch.seconds())
    _log.info("Residual Flow: test bpd %.4f after %d steps", float(test_bpd.mean()), loop.global_step)
