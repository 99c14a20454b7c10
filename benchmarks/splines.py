"""Speed of spline couplings and masked autoregressive flows, ours side by side with nflows and zuko in one run.

Two architectures, the same in every library (float32, ``--batch`` x ``--features`` inputs, MLPs of 2 hidden
layers of ``--hidden`` units with ReLU, 4 layers):

- **spline coupling stack**: 4 rational-quadratic spline couplings (``--bins`` bins on ``[-3, 3]``, linear tails),
  halves alternating between layers. Ours: ``SplineCoupling(swap=i % 2 == 1)``; nflows:
  ``PiecewiseRationalQuadraticCouplingTransform(tails="linear")`` with an MLP conditioner; zuko:
  ``GeneralCouplingTransform(univariate=MonotonicRQSTransform)`` (its spline has no minimum bin size and an
  ``exp`` derivative: slightly less arithmetic than ours and nflows').
- **MAF**: 4 masked affine autoregressive layers, alternating orders. Ours: ``MaskedAffineAutoregressive``
  (``s = exp(h)``); nflows: ``MaskedAffineAutoregressiveTransform`` (``s = softplus(h) + 1e-3``); zuko:
  ``MAF`` (``s = exp(soft-clamped h)``). Density evaluation is one MADE pass per layer; sampling is ``D`` passes
  per layer in every library.

Timed, as medians over ``--repeats`` rounds after ``--warmup`` rounds (libraries interleaved within each round, so
machine load hits all of them alike): forward (data -> latent with the log-det, no gradient), inverse (latent ->
data, no gradient), train step (forward, NLL ``-(log N(z) + logdet)``, backward, Adam step) for the couplings;
density evaluation (log-likelihood, no gradient) and sampling for MAF.

Run on a quiet machine: ``python benchmarks/splines.py`` (needs ``pip install nflows zuko``); writes
``benchmarks/results/splines.md``. ``--threads`` is set with ``torch.set_num_threads`` for all libraries alike.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn

Pass = Callable[[Tensor], tuple[Tensor, Tensor]]
LAYERS = 4


@dataclass
class Candidate:
    """One library's stack: ``to_latent`` and ``to_data`` return ``(output, logdet)``."""

    name: str
    module: nn.Module
    to_latent: Pass
    to_data: Callable[[Tensor], Tensor]
    times: dict[str, list[float]] = field(default_factory=dict)


def _mlp(c_in: int, c_out: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(c_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, c_out))


# -- spline coupling stacks -----------------------------------------------------------------------------------------
def ours_coupling(args: argparse.Namespace) -> Candidate:
    from invertible import Sequential, SplineCoupling

    flow = Sequential(*[SplineCoupling(args.features, bins=args.bins, bound=3.0, hidden=args.hidden,
                                       swap=i % 2 == 1, zero_init=False) for i in range(LAYERS)])
    return Candidate("invertible (ours)", flow, flow, lambda z: flow.inverse(z)[0])


class _NflowsNet(nn.Module):
    def __init__(self, c_in: int, c_out: int, hidden: int) -> None:
        super().__init__()
        self.net = _mlp(c_in, c_out, hidden)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(x)


def nflows_coupling(args: argparse.Namespace) -> Candidate:
    from nflows.transforms import CompositeTransform
    from nflows.transforms.coupling import PiecewiseRationalQuadraticCouplingTransform

    half = args.features // 2
    layers = []
    for i in range(LAYERS):
        mask = torch.tensor([0] * half + [1] * (args.features - half))  # 1: transformed
        layers.append(PiecewiseRationalQuadraticCouplingTransform(
            mask if i % 2 == 0 else 1 - mask, partial(_NflowsNet, hidden=args.hidden), num_bins=args.bins,
            tails="linear", tail_bound=3.0))
    flow = CompositeTransform(layers)
    return Candidate("nflows", flow, flow, lambda z: flow.inverse(z)[0])


def zuko_coupling(args: argparse.Namespace) -> Candidate:
    from zuko.flows.coupling import GeneralCouplingTransform
    from zuko.transforms import ComposedTransform, MonotonicRQSTransform

    half = args.features // 2
    mask = torch.arange(args.features) < half  # True: conditions
    layers = nn.ModuleList([GeneralCouplingTransform(
        args.features, mask=mask if i % 2 == 0 else ~mask, univariate=partial(MonotonicRQSTransform, bound=3.0),
        shapes=[(args.bins,), (args.bins,), (args.bins - 1,)], hidden_features=(args.hidden, args.hidden))
        for i in range(LAYERS)])

    def transform() -> ComposedTransform:
        return ComposedTransform(*[layer() for layer in layers])

    return Candidate("zuko", layers, lambda x: transform().call_and_ladj(x), lambda z: transform().inv(z))


# -- MAF stacks -----------------------------------------------------------------------------------------------------
def ours_maf(args: argparse.Namespace) -> Candidate:
    from invertible import MaskedAffineAutoregressive, Sequential

    flow = Sequential(*[MaskedAffineAutoregressive(args.features, hidden=args.hidden, layers=2, zero_init=False,
                                                   order="forward" if i % 2 == 0 else "reverse")
                        for i in range(LAYERS)])
    return Candidate("invertible (ours)", flow, flow, lambda z: flow.inverse(z)[0])


