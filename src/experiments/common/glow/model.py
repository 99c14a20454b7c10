"""Building the Glow of a run from its flags, and loading the models and snapshots of finished run folders."""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from invertible import ActNorm
from invertible.checkpoint import load_checkpoint
from invertible.models import FlowStep, Glow

from ..runs import RunNotFound
from .options import model_spec

__all__ = ["RunModel", "Snapshot", "build_glow", "find_model_runs", "load_run", "mark_actnorm_initialized",
           "snapshots"]

_SNAPSHOT = re.compile(r"^step_(\d+)\.pt$")


def build_glow(args: argparse.Namespace | Mapping[str, Any], shape: tuple[int, int, int], model: str) -> Glow:
    """The Glow named ``model`` (see :func:`~experiments.common.glow.options.model_spec`) with the run's architecture.

    The original's layout: ActNorm, channel mixing and coupling per step; coupling networks conv3x3-ActNorm-ReLU-
    conv1x1-ActNorm-ReLU-zero-initialised conv3x3; learned split priors; optionally a learned top prior.
    """
    a = argparse.Namespace(**args) if isinstance(args, Mapping) else args
    spec = model_spec(model)
    coupling_args: dict[str, Any] = {"net_actnorm": not a.no_coupling_actnorm, "zero_init": True}
    if spec.coupling == "affine":
        coupling_args.update(scale_fn=spec.scale_fn, shift=a.affine_scale_eps, eps=a.affine_eps,
                             max_scale=a.affine_max_scale)
    step = FlowStep(hidden=a.hidden_channels, coupling=spec.coupling, permutation=a.flow_permutation,
                    actnorm_eps=a.actnorm_eps, actnorm_max_scale=a.actnorm_max_scale or None, **coupling_args)
    return Glow(shape, levels=a.n_levels, depth=a.depth, step=step, learn_top=not a.no_learn_top, seed=a.seed)


def mark_actnorm_initialized(model: torch.nn.Module) -> int:
    """Start every ActNorm of ``model`` as the identity (the original's ``--n_init_batches 0``); returns how many."""
    count = 0
    for module in model.modules():
        if isinstance(module, ActNorm):
            module.initialized.fill_(True)
            count += 1
    return count


@dataclass(frozen=True)
class Snapshot:
    """A kept model state: the number of updates it follows and its file."""

    step: int
    path: Path


def snapshots(run_dir: Path) -> list[Snapshot]:
    """The ``checkpoints/step_<N>.pt`` files of a model run, by step."""
    folder = Path(run_dir) / "checkpoints"
    found = [Snapshot(int(m.group(1)), p) for p in folder.glob("step_*.pt") if (m := _SNAPSHOT.match(p.name))]
    return sorted(found, key=lambda s: s.step)


@dataclass
class RunModel:
    """A model run folder: its arguments, the model's name and shape, and a builder of its Glow."""

    path: Path
    args: argparse.Namespace

    @property
    def name(self) -> str:
        """The run's label in tables and plots (the model name, or the FlowGAN variant)."""
        return str(getattr(self.args, "label", None) or self.args.model)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.args.shape)  # type: ignore[return-value]

    def build(self) -> Glow:
        """A fresh Glow of this run's architecture (weights from :meth:`load`)."""
        return build_glow(self.args, self.shape, self.args.model)

    def load(self, snapshot: Snapshot | None = None, device: torch.device | str = "cpu") -> Glow:
        """The Glow at ``snapshot`` (default: the last one), in eval mode, in the run's dtype."""
        snapshot = snapshot or snapshots(self.path)[-1]
        model = self.build()
        model.load_state_dict(load_checkpoint(snapshot.path, map_location="cpu")["model"])
        dtype = torch.float64 if self.args.dtype == "float64" else torch.float32
        return model.to(device, dtype).eval()


def load_run(run_dir: str | Path) -> RunModel:
    """The model run in ``run_dir`` (written by ``experiments.glow`` or ``experiments.flowgan``)."""
    path = Path(run_dir)
    config = path / "config.json"
    if not config.is_file():
        raise RunNotFound(f"{path} is not a run folder (no config.json)")
    args = argparse.Namespace(**json.loads(config.read_text())["args"])
    if getattr(args, "model", None) is None or getattr(args, "shape", None) is None:
        raise RunNotFound(f"{path} is not a single-model run folder of experiments.glow or experiments.flowgan; "
                                "pass the study folder or one of its model folders")
    if not snapshots(path):
        raise RunNotFound(f"{path} holds no snapshots (checkpoints/step_<N>.pt); the run has not evaluated yet")
    return RunModel(path, args)


def find_model_runs(folder: str | Path) -> Iterator[Path]:
    """The model run folders in a study folder (``models/<name>/``), or the folder itself if it is one."""
    folder = Path(folder)
    config = folder / "config.json"
    if config.is_file() and "model" in json.loads(config.read_text()).get("args", {}):
        yield folder
        return
    models = folder / "models"
    if not models.is_dir():
        raise RunNotFound(f"{folder} holds neither a model run (config.json with a model) nor models/<name>/")
    stored = json.loads(config.read_text())["args"] if config.is_file() else {}
    order = stored.get("models") or stored.get("variants")
    names = [n for n in (order or []) if (models / n / "config.json").is_file()]
    names += sorted(p.name for p in models.iterdir() if p.name not in names and (p / "config.json").is_file())
    for name in names:
        yield models / name
