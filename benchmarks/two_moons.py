"""The README's quick start (a conditional spline flow on two moons) beside zuko's NSF, on the same data and seeds.

Both model the density of a two-moons point given its moon (a one-hot context of 2 features): ours is the quick
start's ``DenseFlow(2, steps=STEPS, step=SPLINE_STEP, context=2)``; zuko's is ``zuko.flows.NSF(2, context=2)`` at its
defaults (3 autoregressive spline transforms, 8 bins, MLPs of 2 x 64). For each seed: the same training and test
sets (``make_moons(noise=0.05)``, seeded), the same number of Adam steps, learning rate and minibatches (drawn with
the same generator), each model's parameters seeded alike. Reported: the test NLL (nats per point, lower is
better) per seed, their mean and spread, and the difference relative to zuko's. NLLs do not depend on the
machine's load, so this runs on any machine.

Run: ``python benchmarks/two_moons.py`` (needs ``pip install zuko``); writes ``benchmarks/results/two_moons.md``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

STEPS_DEFAULT = 6


def moons(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` two-moons points (noise 0.05) and their one-hot moon, float32."""
    from sklearn.datasets import make_moons

    x, label = make_moons(n, noise=0.05, random_state=seed)
    return (torch.tensor(x, dtype=torch.float32),
            nn.functional.one_hot(torch.tensor(label), 2).to(torch.float32))


def ours(steps: int) -> tuple[nn.Module, Callable[[Tensor, Tensor], Tensor]]:
    from invertible.models import SPLINE_STEP, DenseFlow

    flow = DenseFlow(2, steps=steps, step=SPLINE_STEP, context=2)
    return flow, flow.log_prob


def zuko_nsf() -> tuple[nn.Module, Callable[[Tensor, Tensor], Tensor]]:
    import zuko

    flow = zuko.flows.NSF(2, context=2)
    return flow, lambda x, c: flow(c).log_prob(x)


def train(build: Callable[[], tuple[nn.Module, Callable[[Tensor, Tensor], Tensor]]], data: tuple[Tensor, ...],
          seed: int, iterations: int, batch: int, lr: float) -> tuple[float, float]:
    """Train by maximum likelihood; return ``(test NLL, seconds)``."""
    x, c, x_test, c_test = data
    torch.manual_seed(seed)
    model, log_prob = build()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(iterations):
        index = torch.randint(len(x), (batch,), generator=generator)
        loss = -log_prob(x[index], c[index]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        return float(-log_prob(x_test, c_test).mean()), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int, default=STEPS_DEFAULT, help="our flow's coupling steps")
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "two_moons.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for seed in args.seeds:
        x, c = moons(args.train, seed)
        x_test, c_test = moons(args.test, 10_000 + seed)
        data = (x, c, x_test, c_test)
        a = train(lambda: ours(args.steps), data, seed, args.iterations, args.batch, args.lr)
        b = train(zuko_nsf, data, seed, args.iterations, args.batch, args.lr)
        rows.append((seed, a, b))
        print(f"seed {seed}: ours {a[0]:.4f} ({a[1]:.1f} s), zuko {b[0]:.4f} ({b[1]:.1f} s)", file=sys.stderr)
    ours_nll = [r[1][0] for r in rows]
    zuko_nll = [r[2][0] for r in rows]
    mean_ours, mean_zuko = statistics.mean(ours_nll), statistics.mean(zuko_nll)
    differences = [a - b for a, b in zip(ours_nll, zuko_nll)]
    if len(differences) > 1:
        error = statistics.stdev(differences) / len(differences) ** 0.5
        verdict = "within" if abs(mean_ours - mean_zuko) <= 2 * error else "more than"
        paired = (f"the paired differences ours - zuko have sd {statistics.stdev(differences):.4f}, so the mean "
                  f"difference has a standard error of {error:.4f} and is {verdict} two standard errors of zero")
    else:
        paired = "one seed: no spread"

    def spread(v: list[float]) -> str:
        return f"{statistics.stdev(v):.4f}" if len(v) > 1 else "-"

    lines = [
        "# Two moons: the quick start beside zuko's NSF", "",
        f"Generated by `python benchmarks/two_moons.py` (seeds {args.seeds}, {args.iterations} Adam steps, batch "
        f"{args.batch}, lr {args.lr}, {args.train} training and {args.test} test points per seed). Conditional "
        "density of a point given its moon (one-hot context); test NLL in nats per point (lower is better).", "",
        f"- ours: `DenseFlow(2, steps={args.steps}, step=SPLINE_STEP, context=2)` (spline couplings, 8 bins on "
        "[-4, 4], MLPs of 2 x 64, channel reversal between steps; "
        f"{sum(p.numel() for p in ours(args.steps)[0].parameters())} parameters)",
        f"- zuko {importlib.metadata.version('zuko')}: `zuko.flows.NSF(2, context=2)` (3 autoregressive spline "
        f"transforms, 8 bins on [-5, 5], MLPs of 2 x 64; {sum(p.numel() for p in zuko_nsf()[0].parameters())} "
        "parameters)", "",
        "| seed | ours: test NLL | zuko NSF: test NLL | ours - zuko | ours: train s | zuko: train s |",
        "|---|---|---|---|---|---|",
        *[f"| {s} | {a[0]:.4f} | {b[0]:.4f} | {a[0] - b[0]:+.4f} | {a[1]:.1f} | {b[1]:.1f} |" for s, a, b in rows],
        f"| mean (sd) | {mean_ours:.4f} ({spread(ours_nll)}) | {mean_zuko:.4f} ({spread(zuko_nll)}) | "
        f"{mean_ours - mean_zuko:+.4f} | | |", "",
        f"Mean difference ours - zuko: {mean_ours - mean_zuko:+.4f} nats per point "
        f"({(mean_ours - mean_zuko) / abs(mean_zuko) * 100:+.1f} % of zuko's |NLL|); the criterion is ours <= zuko's "
        f"+ 2 %. Per seed, {paired}. Training times are wall-clock on whatever machine ran this (not a benchmark: "
        "see splines.md).", "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
