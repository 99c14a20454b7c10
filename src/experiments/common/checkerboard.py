"""The 2-D checkerboard and the four flows trained on it, shared by the ``flows2d`` study (which trains them) and
the ``attack2d`` study (which attacks a finished ``flows2d`` run's models).

- ``affine``: RealNVP couplings ``y = x * sigmoid(s + 2) + t`` (no global bound on either Lipschitz constant);
- ``bounded``: the "modified affine" scale ``0.5 * sigmoid(s + 2) + 0.5`` in ``(0.5, 1)``;
- ``additive``: ``y = x + t`` (globally bi-Lipschitz when ``t`` is Lipschitz);
- ``iresnet``: residual blocks ``y = x + g(x)`` with spectrally normalised ``g``, exact log-det.

Coupling networks are pre-activation MLPs ``act -> Linear(1, h) -> act -> ... -> Linear(h, out)`` with LipSwish
activations, as the original's; couplings alternate which coordinate they transform.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from invertible import AdditiveCoupling, AffineCoupling
from invertible.checkpoint import load_checkpoint
from invertible.layers.activations import make_activation
from invertible.layers.spectral_norm import SpectralNormLinear, SpectralNormOptions, update_lipschitz
from invertible.models import DenseResidualFlow, Flow

from .runs import RunNotFound

__all__ = ["MODELS", "build_model", "build_models", "checkerboard", "coupling_net", "load_models",
           "refresh_spectral_norms"]

#: The model families compared.
MODELS = ("affine", "bounded", "additive", "iresnet")


def checkerboard(n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """``n`` points of the 2-D checkerboard on ``[-4, 4]^2`` (residual-flows' ``toy_data``), shape ``(n, 2)``."""
    x1 = torch.rand(n, generator=generator, dtype=torch.float64) * 4 - 2
    x2 = torch.rand(n, generator=generator, dtype=torch.float64) - 2 * torch.randint(0, 2, (n,), generator=generator)
    x2 = x2 + torch.floor(x1) % 2
    return (torch.stack([x1, x2], dim=1) * 2).to(dtype)


def coupling_net(hidden: Sequence[int], activation: str = "swish") -> Callable[[int, int], nn.Module]:
    """A factory ``(in, out) -> act -> Linear(in, h1) -> act -> ... -> Linear(h_n, out)`` (the original's
    pre-activation coupling MLP; PyTorch's default initialisation)."""

    def factory(c_in: int, c_out: int) -> nn.Module:
        widths = [c_in, *hidden, c_out]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [make_activation(activation), nn.Linear(a, b)]
        return nn.Sequential(*layers)

    return factory


def build_model(kind: str, *, blocks: int, hidden: Sequence[int], coeff: float = 0.8, activation: str = "swish",
                sn_iterations: int | None = 5) -> Flow:
    """One of :data:`MODELS`: ``2 * blocks`` alternating couplings, or ``blocks`` residual blocks.

    The i-ResNet's spectral norms run ``sn_iterations`` warm-started power iterations whenever the weights
    change (the original's ``--n-lipschitz-iters 5``; ``None`` iterates to the layers' tolerance instead);
    :func:`refresh_spectral_norms` runs 200 before evaluation, as the original's validation does.
    """
    if kind == "iresnet":
        model = DenseResidualFlow(2, blocks=blocks, hidden=tuple(hidden), activation=activation,
                                  spectral=SpectralNormOptions(coeff=coeff, atol=1e-4, rtol=1e-4),
                                  preact=True, zero_init_last=True, logdet="exact")
        if sn_iterations is not None:
            for layer in model.modules():
                if isinstance(layer, SpectralNormLinear):
                    layer.n_iterations = sn_iterations
        return model
    if kind not in MODELS:
        raise ValueError(f"unknown model {kind!r}; choose from {MODELS}")
    net = coupling_net(hidden, activation)
    layers: list[nn.Module] = []
    for i in range(2 * blocks):
        if kind == "additive":
            layers.append(AdditiveCoupling(2, net=net, swap=i % 2 == 1))
        else:
            layers.append(AffineCoupling(2, net=net, swap=i % 2 == 1, order="realnvp",
                                         scale_fn="sigmoid" if kind == "affine" else "bounded"))
    return Flow(*layers, latent_shape=(2,))  # type: ignore[arg-type]


def refresh_spectral_norms(model: nn.Module, iterations: int = 200) -> None:
    """Run ``iterations`` power iterations on every spectral norm of ``model`` (a no-op for couplings)."""
    if any(isinstance(m, SpectralNormLinear) for m in model.modules()):
        update_lipschitz(model, n_iterations=iterations)


def build_models(args: argparse.Namespace) -> nn.ModuleDict:
    """The run's models, each initialised from ``seed`` (so a model does not depend on which others are trained)."""
    models = nn.ModuleDict()
    for kind in args.models:
        torch.manual_seed(args.seed)
        models[kind] = build_model(kind, blocks=args.blocks, hidden=args.hidden, coeff=args.coeff)
    return models


def load_models(run_dir: str | Path, device: torch.device | str = "cpu") -> tuple[nn.ModuleDict, argparse.Namespace]:
    """The trained models of a finished flows2d run folder, in eval mode, and the run's arguments."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise RunNotFound(f"{run_dir} is not a run folder of python -m experiments.flows2d (no config.json)")
    config = json.loads((run_dir / "config.json").read_text())["args"]
    args = argparse.Namespace(**config)
    path = run_dir / "checkpoints" / "models.pt"
    if not path.is_file():
        raise RunNotFound(f"{path} does not exist: the flows2d run in {run_dir} has not finished (resume it "
                                "with --resume)")
    models = build_models(args)
    models.load_state_dict(load_checkpoint(path)["models"])
    return models.to(device).eval(), args


# ----------------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------------