def nflows_maf(args: argparse.Namespace) -> Candidate:
    from nflows.transforms import CompositeTransform, ReversePermutation
    from nflows.transforms.autoregressive import MaskedAffineAutoregressiveTransform

    layers: list[nn.Module] = []
    for i in range(LAYERS):
        if i:
            layers.append(ReversePermutation(args.features))
        # one feed-forward block between the input and output layers: 2 hidden layers, as ours and zuko's
        layers.append(MaskedAffineAutoregressiveTransform(args.features, args.hidden, num_blocks=1,
                                                          use_residual_blocks=False))
    flow = CompositeTransform(layers)
    return Candidate("nflows", flow, flow, lambda z: flow.inverse(z)[0])


def zuko_maf(args: argparse.Namespace) -> Candidate:
    import zuko

    flow = zuko.flows.MAF(args.features, transforms=LAYERS, hidden_features=(args.hidden, args.hidden))
    return Candidate("zuko", flow, lambda x: flow.transform().call_and_ladj(x), lambda z: flow.transform().inv(z))


# -- timing ---------------------------------------------------------------------------------------------------------
def _nll(z: Tensor, logdet: Tensor) -> Tensor:
    return -(-0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(1) + logdet).mean()


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(candidates: list[Candidate], tasks: dict[str, Callable[[Candidate], object]], args: argparse.Namespace
        ) -> None:
    for round_ in range(args.warmup + args.repeats):
        for cand in candidates:
            for task, fn in tasks.items():
                elapsed = _timed(lambda fn=fn, cand=cand: fn(cand))
                if round_ >= args.warmup:
                    cand.times.setdefault(task, []).append(elapsed)


def table(title: str, candidates: list[Candidate], tasks: list[str]) -> list[str]:
    medians = {c.name: {t: statistics.median(c.times[t]) for t in tasks} for c in candidates}
    best = {t: min(m[t] for m in medians.values()) for t in tasks}
    peers = {t: min(m[t] for n, m in medians.items() if not n.startswith("invertible")) for t in tasks}
    sizes = {c.name: sum(p.numel() for p in c.module.parameters()) for c in candidates}
    head = "| library | parameters | " + " | ".join(f"{t} (ms)" for t in tasks) + " |"
    rows = [head, "|---" * (len(tasks) + 2) + "|"]
    for name, m in medians.items():
        cells = [f"{1000 * m[t]:.1f}" + (" (fastest)" if m[t] == best[t] else "") for t in tasks]
        rows.append(f"| {name} | {sizes[name]} | " + " | ".join(cells) + " |")
    ours = medians["invertible (ours)"]
    ratios = ", ".join(f"{t} {ours[t] / peers[t]:.2f}x" for t in tasks)
    return [f"### {title}", "", *rows, "", f"Ours / the fastest peer: {ratios}.", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--bins", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["coupling", "maf"], default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "splines.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, args.features, generator=generator)
    z = torch.randn(args.batch, args.features, generator=generator)
    lines = ["# Spline couplings and MAF beside nflows and zuko", "",
             f"Generated by `python benchmarks/splines.py` ({' '.join(sys.argv[1:]) or 'defaults'}): "
             f"float32, batch {args.batch} x {args.features} features, {LAYERS} layers, MLPs of 2 x {args.hidden}, "
             f"{args.bins} bins; medians of {args.repeats} interleaved rounds after {args.warmup} warm-up rounds, "
             f"{args.threads} threads; torch {torch.__version__}, nflows {importlib.metadata.version('nflows')}, "
             f"zuko {importlib.metadata.version('zuko')}. Timings need a quiet machine.", ""]

    if args.only in (None, "coupling"):
        torch.manual_seed(0)
        couplings = [ours_coupling(args), nflows_coupling(args), zuko_coupling(args)]
        optimizers = {c.name: torch.optim.Adam(c.module.parameters(), lr=1e-4) for c in couplings}

        def train(c: Candidate) -> None:
            loss = _nll(*c.to_latent(x))
            optimizers[c.name].zero_grad()
            loss.backward()
            optimizers[c.name].step()

        def forward(c: Candidate) -> None:
            with torch.no_grad():
                c.to_latent(x)

        def inverse(c: Candidate) -> None:
            with torch.no_grad():
                c.to_data(z)

        run(couplings, {"forward": forward, "inverse": inverse, "train step": train}, args)
        lines += table("Spline coupling stack", couplings, ["forward", "inverse", "train step"])

    if args.only in (None, "maf"):
        torch.manual_seed(0)
        mafs = [ours_maf(args), nflows_maf(args), zuko_maf(args)]

        def density(c: Candidate) -> None:
            with torch.no_grad():
                _nll(*c.to_latent(x))

        def sample(c: Candidate) -> None:
            with torch.no_grad():
                c.to_data(z)

        run(mafs, {"density": density, "sampling": sample}, args)
        lines += table("MAF (affine)", mafs, ["density", "sampling"])

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
