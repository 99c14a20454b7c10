"""Image flows for the OOD and attack studies behind one interface, from any source, and the embedded model zoo.

:class:`ImageFlow` wraps a trained flow with what a study needs to feed it: its input space (``x = k / d + o`` for
grey levels ``k``: Glow's ``[-0.5, 0.5)`` with ``d = L``, ``o = -0.5``; a Residual Flow's ``[0, 1]`` with ``o = 0``),
its image shape, the number of grey levels of its data (for bits/dim) and the paper's clipping of synthetic
inputs. Sources (:func:`load_image_flows`):

- a run folder of ``python -m experiments.glow`` (a study folder with ``models/<name>/``, or one model folder):
  the last snapshot of each Glow;
- a run folder of :func:`experiments.common.resflow.train_resflow`: its Residual Flow;
- y0ast's pre-trained Glow (the ``glow/`` folder, the ``.pt`` file or ``glow.zip``):
  :func:`invertible.loaders.load_y0ast_glow`, input ``k / 256 - 0.5`` as y0ast's preprocessing;
- rtqichen's pre-trained Residual Flow (a ``.pth`` file): :func:`invertible.loaders.load_resflow`, input
  ``k / 255`` (``ToTensor``), as the paper's OOD script feeds it.

:func:`embedded_zoo` trains (or reuses) the small models of the studies on the embedded data: an affine Glow
(Glow's scale ``sigmoid(h + 2)``, as the pre-trained Glow), an additive Glow and a bounded affine Glow
(``0.5 sigmoid(h + 2) + 0.5``, the paper's modified affine) through ``python -m experiments.glow`` (run by name,
:func:`experiments.common.study.call`), and a Residual Flow through :mod:`experiments.common.resflow`.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor

from invertible.layers import LogDetEstimator, ResidualBlock
from invertible import InverseOptions
from invertible.loaders import load_resflow, load_y0ast_glow
from invertible.models import Flow, bits_per_dim

from .data import DATASETS, dataset_names, load_dataset, pad_images, resize_images
from .glow.model import find_model_runs, load_run
from .resflow import is_resflow_run, load_resflow_run, train_resflow
from .study import call

__all__ = ["FlowNotFound", "GLOW_MODELS", "ImageFlow", "ZOO_PRESETS", "add_flow_args", "convert_images",
           "embedded_zoo", "load_image_flows", "slug", "study_flows", "unique_names", "without_logdet"]

_log = logging.getLogger(__name__)

#: The zoo's Glow models: experiments.glow model name -> label in tables.
GLOW_MODELS = {"affine-sigmoid": "affine Glow", "additive": "additive Glow", "affine-bounded": "bounded affine Glow"}
#: Labels of the models in tables, in table order.
RESFLOW_LABEL = "Residual Flow"

#: Flags of ``python -m experiments.glow`` per zoo preset: ``default`` (digits: 920 steps, 5-14 minutes per
#: model), ``quick`` (seconds; the tests).
ZOO_PRESETS: dict[str, list[str]] = {
    "default": ["--n-levels", "2", "--depth", "4", "--hidden-channels", "32", "--epochs", "40", "--batch-size", "64",
                "--eval-every", "460"],
    "quick": ["--preset", "quick", "--eval-every", "1000"],
}


class FlowNotFound(FileNotFoundError):
    """A ``--model`` path that holds no flow this module can load."""


def add_flow_args(parser: argparse.ArgumentParser, what: str) -> None:
    """The flags of the studies that evaluate trained image flows (``ood``, ``attack``): which flows (``--model`` or
    the embedded zoo), the data set and where its files and the zoo's runs are; ``what`` completes the help of
    ``--model`` (e.g. "to attack")."""
    group = parser.add_argument_group("flows and data")
    group.add_argument("--model", action="append", default=None, metavar="[LABEL=]PATH",
                       help=f"A model {what} (repeatable): a run folder of experiments.glow or of the zoo's Residual "
                            "Flow, y0ast's Glow folder or glow.zip, or rtqichen's .pth; default: the embedded zoo.")
    group.add_argument("--dataset", default="digits", choices=dataset_names(),
                       help="In-distribution data set: the zoo's training data and the natural images (default: "
                            "%(default)s).")
    group.add_argument("--data-dir", type=Path, default=Path("data"),
                       help="Folder searched for data set files (default: %(default)s).")
    group.add_argument("--zoo-dir", type=Path, default=None,
                       help="Where the zoo's runs live and are reused, shared by experiments.ood and "
                            "experiments.attack (default: runs/zoo/<dataset>-<preset>).")


def slug(name: str) -> str:
    """A file-name part for a model label: ``"affine Glow (y0ast)"`` -> ``"affine_glow_y0ast"``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _requantize(images: Tensor, levels_from: int, levels_to: int) -> Tensor:
    if levels_from == levels_to:
        return images
    x = images.double() * ((levels_to - 1) / (levels_from - 1))
    return x.round().clamp(0, levels_to - 1).to(torch.uint8)


