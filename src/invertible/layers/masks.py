r"""Which entries of a coupling's input condition and which are transformed: halves, channel masks, checkerboards.

A coupling ``y = (x_c, g(x_t; theta(x_c)))`` splits its input into conditioning entries ``x_c`` (kept) and
transformed entries ``x_t``. A :class:`Partition` owns that split, so the couplings write their algebra once:

- ``split(x) -> (x1, x2)``: ``x1`` is what the network sees, ``x2`` the transformed entries;
- ``merge(x1, y2)``: the output, with ``y2`` in place of ``x2``;
- ``select(p)``: the network's parameters of the transformed entries.

Three partitions:

- :class:`Halves` (the default): the first ``C // 2`` channels condition, the rest are transformed (the other way
  round with ``swap``). Plain slices, no indexing.
- :class:`ChannelMask`: an arbitrary 0/1 mask over the channels (1: transformed), for vectors and images.
- :class:`Checkerboard` (RealNVP's, images only): entry ``(c, h, w)`` is transformed where ``(h + w) % 2`` is
  ``1`` (``0`` with ``swap``), at every channel. The network sees the whole input with the transformed entries
  set to zero (so its output cannot depend on them) and gives parameters for every entry; ``select`` keeps those
  of the transformed entries, ``x2`` lists them (shape ``(B, M)``), ``merge`` writes them back.

Every partition is a permutation of the entries followed by a split, so the Jacobian of a coupling is, up to that
permutation, ``[[I, 0], [A, D]]``, and its bounds are those of the halves (masking the network's input is a
projection, of norm 1). A mask is a buffer (``mask``), saved in the state dict.

Example:
    >>> import torch
    >>> part = ChannelMask([0, 1, 0, 1])
    >>> x1, x2 = part.split(torch.arange(4.0).view(1, 4))
    >>> x1, x2, part.merge(x1, x2)
    (tensor([[0., 2.]]), tensor([[1., 3.]]), tensor([[0., 1., 2., 3.]]))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ChannelMask", "Checkerboard", "Halves", "Partition", "make_partition"]


class Partition(nn.Module):
    """How a coupling splits its input (module docstring). ``sizes = (network input channels, transformed channels
    per position)``: the network maps ``sizes[0]`` channels to ``params * sizes[1]`` channels."""

    sizes: tuple[int, int]
    #: whether :meth:`select` does anything (checkerboards); the couplings skip the call otherwise.
    selects = False

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def merge(self, x1: Tensor, x2: Tensor) -> Tensor:
        raise NotImplementedError

    def select(self, p: Tensor, entry_dims: int) -> Tensor:
        """The parameters of the transformed entries from ``p`` of shape ``(B, C2, *spatial, *extra)``, where
        ``entry_dims = 1 + len(spatial)``."""
        return p

    def transformed(self, shape: Sequence[int]) -> Tensor:
        """A boolean tensor of the per-sample ``shape``: True at the transformed entries."""
        raise NotImplementedError


class Halves(Partition):
    """The first ``C // 2`` channels condition and the rest are transformed (``swap``: the other way round)."""

    def __init__(self, channels: int, swap: bool = False) -> None:
        super().__init__()
        if channels < 2:
            raise ValueError(f"a coupling needs at least 2 channels, got {channels}")
        self.channels, self.swap, self.first = channels, swap, channels // 2
        rest = channels - self.first
        self.sizes = (rest, self.first) if swap else (self.first, rest)

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a, b = x[:, : self.first], x[:, self.first :]
        return (b, a) if self.swap else (a, b)

    def merge(self, x1: Tensor, x2: Tensor) -> Tensor:
        return torch.cat([x2, x1] if self.swap else [x1, x2], dim=1)

    def transformed(self, shape: Sequence[int]) -> Tensor:
        mask = torch.zeros(tuple(shape), dtype=torch.bool)
        mask[: self.first] = self.swap
        mask[self.first :] = not self.swap
        return mask

    def extra_repr(self) -> str:
        return f"channels={self.channels}, swap={self.swap}"


def _as_mask(mask: Sequence[Any] | Tensor, channels: int) -> Tensor:
    values = torch.as_tensor(mask).flatten() if not isinstance(mask, Tensor) else mask.detach().flatten().cpu()
    if values.numel() != channels or not bool(((values == 0) | (values == 1)).all()):
        raise ValueError(f"a channel mask must hold {channels} values, each 0 (conditions) or 1 (transformed), got "
                         f"{values.tolist()}")
    values = values.bool()
    if bool(values.all()) or not bool(values.any()):
        raise ValueError(f"a channel mask needs at least one conditioning (0) and one transformed (1) channel, got "
                         f"{values.int().tolist()}")
    return values


