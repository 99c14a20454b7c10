"""Glow's data: discrete images scaled to ``[-0.5, 0.5)`` with uniform dequantisation, and the probe sets of the
stability analysis (Gaussian and Rademacher noise, an out-of-distribution set).

An image with ``L`` grey levels ``k in {0, ..., L-1}`` enters the flow as ``x = (k + u) / L - 0.5`` with
``u ~ U[0, 1)`` (the original: ``k / 256 - 0.5`` plus ``U(0, 1/256)``); bits per dimension then carry the
discretisation term ``D log L`` (:func:`invertible.models.bits_per_dim` with ``levels=L``). Images are zero-padded
so that their side is divisible by ``2^levels``.
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..data import (DatasetNotFound, ImageData, load_dataset, pad_images, pad_to_multiple, random_crop,
                    random_hflip, resize_images)

__all__ = ["GlowData", "OOD_PREFERENCES", "load", "load_data", "noise_images", "ood_images", "photo_patches",
           "requantize"]

_log = logging.getLogger(__name__)

#: The OOD set ``--ood auto`` picks per data set: the first that can be loaded offline. ``photos`` always can.
OOD_PREFERENCES: dict[str, tuple[str, ...]] = {
    "digits": ("fashion-mnist", "photos"),
    "fashion-mnist": ("mnist", "digits"),
    "fashion-mnist-16": ("mnist", "digits"),
    "mnist": ("fashion-mnist", "digits"),
    "cifar10": ("svhn", "photos"),
    "svhn": ("cifar10", "photos"),
}


@dataclass
class GlowData:
    """Train and test images (uint8 levels, padded), with the conversions between levels and the flow's input."""

    train: ImageData
    test: ImageData
    original_shape: tuple[int, int, int]
    augment: bool
    dtype: torch.dtype
    device: torch.device

    @property
    def levels(self) -> int:
        """Number of grey levels ``L`` (17 for the embedded digits, 256 for 8-bit sets)."""
        return self.train.levels

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of a padded image (the flow's input)."""
        return self.train.shape

    @property
    def dims(self) -> int:
        return math.prod(self.shape)

    def to_model(self, levels: Tensor, generator: torch.Generator | None) -> Tensor:
        """Levels ``k`` (any numeric dtype) -> ``(k + u) / L - 0.5`` on the run's device; ``u = 0`` without a
        generator (the original's analysis feeds undithered images)."""
        k = levels.to(self.dtype)
        if generator is not None:
            k = k + torch.rand(k.shape, generator=generator, dtype=self.dtype)
        return (k / self.levels - 0.5).to(self.device)

    def to_levels(self, x: Tensor) -> Tensor:
        """The flow's input space back to (continuous) grey levels, ``(x + 0.5) L``: the unit of the original's
        pixel distances."""
        return (x + 0.5) * self.levels

    def batch(self, indices: Tensor, generator: torch.Generator) -> Tensor:
        """Training images at ``indices``: augmented (if enabled) and dequantised with ``generator``."""
        images = self.train.images[indices]
        if self.augment:
            images = random_crop(images, max(1, round(0.1 * self.original_shape[-1])), generator)
            images = random_hflip(images, generator)
        return self.to_model(images, generator)

    def init_batch(self, seed: int, size: int) -> Tensor:
        """A seeded, dequantised batch of training images for the data-dependent ActNorm initialisation."""
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self.train), generator=g)[:size]
        return self.to_model(self.train.images[order], g)


def load(dataset: str, *, data_dir: Path, download: bool, levels_of_flow: int, augment: bool,
         dtype: torch.dtype, device: torch.device) -> GlowData:
    """Load ``dataset`` and pad its images to a multiple of ``2^levels_of_flow``."""
    train = load_dataset(dataset, "train", data_dir=data_dir, download=download)
    test = load_dataset(dataset, "test", data_dir=data_dir, download=download)
    shape = train.shape
    multiple = 2**levels_of_flow
    train, test = (_pad(d, multiple) for d in (train, test))
    return GlowData(train, test, shape, augment, dtype, device)


def load_data(args: argparse.Namespace, device: torch.device) -> GlowData:
    """The data of a run with the Glow flags ``args`` (data set, levels, augmentation, dtype), padded for its number
    of levels."""
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    data = load(args.dataset, data_dir=args.data_dir, download=args.download, levels_of_flow=args.n_levels,
                augment=bool(args.augment), dtype=dtype, device=device)
    subset = getattr(args, "train_subset", None)
    if subset:
        data.train = data.train.subset(slice(0, subset))
    return data