def convert_images(images: Tensor, levels_from: int, shape: Sequence[int], levels_to: int,
                   padded: Sequence[int] | None = None) -> Tensor:
    """uint8 images of another set in a model's data format: channels (grey = mean of RGB, RGB = grey repeated),
    size (bilinear), grey levels (linear map, rounded) and zero padding to ``padded``."""
    c, h, w = shape
    if images.shape[1] != c:
        images = (images.double().mean(dim=1, keepdim=True).round().to(torch.uint8) if c == 1
                  else images.expand(-1, c, -1, -1).contiguous())
    if tuple(images.shape[-2:]) != (h, w):
        images = resize_images(images, (h, w))
    images = _requantize(images, levels_from, levels_to)
    if padded is not None and tuple(padded[-2:]) != (h, w):
        images = pad_images(images, tuple(padded[-2:]))
    return images


@dataclass
class ImageFlow:
    """A trained image flow and its input conventions (see the module docstring).

    Attributes:
        name: label in tables and plots.
        model: the flow, in eval mode.
        family: ``"glow"`` (analytic inverse) or ``"resflow"`` (fixed-point inverse).
        levels: grey levels of its training data (the discretisation term of bits/dim).
        shape: ``(C, H, W)`` of its input (after padding).
        data_shape: ``(C, H, W)`` of its data before padding.
        denominator, offset: ``x = k / denominator + offset`` for grey levels ``k``.
        dataset: name of its in-distribution data set (for :func:`experiments.common.data.load_dataset`), if known.
        source: where it came from.
        clip_rademacher: whether synthetic Rademacher inputs are clipped like the others (the paper: for Glow, not
            for the Residual Flow).
    """

    name: str
    model: Flow
    family: str
    levels: int
    shape: tuple[int, int, int]
    data_shape: tuple[int, int, int]
    denominator: float
    offset: float
    dataset: str | None
    source: str
    clip_rademacher: bool = True
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def from_levels(self, images: Tensor, levels_from: int) -> Tensor:
        """Model input of uint8 images with ``levels_from`` grey levels (converted to this model's format)."""
        k = convert_images(images, levels_from, self.data_shape, self.levels, self.shape)
        return (k.double() / self.denominator + self.offset).to(self.dtype)

    def from_unit(self, unit: Tensor, kind: str = "") -> Tensor:
        """Model input of unit-range values (synthetic sets), clipped to ``[0.01, 0.99]`` as the paper does."""
        if kind != "rademacher" or self.clip_rademacher:
            unit = unit.clamp(0.01, 0.99)
        return (unit + self.offset).to(self.dtype)

    def to_unit(self, x: Tensor) -> Tensor:
        """Model input back to the unit range (for pictures)."""
        return x - self.offset

    @property
    def unit_range(self) -> tuple[float, float]:
        """The model-space values that show as black and white."""
        return (self.offset, self.offset + 1.0)

    def bits_per_dim(self, x: Tensor) -> Tensor:
        """Bits per dimension of ``x`` with the discretisation term of the data's grey levels."""
        return bits_per_dim(self.model.log_prob(x), x[0].numel(), self.levels)


@contextmanager
def without_logdet(model: Flow) -> Iterator[None]:
    """Inside the block, residual blocks estimate their log-det with a single series term (one vector-Jacobian
    product) instead of their configured estimator: for reconstructions, which discard the log-det, this saves
    most of the cost of a Residual Flow's forward and inverse (residual-flows' OOD script computes and drops it).
    ``x``, ``f(x)`` and ``f^-1`` are unchanged."""
    blocks = [m for m in model.modules() if isinstance(m, ResidualBlock)]
    saved = [b.estimator for b in blocks]
    cheap = LogDetEstimator("series", n_terms=1)
    for b in blocks:
        b.estimator = cheap
    try:
        yield
    finally:
        for b, est in zip(blocks, saved):
            b.estimator = est


# ----------------------------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------------------------
def _glow_flows(folder: Path) -> list[ImageFlow]:
    flows = []
    for path in find_model_runs(folder):
        run = load_run(path)
        args = run.args
        spec = DATASETS.get(args.dataset)
        levels = int(getattr(args, "levels", None) or (spec.levels if spec else 256))
        data_shape = tuple(spec.shape) if spec else run.shape
        name = GLOW_MODELS.get(run.name, f"{run.name} Glow")
        flows.append(ImageFlow(name, run.load(), "glow", levels, run.shape, data_shape, float(levels), -0.5,
                               args.dataset, f"experiments.glow run {path}", info={"run": str(path)}))
    return flows


def _resflow_flow(folder: Path, name: str | None) -> ImageFlow:
    run = load_resflow_run(folder)
    dataset = run.config["dataset"]
    spec = DATASETS.get(dataset)
    shape = tuple(run.config["shape"])
    return ImageFlow(name or RESFLOW_LABEL, run.load(), "resflow", run.levels, shape,  # type: ignore[arg-type]
                     tuple(spec.shape) if spec else shape, float(run.levels), 0.0, dataset,  # type: ignore[arg-type]
                     f"experiments.common.resflow run {folder}", clip_rademacher=False, info={"run": str(folder)})


