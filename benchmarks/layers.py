"""Speed of a Glow block stack, ours side by side with FrEIA, nflows and normflows in one run.

The stack: squeeze (3x32x32 -> 12x16x16), then 8 x (ActNorm, LU-decomposed invertible 1x1 conv, affine coupling
whose network is Glow's conv3x3 -> ReLU -> conv1x1 -> ReLU -> conv3x3 with 128 hidden channels, last layer
zero-initialised), on a 64 x 3 x 32 x 32 float32 batch. Timed, as medians over ``--repeats`` rounds after
``--warmup`` rounds (libraries interleaved within each round, so machine load hits all of them alike):

- forward: data -> latent with the log-det, no gradient;
- inverse: latent -> data with the log-det, no gradient;
- train step: forward, NLL loss ``-(log N(z) + logdet)`` in bits per dimension, backward, Adam step.

Where a peer lacks a part, the closest one is used and the table says so: FrEIA has no learnable 1x1 conv
(``Fixed1x1Conv``, a fixed random orthogonal matrix: no LU rebuild and no gradient for it) and its one-sided affine
coupling uses its soft-clamped ``exp`` scale; nflows' coupling uses ``sigmoid(h + 2) + 1e-3``; normflows'
``GlowBlock`` is exactly the ActNorm / LU 1x1 conv / sigmoid affine coupling step. normflows runs latent -> data in
its ``forward``, so its "forward" here is its ``inverse``.

Run: ``python benchmarks/layers.py`` (needs ``pip install FrEIA nflows normflows``); writes
``benchmarks/results/layers.md``. ``--threads`` is set with ``torch.set_num_threads`` for all libraries alike.
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
from pathlib import Path

import torch
from torch import Tensor, nn

Pass = Callable[[Tensor], tuple[Tensor, Tensor]]
C, H, W, STEPS, HIDDEN = 3, 32, 32, 8, 128
CHANNELS = 4 * C


@dataclass
class Candidate:
    """One library's stack: ``to_latent`` and ``to_data`` return ``(output, logdet)``."""

    name: str
    module: nn.Module
    to_latent: Pass
    to_data: Pass
    note: str = ""
    times: dict[str, list[float]] = field(default_factory=lambda: {"forward": [], "inverse": [], "train": []})


def glow_net(c_in: int, c_out: int) -> nn.Sequential:
    """Glow's coupling network for the peers (same shapes as ours; last layer zero-initialised)."""
    last = nn.Conv2d(HIDDEN, c_out, 3, padding=1)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(nn.Conv2d(c_in, HIDDEN, 3, padding=1), nn.ReLU(), nn.Conv2d(HIDDEN, HIDDEN, 1), nn.ReLU(),
                         last)


def ours() -> Candidate:
    from invertible import Sequential, Squeeze
    from invertible.models import flow_step

    generator = torch.Generator().manual_seed(0)
    layers = [Squeeze()]
    for _ in range(STEPS):
        layers += flow_step(CHANNELS, hidden=HIDDEN, coupling="affine", permutation="lu", generator=generator)
    flow = Sequential(*layers)
    return Candidate("invertible (ours)", flow, flow, flow.inverse, "sigmoid(h + 2) scale, Glow order")


def freia() -> Candidate:
    import FrEIA.framework as Ff
    import FrEIA.modules as Fm

    inn = Ff.SequenceINN(C, H, W)
    inn.append(Fm.IRevNetDownsampling)
    generator = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        inn.append(Fm.ActNorm)
        q = torch.linalg.qr(torch.randn(CHANNELS, CHANNELS, generator=generator))[0]
        inn.append(Fm.Fixed1x1Conv, M=q)
        inn.append(Fm.AffineCouplingOneSided, subnet_constructor=glow_net)
    return Candidate("FrEIA", inn, lambda x: inn(x), lambda z: inn(z, rev=True),
                     "fixed (not learned) 1x1 conv; soft-clamped exp scale")


