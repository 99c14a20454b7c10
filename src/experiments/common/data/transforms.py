"""Image tensor transforms: padding and resizing, conversion to float, and reproducible augmentation.

All functions take batches (N, C, H, W). Random transforms draw from an explicit ``torch.Generator`` (see
:func:`experiments.common.data.make_generator`), so the same generator state gives the same output.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "pad_images",
    "pad_to_multiple",
    "resize_images",
    "to_float",
    "dequantize",
    "normalize",
    "random_crop",
    "random_hflip",
    "augment",
]


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def _check_batch(images: torch.Tensor) -> None:
    if images.dim() != 4:
        raise ValueError(f"expected a batch of images (N, C, H, W), got shape {tuple(images.shape)}")


def pad_images(images: torch.Tensor, size: int | Sequence[int], value: float = 0) -> torch.Tensor:
    """Pad images with ``value`` to ``size`` (H, W), centred (odd extra pixels go to the bottom/right)."""
    _check_batch(images)
    height, width = _pair(size)
    h, w = images.shape[-2:]
    if height < h or width < w:
        raise ValueError(f"cannot pad {h}x{w} images to the smaller size {height}x{width}")
    top, left = (height - h) // 2, (width - w) // 2
    return F.pad(images, (left, width - w - left, top, height - h - top), value=value)


def pad_to_multiple(images: torch.Tensor, multiple: int, value: float = 0) -> torch.Tensor:
    """Pad images so height and width are divisible by ``multiple`` (e.g. 2**levels; 28 -> 32 for 4)."""
    if multiple < 1:
        raise ValueError(f"multiple must be positive, got {multiple}")
    h, w = images.shape[-2:]
    return pad_images(images, (-(-h // multiple) * multiple, -(-w // multiple) * multiple), value)


def resize_images(images: torch.Tensor, size: int | Sequence[int], mode: str = "bilinear") -> torch.Tensor:
    """Resize images to ``size`` (H, W); uint8 input is rounded back to uint8."""
    _check_batch(images)
    smooth = mode in ("bilinear", "bicubic")
    x = images.float() if not images.is_floating_point() else images
    out = F.interpolate(x, size=_pair(size), mode=mode, **({"align_corners": False, "antialias": True} if smooth
                                                                else {}))
    if images.dtype == torch.uint8:
        return out.round().clamp(0, 255).to(torch.uint8)
    return out.to(images.dtype)


def to_float(
    images: torch.Tensor, levels: int, low: float = 0.0, high: float = 1.0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Map discrete values 0..levels-1 linearly onto [low, high]."""
    if levels < 2:
        raise ValueError(f"levels must be at least 2, got {levels}")
    x = images.to(dtype)
    return x * ((high - low) / (levels - 1)) + low


def dequantize(
    images: torch.Tensor, levels: int, generator: torch.Generator, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Uniform dequantization: (x + u) / levels with u ~ U[0, 1), giving values in [0, 1)."""
    noise = torch.rand(images.shape, generator=generator, dtype=dtype).to(images.device)
    return (images.to(dtype) + noise) / levels


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Per-channel standardisation (x - mean) / std."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    if m.shape[1] not in (1, x.shape[1]) or s.shape[1] not in (1, x.shape[1]):
        raise ValueError(f"mean/std have {m.shape[1]}/{s.shape[1]} entries for {x.shape[1]} channels")
    return (x - m) / s


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator, value: float = 0) -> torch.Tensor:
    """Zero-pad by ``padding`` on each side, then crop each image back to its size at a random offset."""
    _check_batch(images)
    if padding == 0:
        return images.clone()
    n, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4, value=value)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(images.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(images.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, :, None]  # (N, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, :]  # (N, 1, W)
    batch = torch.arange(n, device=images.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def random_hflip(images: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Flip each image left-right with probability ``p``."""
    _check_batch(images)
    flip = (torch.rand(images.shape[0], generator=generator) < p).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def augment(images: torch.Tensor, generator: torch.Generator, crop_padding: int = 4, flip: bool = True) -> torch.Tensor:
    """Random crop with padding, then a random horizontal flip (the CIFAR training augmentation)."""
    out = random_crop(images, crop_padding, generator) if crop_padding else images
    return random_hflip(out, generator) if flip else out