def load_image_flows(spec: str, *, device: torch.device | str = "cpu") -> list[ImageFlow]:
    """The flows named by ``spec``: ``PATH`` or ``LABEL=PATH`` (see the module docstring for what PATH can be)."""
    label, _, path_text = spec.rpartition("=") if "=" in spec else ("", "", spec)
    path = Path(path_text)
    if not path.exists():
        raise FlowNotFound(f"--model {spec}: no such file or folder")
    if path.is_dir() and is_resflow_run(path):
        flows = [_resflow_flow(path, label or None)]
    elif path.is_dir() and ((path / "glow_affine_coupling.pt").is_file()):
        flows = [_y0ast(path, label)]
    elif path.is_file() and path.suffix == ".zip":
        flows = [_y0ast(path, label)]
    elif path.is_dir() and ((path / "config.json").is_file() or (path / "models").is_dir()):
        flows = _glow_flows(path)
        if label and len(flows) == 1:
            flows[0].name = label
    elif path.is_file():
        model = load_resflow(path, inverse=InverseOptions(on_failure="return"))
        flows = [ImageFlow(label or "pre-trained Residual Flow", model, "resflow", 256, (3, 32, 32), (3, 32, 32),
                           255.0, 0.0, "cifar10", f"rtqichen/residual-flows checkpoint {path}",
                           clip_rademacher=False)]
    else:
        raise FlowNotFound(f"--model {spec}: {path} is neither a run folder, a y0ast Glow folder nor a "
                                "residual-flows checkpoint")
    for flow in flows:
        flow.model.to(device)
    return flows


def unique_names(flows: list[ImageFlow]) -> list[ImageFlow]:
    """Give flows that share a label distinct ones (``label (2)``, ...), in place; returns ``flows``."""
    seen: dict[str, int] = {}
    for flow in flows:
        seen[flow.name] = seen.get(flow.name, 0) + 1
        if seen[flow.name] > 1:
            flow.name = f"{flow.name} ({seen[flow.name]})"
    return flows


def _y0ast(path: Path, label: str) -> ImageFlow:
    model = load_y0ast_glow(path)
    shape: tuple[int, int, int] = tuple(model.in_shape)  # type: ignore[assignment]
    return ImageFlow(label or "pre-trained Glow", model, "glow", 256, shape, shape, 256.0, -0.5, "cifar10",
                     f"y0ast/Glow-PyTorch checkpoint {path}")


# ----------------------------------------------------------------------------------------------------------------
# The embedded zoo
# ----------------------------------------------------------------------------------------------------------------
def _glow_done(folder: Path, names: Sequence[str]) -> bool:
    for name in names:
        metrics = folder / "models" / name / "metrics.json"
        if not metrics.is_file() or json.loads(metrics.read_text()).get("status") != "completed":
            return False
    return True


def embedded_zoo(folder: str | Path, *, dataset: str = "digits", data_dir: Path = Path("data"),
                 preset: str = "default", glow_models: Sequence[str] = tuple(GLOW_MODELS), resflow: bool = True,
                 seed: int = 0) -> list[ImageFlow]:
    """Train, finish or reuse the zoo's models on ``dataset`` in ``folder`` (``glow/`` and ``resflow/``).

    Runs that completed with the same settings are reused; interrupted ones resume.
    """
    folder = Path(folder)
    load_dataset(dataset, "train", data_dir=data_dir)  # DatasetNotFound (with how to get it) before any training
    flows: list[ImageFlow] = []
    if glow_models:
        glow_dir = folder / "glow"
        if not _glow_done(glow_dir, glow_models):
            argv = ["--dataset", dataset, "--data-dir", str(data_dir), "--models", *glow_models,
                    "--flow-permutation", "lu", "--no-analyze", "--seed", str(seed), "--out", str(glow_dir),
                    *ZOO_PRESETS[preset]]
            if (glow_dir / "config.json").is_file():
                argv.append("--resume")
            status = call("glow", argv)
            if status != 0:
                raise RuntimeError(f"python -m experiments.glow {' '.join(argv)} failed with status {status}")
        by_name = {Path(f.info["run"]).name: f for f in _glow_flows(glow_dir)}
        flows += [by_name[name] for name in glow_models]
    if resflow:
        _log.info("training (or reusing) the Residual Flow in %s", folder / "resflow")
        train_resflow(folder / "resflow", dataset=dataset, data_dir=data_dir,
                      preset="quick" if preset == "quick" else "default", seed=seed)
        flows.append(_resflow_flow(folder / "resflow", None))
    return flows


def study_flows(args: Any, device: torch.device | str) -> list[ImageFlow]:
    """The flows named by ``--model``, or the embedded zoo in ``--zoo-dir`` (default
    ``runs/zoo/<dataset>-<preset>``; trained on first use, then reused)."""
    if args.model:
        return unique_names([f for spec in args.model for f in load_image_flows(spec, device=device)])
    zoo = args.zoo_dir or Path("runs/zoo") / f"{args.dataset}-{args.preset}"
    return embedded_zoo(zoo, dataset=args.dataset, data_dir=args.data_dir, preset=args.preset,
                        seed=args.seed)