def _pad(data: ImageData, multiple: int) -> ImageData:
    images = pad_to_multiple(data.images, multiple)
    if images.shape == data.images.shape:
        return data
    return ImageData(images, data.labels, data.name, data.split, data.num_classes, data.levels, data.source,
                     data.class_names)


# ----------------------------------------------------------------------------------------------------------------
# Probe sets
# ----------------------------------------------------------------------------------------------------------------
def requantize(images: Tensor, levels_from: int, levels_to: int) -> Tensor:
    """Map levels ``0..levels_from-1`` linearly onto ``0..levels_to-1`` (rounded), as uint8."""
    x = images.double() * ((levels_to - 1) / (levels_from - 1))
    return x.round().clamp(0, levels_to - 1).to(torch.uint8)


def noise_images(kind: str, n: int, data: GlowData, generator: torch.Generator) -> Tensor:
    """The original's noise probes in grey levels (uint8), shape ``(n, *data.shape)``.

    - ``gaussian``: ``clip(0.5 + N(0, 1), 0, 1)`` per pixel, quantised to the data's levels;
    - ``rademacher``: each pixel the lowest or the highest level with probability 1/2.
    """
    top = data.levels - 1
    if kind == "gaussian":
        values = (0.5 + torch.randn((n, *data.shape), generator=generator, dtype=torch.float64)).clamp(0, 1)
        return (values * top).round().to(torch.uint8)
    if kind == "rademacher":
        return ((torch.rand((n, *data.shape), generator=generator) < 0.5).to(torch.uint8) * top).to(torch.uint8)
    raise ValueError(f"unknown noise kind {kind!r}; use gaussian or rademacher")


def photo_patches(n: int, shape: tuple[int, int, int], generator: torch.Generator) -> Tensor:
    """``n`` random square crops of the two photos shipped with scikit-learn (china.jpg, flower.jpg), resized to
    ``shape`` (grey for one channel), as 8-bit levels (uint8)."""
    from PIL import Image  # a dependency of matplotlib
    import sklearn

    folder = Path(sklearn.__file__).parent / "datasets" / "images"
    photos = []
    for name in ("china.jpg", "flower.jpg"):
        with Image.open(folder / name) as image:
            photos.append(torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1))
    c, h, w = shape
    out = []
    for i in range(n):
        photo = photos[i % len(photos)]
        side = int(torch.randint(min(photo.shape[1:]) // 8, min(photo.shape[1:]) // 2, (1,), generator=generator))
        top = int(torch.randint(0, photo.shape[1] - side + 1, (1,), generator=generator))
        left = int(torch.randint(0, photo.shape[2] - side + 1, (1,), generator=generator))
        out.append(resize_images(photo[None, :, top:top + side, left:left + side], (h, w))[0])
    images = torch.stack(out)
    if c == 1:
        images = images.double().mean(dim=1, keepdim=True).round().to(torch.uint8)
    return images


def _convert(images: Tensor, levels_from: int, data: GlowData) -> Tensor:
    """Images of another set -> the data's channels, unpadded size, levels and padding."""
    c, h, w = data.original_shape
    if images.shape[1] != c:
        images = (images.double().mean(dim=1, keepdim=True).round().to(torch.uint8) if c == 1
                  else images.expand(-1, c, -1, -1).contiguous())
    if tuple(images.shape[-2:]) != (h, w):
        images = resize_images(images, (h, w))
    images = requantize(images, levels_from, data.levels)
    return pad_images(images, data.shape[-2:]) if tuple(images.shape[-2:]) != data.shape[-2:] else images


def ood_images(name: str, n: int, data: GlowData, generator: torch.Generator, *, data_dir: Path
               ) -> tuple[Tensor, str] | None:
    """``n`` images of the OOD set ``name`` in the data's format (levels, channels, padded size), and a description.

    ``name`` is a data set name, ``photos``, ``auto`` (the first available of :data:`OOD_PREFERENCES`) or
    ``none`` (returns ``None``). A named set that cannot be loaded raises :class:`DatasetNotFound`.
    """
    if name == "none":
        return None
    candidates = OOD_PREFERENCES.get(data.train.name, ("photos",)) if name == "auto" else (name,)
    for candidate in candidates:
        if candidate == data.train.name:
            continue
        if candidate == "photos":
            images = photo_patches(n, data.original_shape, generator)
            return _convert(images, 256, data), "photos (crops of scikit-learn's china.jpg and flower.jpg)"
        try:
            other = load_dataset(candidate, "test", data_dir=data_dir)
        except DatasetNotFound:
            if name != "auto":
                raise
            _log.info("OOD set %s not available; trying the next one", candidate)
            continue
        order = torch.randperm(len(other), generator=generator)[:n]
        return _convert(other.images[order], other.levels, data), f"{candidate} (test split, {other.source})"
    return None