class ChannelMask(Partition):
    """An arbitrary channel mask: ``mask[c] = 1`` where channel ``c`` is transformed, ``0`` where it conditions
    (``swap`` exchanges the two). The conditioning channels keep their order in ``x1``, the transformed ones in
    ``x2``."""

    def __init__(self, mask: Sequence[Any] | Tensor, swap: bool = False, channels: int | None = None) -> None:
        super().__init__()
        count = channels if channels is not None else len(mask)
        values = _as_mask(mask, count)
        values = ~values if swap else values
        self.register_buffer("mask", values)
        self._indices()

    def _indices(self) -> None:
        mask = self.mask
        cond, trans = (~mask).nonzero().flatten(), mask.nonzero().flatten()
        self.register_buffer("cond_index", cond, persistent=False)
        self.register_buffer("trans_index", trans, persistent=False)
        self.register_buffer("merge_index", torch.argsort(torch.cat([cond, trans])), persistent=False)
        self.sizes = (int(cond.numel()), int(trans.numel()))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        given = state_dict.get(prefix + "mask")
        if isinstance(given, Tensor) and given.shape == self.mask.shape:
            _as_mask(given, self.mask.numel())  # refuse a mask without both kinds of channel before loading
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._indices()

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.index_select(1, self.cond_index), x.index_select(1, self.trans_index)

    def merge(self, x1: Tensor, x2: Tensor) -> Tensor:
        return torch.cat([x1, x2], dim=1).index_select(1, self.merge_index)

    def transformed(self, shape: Sequence[int]) -> Tensor:
        view = (-1,) + (1,) * (len(shape) - 1)
        return self.mask.cpu().view(view).expand(tuple(shape)).clone()

    def extra_repr(self) -> str:
        return f"mask={self.mask.int().tolist()}"


class Checkerboard(Partition):
    """RealNVP's spatial checkerboard on images: ``(c, h, w)`` is transformed where ``(h + w) % 2 == 1``
    (``== 0`` with ``swap``), at every channel (module docstring)."""

    selects = True

    def __init__(self, channels: int, swap: bool = False) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"a checkerboard coupling needs at least 1 channel, got {channels}")
        self.channels, self.swap = channels, swap
        self.sizes = (channels, channels)
        self._cache: dict[tuple[Any, ...], tuple[Tensor, Tensor]] = {}

    def _pattern(self, c: int, h: int, w: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """``(mask (1, 1, H, W) bool, flat indices of the transformed entries over (C, H, W))``, cached."""
        if h * w < 2:
            raise ValueError(f"Checkerboard: a {h}x{w} image has no conditioning entry; it needs at least 2 "
                             "positions (use a channel mask)")
        key = (c, h, w, device)
        if key not in self._cache:
            mask = self.transformed((1, h, w)).to(device)[None]
            index = mask.expand(1, c, h, w).reshape(-1).nonzero().flatten()
            self._cache[key] = (mask, index)
        return self._cache[key]

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mask, index = self._pattern(*x.shape[1:], x.device)
        return x.masked_fill(mask, 0.0), x.flatten(1).index_select(1, index)

    def merge(self, x1: Tensor, x2: Tensor) -> Tensor:
        _, index = self._pattern(*x1.shape[1:], x1.device)
        return x1.flatten(1).index_copy(1, index, x2).view_as(x1)

    def select(self, p: Tensor, entry_dims: int) -> Tensor:
        _, index = self._pattern(*p.shape[1 : 1 + entry_dims], p.device)
        return p.flatten(1, entry_dims).index_select(1, index)

    def transformed(self, shape: Sequence[int]) -> Tensor:
        c, h, w = shape
        grid = torch.arange(h)[:, None] + torch.arange(w)[None, :]
        return (grid % 2 == (0 if self.swap else 1)).expand(c, h, w).clone()

    def extra_repr(self) -> str:
        return f"channels={self.channels}, swap={self.swap}"


def make_partition(channels: int, mask: str | Sequence[Any] | Tensor | None, swap: bool, net: object
                   ) -> Partition:
    """The partition for a coupling's ``mask`` argument: ``None`` (halves), ``"checkerboard"`` (spatial for image
    networks; alternating channels, ``[0, 1, 0, 1, ...]``, for ``net="mlp"``), or a channel mask."""
    if mask is None:
        return Halves(channels, swap)
    if isinstance(mask, str):
        if mask != "checkerboard":
            raise ValueError(f"mask must be None (halves), 'checkerboard' or a 0/1 channel mask, got {mask!r}")
        if net == "mlp":
            return ChannelMask([c % 2 for c in range(channels)], swap)
        return Checkerboard(channels, swap)
    return ChannelMask(mask, swap, channels)
