"""Residual Flows (Chen et al. 2019): multi-scale ``ResidualFlow`` for images, ``DenseResidualFlow`` for flat data."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..base import Bounds, InverseOptions, InvertibleModule
from ..layers import ActNorm, Logit, Squeeze
from ..layers.activations import make_activation
from ..layers.residual import InverseReport, ResidualBlock, branch_lipschitz
from ..layers.residual_logdet import LogDetEstimator
from ..layers.spectral_norm import (
    PowerIterationResult,
    SpectralNormConv2d,
    SpectralNormLinear,
    SpectralNormOptions,
    update_lipschitz,
)
from .flow import Flow

__all__ = ["DenseResidualFlow", "FlatNet", "ResidualFlow", "RESFLOW_CIFAR10", "resflow_estimator"]

#: The CIFAR-10 configuration of the residual-flows paper and its pre-trained checkpoint (CHECKPOINTS.md §2.2).
RESFLOW_CIFAR10: dict[str, Any] = {
    "in_shape": (3, 32, 32), "blocks": (16, 16, 16), "hidden": 512, "kernels": (3, 1, 3),
    "activation": "swish", "actnorm": True, "fc_blocks": 4, "fc_hidden": 128, "first_preact": False,
    "logit": 0.05, "spectral": SpectralNormOptions(coeff=0.98, atol=1e-3, rtol=1e-3),
    "inverse": InverseOptions(max_iter=1000, atol=1e-5, rtol=1e-5, on_failure="raise"),
}
#: The dense flow's defaults: coefficient 0.9, power-iteration tolerances 1e-4; inverse to 1e-8.
DENSE_SPECTRAL = SpectralNormOptions(coeff=0.9, atol=1e-4, rtol=1e-4)
DENSE_INVERSE = InverseOptions(max_iter=1000, atol=1e-8, rtol=1e-8, on_failure="raise")
#: The older keywords of the residual flows' spectral norms and the options' fields they set.
_SPECTRAL_KEYWORDS = {"coeff": "coeff", "sn_method": "method", "sn_atol": "atol", "sn_rtol": "rtol"}
_INVERSE_KEYWORDS = ("atol", "rtol", "max_iter", "on_failure")


def _options(spectral: SpectralNormOptions, inverse: InverseOptions | None, defaults: InverseOptions,
             block_args: dict[str, Any], where: str) -> tuple[SpectralNormOptions, InverseOptions]:
    """The spectral-norm and inverse options with the older keywords (``coeff=``, ``sn_method=``, ``sn_atol=``,
    ``sn_rtol=``, ``atol=``, ``rtol=``, ``max_iter=``, ``on_failure=``) taken out of ``block_args`` and applied."""
    sn = {field: block_args.pop(key) for key, field in _SPECTRAL_KEYWORDS.items() if key in block_args}
    inv = {key: block_args.pop(key) for key in _INVERSE_KEYWORDS if key in block_args}
    try:
        spectral = spectral.replace(**sn)  # as given: sn_atol=None means no absolute tolerance
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{where}: {exc}") from None
    return spectral, (inverse if inverse is not None else InverseOptions()).updated(**inv).filled(defaults)


def resflow_estimator(**overrides: Any) -> LogDetEstimator:
    """Residual Flows' image estimator: Poisson(2) Russian roulette, 2 exact terms in training and 20 in eval,
    one Gaussian probe, Neumann-series gradient."""
    settings: dict[str, Any] = {"method": "roulette", "dist": "poisson", "rate": 2.0, "n_exact_terms": 2,
                                "n_exact_terms_eval": 20, "neumann_grad": True}
    return LogDetEstimator(**{**settings, **overrides})


class FlatNet(nn.Module):
    """A residual branch on flattened features: ``g(x) = nnet(x.flatten(1)).view_as(x)`` (residual-flows' FCNet).

    Lipschitz bound: that of ``nnet`` (flattening is an isometry).
    """

    def __init__(self, nnet: nn.Module) -> None:
        super().__init__()
        self.nnet = nnet

    def forward(self, x: Tensor) -> Tensor:
        return self.nnet(x.flatten(1)).view_as(x)

    def lipschitz_bound(self) -> float | None:
        return branch_lipschitz(self.nnet)


class _Flattened(InvertibleModule):
    """Apply a flat layer to ``x.flatten(1)`` and restore the shape (residual-flows' FCWrapper; key ``fc_module``)."""

    def __init__(self, fc_module: InvertibleModule) -> None:
        super().__init__(channels=None, ranks=(2, 3, 4))
        self.fc_module = fc_module

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, logdet = self.fc_module(x.flatten(1))
        return y.view_as(x), logdet

    def _inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x, logdet = self.fc_module.inverse(y.flatten(1))
        return x.view_as(y), logdet

    def lipschitz_bounds(self) -> Bounds:
        return self.fc_module.lipschitz_bounds()


def conv_branch(channels: int, hidden: int, size: tuple[int, int], *, kernels: Sequence[int] = (3, 1, 3),
                activation: str = "swish", preact: bool = True, **sn: Any) -> nn.Sequential:
    """``[act] -> SNConv(C, hidden) -> act -> SNConv(hidden, hidden) -> ... -> SNConv(hidden, C)``.

    One convolution per entry of ``kernels``; module indices match residual-flows' ``nnet`` (``nnet.0`` is the
    leading activation with ``preact``). ``sn`` goes to every :class:`SpectralNormConv2d` (``options=``,
    ``generator=``, or the options' fields).
    """
    widths = [channels] + [hidden] * (len(kernels) - 1) + [channels]
    modules: list[nn.Module] = [make_activation(activation)] if preact else []
    for i, k in enumerate(kernels):
        if i > 0:
            modules.append(make_activation(activation))
        modules.append(SpectralNormConv2d(widths[i], widths[i + 1], k, input_size=size, **sn))
    return nn.Sequential(*modules)


def dense_branch(dim: int, hidden: Sequence[int], *, activation: str = "swish", preact: bool = True,
                 zero_init_last: bool = False, **sn: Any) -> nn.Sequential:
    """``[act] -> SNLinear(D, h1) -> act -> ... -> SNLinear(h_n, D)`` (residual-flows' FCNet / toy ``iresnet``)."""
    widths = [dim, *hidden, dim]
    modules: list[nn.Module] = [make_activation(activation)] if preact else []
    for i in range(len(widths) - 1):
        if i > 0:
            modules.append(make_activation(activation))
        modules.append(SpectralNormLinear(widths[i], widths[i + 1], **sn))
    if zero_init_last:
        last = modules[-1]
        with torch.no_grad():
            last.weight.zero_()  # type: ignore[union-attr]
            last.bias.zero_()  # type: ignore[union-attr]
    return nn.Sequential(*modules)


class _ResidualFlowMixin:
    """Helpers shared by the two residual flows."""

    def residual_blocks(self) -> Iterator[tuple[str, ResidualBlock]]:
        """``(name, block)`` for every residual block, in forward order."""
        for name, module in self.named_modules():  # type: ignore[attr-defined]
            if isinstance(module, ResidualBlock):
                yield name, module

    def inverse_reports(self) -> list[tuple[str, InverseReport | None]]:
        """Each block's report from the last inverse call."""
        return [(name, block.last_inverse) for name, block in self.residual_blocks()]

    def update_lipschitz(self, **options: Any) -> list[PowerIterationResult]:
        """Refresh every spectral norm's power iteration (:func:`~invertible.layers.spectral_norm.update_lipschitz`)."""
        return update_lipschitz(self, **options)  # type: ignore[arg-type]


class ResidualFlow(_ResidualFlowMixin, Flow):
    r"""Multi-scale Residual Flow for images ``(B, C, H, W)`` (Chen et al. 2019, residual-flows' ``ResidualFlow``).

    Layout (level ``s`` of ``len(blocks)``; ``C_s = C 4^s``, ``H_s = H / 2^s``):

    - level 0: ``[Logit(alpha)] -> [ActNorm] -> blocks[0] x (ResidualBlock -> [ActNorm]) -> Squeeze``, where the
      first block has no leading activation (``first_preact=False``) and the leading ActNorm is there only then;
    - level ``s``: ``blocks[s] x (ResidualBlock -> [ActNorm]) -> Squeeze`` (no squeeze after the last level);
    - after the last level: ``fc_blocks x (fully connected ResidualBlock -> [ActNorm on the flattened vector])``.

    Each convolutional block is ``g = [act] -> SNConv k0 (C_s -> hidden) -> act -> SNConv k1 -> act -> SNConv k2
    (-> C_s)`` with spectral norms of coefficient ``coeff``, so ``Lip(g) <= coeff^3``; fully connected blocks are
    the same with linear maps of width ``fc_hidden``. The log-likelihood is :meth:`~Flow.log_prob` of the
    logit-space flow; the latent keeps the shape ``(C_L, H_L, W_L)``.

    The layers form one flat :class:`~invertible.Sequential` (like Glow); level ``s`` occupies
    ``layers[level_starts[s]:level_starts[s + 1]]``. Module paths mirror residual-flows' state-dict keys:
    ``transforms.{s}.chain.{j}.X`` there is ``layers.{level_starts[s] + j}.X`` here, with residual branches under
    ``nnet`` (``nnet.nnet`` for fully connected ones), ActNorm's ``weight`` called ``log_scale``, and the
    flattened ActNorm under ``fc_module``; :meth:`convert_rtqichen_state_dict` does the renaming.
    ``ResidualFlow(**RESFLOW_CIFAR10)`` is the
    configuration of the pre-trained CIFAR-10 model (16-16-16 blocks, width 512, coefficient 0.98).

    Args:
        in_shape: ``(C, H, W)``; ``H``, ``W`` divisible by ``2^(len(blocks) - 1)``.
        blocks: residual blocks per level.
        hidden, kernels, activation: the convolutional branches.
        actnorm: ActNorm after every block.
        fc_blocks, fc_hidden: the fully connected tail.
        first_preact: whether the very first block starts with an activation (residual-flows: no).
        logit: ``alpha`` of the initial logit transform of ``[0, 1]`` data, or ``None`` for none.
        logdet: the blocks' log-det estimator (default :func:`resflow_estimator`).
        spectral: spectral normalisation of every layer (:class:`~invertible.layers.spectral_norm.
            SpectralNormOptions`: the coefficient, 0.98 here, so ``Lip(g) <= 0.98^3``, and the power iteration).
        inverse: the blocks' fixed-point inverse (:class:`~invertible.InverseOptions`; ``None`` fields take
            ``atol = rtol = 1e-5``, ``max_iter = 1000``, ``on_failure = "raise"``).
        seed: seeds the power-iteration vectors.
        block_args: further :class:`~invertible.layers.residual.ResidualBlock` arguments. The older keywords
            ``coeff``, ``sn_method``, ``sn_atol``, ``sn_rtol`` (fields of ``spectral``) and ``atol``, ``rtol``,
            ``max_iter``, ``on_failure`` (of ``inverse``) keep working and replace those fields.

    Example:
        >>> model = ResidualFlow((3, 8, 8), blocks=(1, 1), hidden=8, fc_blocks=1, fc_hidden=8, logdet="exact",
        ...                      inverse=InverseOptions(atol=1e-6, rtol=1e-6))
        >>> x = torch.rand(2, 3, 8, 8)
        >>> z, logdet = model(x)
        >>> z.shape, bool((model.inverse(z)[0] - x).abs().max() < 1e-4)
        (torch.Size([2, 12, 4, 4]), True)
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int] = (3, 32, 32),
        *,
        blocks: Sequence[int] = (16, 16, 16),
        hidden: int = 512,
        kernels: Sequence[int] = (3, 1, 3),
        activation: str = "swish",
        actnorm: bool = True,
        fc_blocks: int = 4,
        fc_hidden: int = 128,
        first_preact: bool = False,
        logit: float | None = 0.05,
        logdet: str | LogDetEstimator | None = None,
        spectral: SpectralNormOptions = RESFLOW_CIFAR10["spectral"],
        inverse: InverseOptions | None = None,
        seed: int = 0,
        **block_args: Any,
    ) -> None:
        channels, height, width = in_shape
        levels = len(blocks)
        if levels < 1 or any(n < 0 for n in blocks):
            raise ValueError(f"ResidualFlow: blocks must list >= 1 level of >= 0 blocks, got {tuple(blocks)}")
        if height % 2 ** (levels - 1) or width % 2 ** (levels - 1):
            raise ValueError(
                f"ResidualFlow: {levels} levels squeeze the image {levels - 1} times, so height and width must be "
                f"divisible by {2 ** (levels - 1)}; got {height}x{width}"
            )
        spectral, inverse = _options(spectral, inverse, RESFLOW_CIFAR10["inverse"], block_args, "ResidualFlow")
        generator = torch.Generator().manual_seed(seed)
        sn = {"options": spectral, "generator": generator}
        estimator = resflow_estimator() if logdet is None else LogDetEstimator.of(logdet)
        block = {"inverse": inverse, "logdet": estimator, **block_args}
        layers: list[InvertibleModule] = []
        starts: list[int] = []
        c, h, w = channels, height, width
        for level, count in enumerate(blocks):
            chain: list[InvertibleModule] = []
            if level == 0 and logit is not None:
                chain.append(Logit(logit))
            if level == 0 and actnorm and not first_preact:
                chain.append(ActNorm(c))
            for i in range(count):
                preact = first_preact or level > 0 or i > 0
                net = conv_branch(c, hidden, (h, w), kernels=kernels, activation=activation, preact=preact, **sn)
                chain.append(ResidualBlock(net, channels=c, ranks=(4,), **block))
                if actnorm:
                    chain.append(ActNorm(c))
            if level == levels - 1:
                dim = c * h * w
                for _ in range(fc_blocks):
                    net = FlatNet(dense_branch(dim, (fc_hidden, fc_hidden), activation=activation, **sn))
                    chain.append(ResidualBlock(net, channels=c, ranks=(4,), **block))
                    if actnorm:
                        chain.append(_Flattened(ActNorm(dim)))
            else:
                chain.append(Squeeze())
                c, h, w = 4 * c, h // 2, w // 2
            if not chain:
                raise ValueError(f"ResidualFlow: level {level} has no layers; give it at least one block")
            starts.append(len(layers))
            layers += chain
        super().__init__(*layers, latent_shape=(c, h, w), in_shape=tuple(in_shape))
        self.level_starts = (*starts, len(layers))

    def convert_rtqichen_state_dict(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """A residual-flows ``ResidualFlow`` state dict renamed and retyped for this model.

        ``transforms.{s}.chain.{j}.`` becomes ``layers.{level_starts[s] + j}.``; ActNorm ``weight`` becomes
        ``log_scale`` and its int64 ``initialized`` a bool; the estimator's own entries (``geom_p``, ``lamb``,
        ``last_n_samples``, ``last_firmom``, ``last_secmom``) are dropped, since the estimator is configured by
        ``logdet`` here. Keys that match nothing are kept, so ``load_state_dict(strict=True)`` names them.
        """
        dropped = ("geom_p", "lamb", "last_n_samples", "last_firmom", "last_secmom")
        modules = dict(self.named_modules())
        out: dict[str, Tensor] = {}
        for key, value in state_dict.items():
            match = re.match(r"^transforms\.(\d+)\.chain\.(\d+)\.(.*)$", key)
            new = key
            if match and int(match[1]) < len(self.level_starts) - 1:
                new = f"layers.{self.level_starts[int(match[1])] + int(match[2])}.{match[3]}"
            owner, _, leaf = new.rpartition(".")
            if isinstance(modules.get(owner), ResidualBlock) and leaf in dropped:
                continue
            if isinstance(modules.get(owner), ActNorm):
                if leaf == "weight":
                    new = f"{owner}.log_scale"
                elif leaf == "initialized":
                    value = value.bool()
            out[new] = value
        return out


class DenseResidualFlow(_ResidualFlowMixin, Flow):
    r"""A residual flow for flat ``(B, D)`` data (2-D toys, tabular data): ``blocks x (ResidualBlock [-> ActNorm])``.

    Each block is ``g = [act] -> SNLinear(D, h_1) -> act -> ... -> SNLinear(h_n, D)`` with spectral norms of
    coefficient ``coeff`` (so ``Lip(g) <= coeff^(n+1)``), residual-flows' toy ``iresnet``; the paper's 2-D model
    is ``DenseResidualFlow(2, blocks=100, hidden=(128, 128, 128, 128), coeff=0.8)``. The log-det is exact by
    default (brute force, cheap for small ``D``).

    Args:
        dim: ``D``.
        blocks: number of residual blocks.
        hidden: widths of the hidden layers of each branch.
        activation, preact, zero_init_last: the branches (``zero_init_last`` starts each block as the identity).
        actnorm: an ActNorm after each block.
        logdet: log-det estimator of the blocks.
        spectral: spectral normalisation of every layer (:class:`~invertible.layers.spectral_norm.
            SpectralNormOptions`; coefficient 0.9 and tolerances 1e-4 by default).
        inverse: the fixed-point inverse (:class:`~invertible.InverseOptions`; ``None`` fields take
            ``atol = rtol = 1e-8``, ``max_iter = 1000``, ``on_failure = "raise"``).
        seed: seeds the power-iteration vectors.
        block_args: further :class:`~invertible.layers.residual.ResidualBlock` arguments; the older keywords
            ``coeff``, ``sn_method``, ``sn_atol``, ``sn_rtol``, ``atol``, ``rtol``, ``max_iter``, ``on_failure``
            keep working, as for :class:`ResidualFlow`.

    Example:
        >>> flow = DenseResidualFlow(2, blocks=3, hidden=(16, 16), spectral=SpectralNormOptions(coeff=0.8))
        >>> x = torch.randn(4, 2)
        >>> flow.log_prob(x).shape, bool((flow.inverse(flow(x)[0])[0] - x).abs().max() < 1e-5)
        (torch.Size([4]), True)
    """

    def __init__(
        self,
        dim: int,
        *,
        blocks: int = 10,
        hidden: Sequence[int] = (128, 128, 128),
        activation: str = "swish",
        preact: bool = True,
        zero_init_last: bool = False,
        actnorm: bool = False,
        logdet: str | LogDetEstimator = "exact",
        spectral: SpectralNormOptions = DENSE_SPECTRAL,
        inverse: InverseOptions | None = None,
        seed: int = 0,
        **block_args: Any,
    ) -> None:
        if dim < 1 or blocks < 1:
            raise ValueError(f"DenseResidualFlow needs dim >= 1 and blocks >= 1, got dim={dim}, blocks={blocks}")
        spectral, inverse = _options(spectral, inverse, DENSE_INVERSE, block_args, "DenseResidualFlow")
        generator = torch.Generator().manual_seed(seed)
        sn = {"options": spectral, "generator": generator}
        layers: list[InvertibleModule] = []
        for _ in range(blocks):
            net = dense_branch(dim, hidden, activation=activation, preact=preact, zero_init_last=zero_init_last, **sn)
            layers.append(ResidualBlock(net, channels=dim, ranks=(2,), logdet=logdet, inverse=inverse,
                                        **block_args))
            if actnorm:
                layers.append(ActNorm(dim))
        super().__init__(*layers, latent_shape=(dim,), in_shape=(dim,))
