"""Deterministic batch order and reproducible transforms."""

from __future__ import annotations

import pytest
import torch

from experiments.common.data import (
    augment,
    derive_seed,
    dequantize,
    epoch_batches,
    make_generator,
    normalize,
    pad_images,
    pad_to_multiple,
    random_crop,
    random_hflip,
    resize_images,
    shard,
    steps_per_epoch,
    to_float,
)


def test_each_epoch_visits_every_example_once_in_a_seeded_order() -> None:
    batches = list(epoch_batches(103, 10, seed=5, epoch=2))
    assert len(batches) == steps_per_epoch(103, 10) == 11 and len(batches[-1]) == 3
    assert sorted(torch.cat(batches).tolist()) == list(range(103))
    again = torch.cat(list(epoch_batches(103, 10, seed=5, epoch=2)))
    assert torch.equal(torch.cat(batches), again)
    assert not torch.equal(again, torch.cat(list(epoch_batches(103, 10, seed=5, epoch=3))))
    assert not torch.equal(again, torch.cat(list(epoch_batches(103, 10, seed=6, epoch=2))))


def test_order_does_not_depend_on_global_rng_state() -> None:
    torch.manual_seed(0)
    first = torch.cat(list(epoch_batches(50, 7, seed=1, epoch=0)))
    torch.manual_seed(99)
    torch.rand(10)
    assert torch.equal(first, torch.cat(list(epoch_batches(50, 7, seed=1, epoch=0))))


def test_resuming_mid_epoch_gives_the_remaining_batches() -> None:
    full = list(epoch_batches(64, 8, seed=3, epoch=1))
    tail = list(epoch_batches(64, 8, seed=3, epoch=1, start=5))
    assert len(tail) == 3 and all(torch.equal(a, b) for a, b in zip(full[5:], tail))


def test_drop_last_and_no_shuffle() -> None:
    batches = list(epoch_batches(10, 4, seed=0, epoch=0, shuffle=False, drop_last=True))
    assert [b.tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert steps_per_epoch(10, 4, drop_last=True) == 2
    with pytest.raises(ValueError, match="batch size must be positive"):
        steps_per_epoch(10, 0)


def test_shards_partition_the_global_batch() -> None:
    batch = torch.arange(10, 20)
    for world in (1, 2, 3, 4):
        parts = [shard(batch, r, world) for r in range(world)]
        assert torch.equal(torch.cat(parts), batch)
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(ValueError, match="rank 2 is outside 0..1"):
        shard(batch, 2, 2)


def test_derived_seeds() -> None:
    assert derive_seed(1, 2) == derive_seed(1, 2) != derive_seed(2, 1)
    assert 0 <= derive_seed(7) < 2**63
    with pytest.raises(ValueError, match="non-negative"):
        derive_seed(-1)
    a = torch.rand(5, generator=make_generator(4, 0, 3))
    assert torch.equal(a, torch.rand(5, generator=make_generator(4, 0, 3)))
    assert not torch.equal(a, torch.rand(5, generator=make_generator(4, 0, 4)))


# ----------------------------------------------------------------------------------------------------------------
def _images(n: int = 6, c: int = 1, h: int = 28, w: int = 28) -> torch.Tensor:
    return torch.randint(1, 256, (n, c, h, w), generator=make_generator(0), dtype=torch.uint8)


def test_padding_28_to_32_is_centred_zero_padding() -> None:
    x = _images()
    y = pad_images(x, 32)
    assert y.shape == (6, 1, 32, 32) and y.dtype == torch.uint8
    assert torch.equal(y[:, :, 2:30, 2:30], x)
    assert y[:, :, :2].eq(0).all() and y[:, :, 30:].eq(0).all() and y[..., :2].eq(0).all() and y[..., 30:].eq(0).all()
    assert torch.equal(pad_to_multiple(x, 8), y)
    assert torch.equal(pad_to_multiple(x, 4), x)  # 28 is already divisible by 4
    assert pad_to_multiple(_images(h=5, w=8), 4).shape[-2:] == (8, 8)
    with pytest.raises(ValueError, match="smaller size"):
        pad_images(x, 20)


def test_resize() -> None:
    flat = torch.full((2, 3, 8, 8), 77, dtype=torch.uint8)
    assert torch.equal(resize_images(flat, 16), torch.full((2, 3, 16, 16), 77, dtype=torch.uint8))
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    y = resize_images(x, (8, 8), mode="nearest")
    assert y.dtype == torch.float64 and torch.equal(y[:, :, ::2, ::2], x)


def test_to_float_and_dequantize_ranges() -> None:
    x = torch.tensor([0, 8, 16], dtype=torch.uint8).view(1, 1, 1, 3)
    assert to_float(x, 17).flatten().tolist() == [0.0, 0.5, 1.0]
    assert to_float(x, 17, -1.0, 1.0, torch.float64).flatten().tolist() == [-1.0, 0.0, 1.0]
    images = _images()
    d = dequantize(images, 256, make_generator(1), torch.float64)
    assert d.min() >= 0 and d.max() < 1 and torch.equal((d * 256).floor().to(torch.uint8), images)
    assert torch.equal(d, dequantize(images, 256, make_generator(1), torch.float64))
    with pytest.raises(ValueError, match="at least 2"):
        to_float(x, 1)


def test_normalize_per_channel() -> None:
    x = torch.ones(2, 3, 2, 2)
    y = normalize(x, (0.5, 1.0, 0.0), (0.5, 1.0, 2.0))
    assert y[:, 0].eq(1).all() and y[:, 1].eq(0).all() and y[:, 2].eq(0.5).all()
    with pytest.raises(ValueError, match="3 channels"):
        normalize(x, (0.0, 0.0), (1.0, 1.0))


def test_random_crop_takes_a_window_of_the_padded_image() -> None:
    x = _images(n=12, c=3, h=8, w=8)
    out = random_crop(x, 2, make_generator(9))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(len(x)):
        found = [(dy, dx) for dy in range(5) for dx in range(5) if torch.equal(padded[i, :, dy:dy + 8, dx:dx + 8],
                                                                               out[i])]
        assert found, f"sample {i} is not a crop of its padded input"
        offsets.add(found[0])
    assert len(offsets) > 3  # offsets differ between samples
    assert torch.equal(out, random_crop(x, 2, make_generator(9)))
    assert torch.equal(random_crop(x, 0, make_generator(9)), x)


def test_random_hflip() -> None:
    x = _images(n=32)
    assert torch.equal(random_hflip(x, make_generator(0), p=1.0), x.flip(-1))
    assert torch.equal(random_hflip(x, make_generator(0), p=0.0), x)
    y = random_hflip(x, make_generator(2))
    flipped = [torch.equal(y[i], x[i].flip(-1)) for i in range(32)]
    assert 0 < sum(flipped) < 32 and all(f or torch.equal(y[i], x[i]) for i, f in enumerate(flipped))


def test_augment_is_reproducible_from_the_generator() -> None:
    x = _images(n=16, c=3, h=32, w=32)
    a = augment(x, make_generator(3, 0, 7))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, augment(x, make_generator(3, 0, 7)))
    assert not torch.equal(a, augment(x, make_generator(3, 0, 8)))
    assert torch.equal(augment(x, make_generator(0), crop_padding=0, flip=False), x)
