"""Rebuild a finished (or interrupted) run's data and model from its folder, e.g. to measure a checkpoint again."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from invertible.checkpoint import load_checkpoint
from invertible.models import INNClassifier

from .data import ClassifierData, load
from .train import build_model

__all__ = ["load_run"]


def load_run(folder: str | Path, checkpoint: str = "latest", device: str | torch.device = "cpu"
             ) -> tuple[argparse.Namespace, ClassifierData, INNClassifier]:
    """``(args, data, model)`` of the run in ``folder`` with the weights of ``checkpoints/<checkpoint>.pt``
    (``latest``, ``init`` or ``iter_<N>``), in eval mode.

    Example::

        args, data, model = load_run("runs/classification/digits_coupling=affine_permutation=conv")
    """
    from . import STUDY

    folder = Path(folder)
    stored = json.loads((folder / "config.json").read_text())["args"]
    args = STUDY.build_parser().parse_args(["--out", str(folder)])
    for key, value in stored.items():
        setattr(args, key, value)
    args.data_dir, args.out, args.save_dir = Path(args.data_dir), Path(args.out), Path(args.save_dir)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    device = torch.device(device)
    data = load(args, device, dtype)
    model = build_model(args, data.shape, data.train.num_classes).to(device, dtype)
    parts = load_checkpoint(folder / "checkpoints" / f"{checkpoint}.pt", map_location=device)
    state = parts["state"]["model"] if "state" in parts else parts["model"]
    model.load_state_dict(state)
    return args, data, model.eval()