class _ContextNet(nn.Module):
    """nflows calls the coupling network as ``net(x, context)``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.net = glow_net(c_in, c_out)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(x)


def nflows() -> Candidate:
    from nflows.transforms import (
        ActNorm,
        AffineCouplingTransform,
        CompositeTransform,
        OneByOneConvolution,
        SqueezeTransform,
    )

    mask = torch.tensor([-1] * (CHANNELS // 2) + [1] * (CHANNELS - CHANNELS // 2))  # <= 0: conditioning half
    transforms: list[nn.Module] = [SqueezeTransform()]
    for _ in range(STEPS):
        transforms += [ActNorm(CHANNELS), OneByOneConvolution(CHANNELS),
                       AffineCouplingTransform(mask, _ContextNet)]
    flow = CompositeTransform(transforms)
    return Candidate("nflows", flow, lambda x: flow(x), lambda z: flow.inverse(z), "sigmoid(h + 2) + 1e-3 scale")


def normflows() -> Candidate:
    import normflows as nf

    # normflows lists flows from latent to data: the last step of ours comes first, the squeeze last
    flows = nn.ModuleList([nf.flows.GlowBlock(CHANNELS, HIDDEN, scale=True, scale_map="sigmoid", split_mode="channel",
                                              leaky=0.0, init_zeros=True, use_lu=True) for _ in range(STEPS)]
                          + [nf.flows.Squeeze()])

    def to_latent(x: Tensor) -> tuple[Tensor, Tensor]:
        total = x.new_zeros(x.shape[0])
        for flow in reversed(flows):
            x, logdet = flow.inverse(x)
            total = total + logdet
        return x, total

    def to_data(z: Tensor) -> tuple[Tensor, Tensor]:
        total = z.new_zeros(z.shape[0])
        for flow in flows:
            z, logdet = flow(z)
            total = total + logdet
        return z, total

    return Candidate("normflows", flows, to_latent, to_data, "GlowBlock (sigmoid scale)")


BUILDERS = {"ours": ours, "FrEIA": freia, "nflows": nflows, "normflows": normflows}


def nll_bits(z: Tensor, logdet: Tensor) -> Tensor:
    """Negative log-likelihood in bits per dimension under a standard normal base."""
    dims = z[0].numel()
    log_pz = -0.5 * (z.flatten(1).pow(2) + math.log(2 * math.pi)).sum(1)
    return -(log_pz + logdet).mean() / (dims * math.log(2.0))


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_round(c: Candidate, x: Tensor, optimizer: torch.optim.Optimizer, record: bool) -> None:
    with torch.no_grad():
        t_fwd = timed(lambda: c.to_latent(x))
        z, _ = c.to_latent(x)
        t_inv = timed(lambda: c.to_data(z))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = nll_bits(*c.to_latent(x))
        loss.backward()
        optimizer.step()

    t_train = timed(step)
    if record:
        for key, value in (("forward", t_fwd), ("inverse", t_inv), ("train", t_train)):
            c.times[key].append(value)


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for every library")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--libraries", default="ours,FrEIA,nflows,normflows")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "layers.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    x = torch.rand(args.batch, C, H, W, generator=torch.Generator().manual_seed(1)) - 0.5
    candidates: list[Candidate] = []
    for name in args.libraries.split(","):
        try:
            candidate = BUILDERS[name]()
        except ImportError as err:
            print(f"skipping {name}: {err} (pip install FrEIA nflows normflows)", file=sys.stderr)
            continue
        with torch.no_grad():
            candidate.to_latent(x)  # data-dependent ActNorm initialisation on the benchmark batch
        candidates.append(candidate)
    optimizers = {c.name: torch.optim.Adam(c.module.parameters(), lr=1e-5) for c in candidates}

    for r in range(args.warmup + args.repeats):
        for c in candidates:
            run_round(c, x, optimizers[c.name], record=r >= args.warmup)
        print(f"round {r + 1}/{args.warmup + args.repeats} done", file=sys.stderr, flush=True)

    rows = ["| library | forward (s) | inverse (s) | train step (s) | inverse / forward | params | round trip "
            "max abs err | note |", "|---|---|---|---|---|---|---|---|"]
    medians = {c.name: {k: statistics.median(v) for k, v in c.times.items()} for c in candidates}
    for c in candidates:
        m = medians[c.name]
        with torch.no_grad():
            z, _ = c.to_latent(x)
            err = float((c.to_data(z)[0] - x).abs().max())
        params = sum(p.numel() for p in c.module.parameters())
        rows.append(f"| {c.name} | {m['forward']:.4f} | {m['inverse']:.4f} | {m['train']:.4f} | "
                    f"{m['inverse'] / m['forward']:.2f} | {params:,} | {err:.1e} | {c.note} |")
    lines = [f"# Glow block stack: squeeze + {STEPS} x (ActNorm, LU 1x1 conv, affine coupling, hidden {HIDDEN})",
             "",
             f"Batch {args.batch} x {C} x {H} x {W}, float32, CPU, torch {torch.__version__}, "
             f"torch.set_num_threads({args.threads}) for all; medians of {args.repeats} rounds after "
             f"{args.warmup} warm-up rounds, libraries interleaved. Versions: FrEIA {version('FrEIA')}, nflows "
             f"{version('nflows')}, normflows {version('normflows')}.", "", *rows, ""]
    ours_name = "invertible (ours)"
    peers = [c.name for c in candidates if c.name != ours_name]
    if ours_name in medians:
        m = medians[ours_name]
        lines.append(f"- ours: inverse / forward = {m['inverse'] / m['forward']:.2f} (goal <= 1.1)")
        if peers:
            fastest = min(peers, key=lambda n: medians[n]["train"])
            ratio = m["train"] / medians[fastest]["train"]
            lines.append(f"- ours / fastest peer ({fastest}) for the train step = {ratio:.2f} (goal <= 1.0)")
            for key in ("forward", "inverse"):
                best = min(peers, key=lambda n, k=key: medians[n][k])
                lines.append(f"- ours / fastest peer ({best}) for {key} = {m[key] / medians[best][key]:.2f}")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
