"""The classifier's data: padded, normalised images, seeded augmentation, and the fixed test batch."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch import Tensor

from ..common.data import ImageData, load_dataset, normalize, pad_images, random_crop, random_hflip, to_float

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "ClassifierData", "load"]

#: The paper's CIFAR-10 normalisation constants.
CIFAR10_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR10_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)

#: The paper's fixed visualisation batch: test images 192..319 (the first 128 where the test set is smaller).
FIXED = slice(192, 320)


@dataclass
class ClassifierData:
    """Train and test images (uint8, padded), the normalisation and the augmentation of one run."""

    train: ImageData
    test: ImageData
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int
    hflip: bool
    dtype: torch.dtype
    device: torch.device

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one (padded) image."""
        return self.train.shape

    def to_model(self, images: Tensor) -> Tensor:
        """uint8 images -> normalised float tensors on the run's device, in the run's dtype."""
        x = to_float(images.to(self.device), self.train.levels, dtype=self.dtype)
        return normalize(x, self.mean, self.std)

    def to_pixels(self, x: Tensor) -> Tensor:
        """Normalised images back to ``[0, 1]`` pixel units (for pictures)."""
        m = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        s = torch.as_tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return x * s + m

    def augmented(self, indices: Tensor, generator: torch.Generator) -> Tensor:
        """The training images at ``indices``, randomly cropped and flipped with ``generator``, normalised."""
        images = self.train.images[indices]
        if self.crop_padding:
            images = random_crop(images, self.crop_padding, generator)
        if self.hflip:
            images = random_hflip(images, generator)
        return self.to_model(images)

    def fixed_batch(self) -> tuple[Tensor, Tensor]:
        """The fixed test batch used for reconstruction logs, pictures and SVDs (images, labels)."""
        n = len(self.test)
        window = FIXED if n >= FIXED.stop else slice(0, min(128, n))
        return self.to_model(self.test.images[window]), self.test.labels[window].to(self.device)

    def check_batch(self, size: int = 128) -> tuple[Tensor, Tensor]:
        """The fixed batch of the memory-saving gradient checks: the first ``size`` training images, unaugmented."""
        return self.to_model(self.train.images[:size]), self.train.labels[:size].to(self.device)

    def init_batch(self, seed: int, size: int = 512) -> Tensor:
        """A seeded random batch of training images for the data-dependent ActNorm initialisation."""
        order = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(seed))
        return self.to_model(self.train.images[order[:size]])


def _pad(data: ImageData, size: int | None) -> ImageData:
    if size is None or data.images.shape[-1] == size and data.images.shape[-2] == size:
        return data
    return ImageData(pad_images(data.images, size), data.labels, data.name, data.split, data.num_classes,
                     data.levels, data.source, data.class_names)


def load(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> ClassifierData:
    """Load the data set of ``args`` with its padding, normalisation and augmentation settings."""
    train = load_dataset(args.dataset, "train", data_dir=args.data_dir, download=args.download)
    test = load_dataset(args.dataset, "test", data_dir=args.data_dir, download=args.download)
    if args.dataset == "cifar10":
        mean, std = CIFAR10_MEAN, CIFAR10_STD
    else:  # per-channel statistics of the (unpadded) training images
        x = to_float(train.images, train.levels, dtype=torch.float64)
        mean = tuple(float(v) for v in x.mean(dim=(0, 2, 3)))
        std = tuple(float(v) for v in x.std(dim=(0, 2, 3)))
    if getattr(args, "train_subset", None):
        train = train.subset(slice(0, args.train_subset))
    if getattr(args, "test_subset", None):
        test = test.subset(slice(0, args.test_subset))
    train, test = _pad(train, args.pad_to), _pad(test, args.pad_to)
    return ClassifierData(train, test, mean, std, args.crop_padding, args.hflip, dtype, device)
