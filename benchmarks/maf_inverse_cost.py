"""Cost of the sequential inverse of masked autoregressive transforms, against their one-pass forward.

For ``D`` in ``--dims``: a ``MaskedAffineAutoregressive`` and a ``MaskedSplineAutoregressive`` (8 bins) with a MADE
of 2 hidden layers of ``--hidden`` units, and, for comparison, a ``SplineCoupling`` (MLP, same width) whose inverse
is one pass too. Timed without gradients on a ``--batch`` x D float32 batch, as medians over ``--repeats`` rounds
after ``--warmup`` rounds (layers interleaved within each round, so machine load hits all alike):

- forward: data -> latent (one MADE pass);
- inverse: latent -> data (``D`` MADE passes for the autoregressive layers).

The ratio inverse / forward is expected near ``D`` (each inverse step is one forward pass of the MADE plus the
elementwise inverse of one entry). Run on a quiet machine: ``python benchmarks/maf_inverse_cost.py`` (writes
``benchmarks/results/maf_inverse_cost.md``; ``--device cuda`` for a GPU).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from invertible import MaskedAffineAutoregressive, MaskedSplineAutoregressive, SplineCoupling


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "maf_inverse_cost.md")
    args = parser.parse_args()
    if min(args.dims) < 2:
        parser.error("--dims: each D must be >= 2 (the spline coupling needs two halves)")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for dims in args.dims:
        torch.manual_seed(0)
        layers = {
            "MAF affine": MaskedAffineAutoregressive(dims, hidden=args.hidden, zero_init=False),
            "MAF spline": MaskedSplineAutoregressive(dims, hidden=args.hidden, zero_init=False),
            "spline coupling": SplineCoupling(dims, hidden=args.hidden, zero_init=False),
        }
        x = torch.randn(args.batch, dims, device=device)
        times: dict[str, dict[str, list[float]]] = {n: {"forward": [], "inverse": []} for n in layers}
        errors = {}
        with torch.no_grad():
            for name, layer in layers.items():
                layer.to(device).eval()
                y, _ = layer(x)
                errors[name] = float((layer.inverse(y)[0] - x).abs().max())
            for round_ in range(args.warmup + args.repeats):
                for name, layer in layers.items():
                    y, _ = layer(x)
                    t_fwd = _timed(lambda f=layer, v=x: f(v), device)  # type: ignore[misc]
                    t_inv = _timed(lambda f=layer, v=y: f.inverse(v), device)  # type: ignore[misc]
                    if round_ >= args.warmup:
                        times[name]["forward"].append(t_fwd)
                        times[name]["inverse"].append(t_inv)
        for name in layers:
            fwd, inv = (statistics.median(times[name][k]) for k in ("forward", "inverse"))
            rows.append((dims, name, fwd, inv, inv / fwd, errors[name]))
    lines = [
        "# Sequential inverse of masked autoregressive transforms vs their forward",
        "",
        (f"Batch {args.batch}, float32, {device.type}, torch {torch.__version__}, "
         f"torch.set_num_threads({args.threads}); MADE with 2 hidden layers of {args.hidden}; spline: 8 bins; medians "
         f"of {args.repeats} rounds after {args.warmup} warm-up rounds, layers interleaved. The spline coupling "
         "(one-pass inverse) is the comparison."),
        "",
        "| D | layer | forward (ms) | inverse (ms) | inverse / forward | round trip max abs err |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {d} | {n} | {f * 1e3:.3f} | {i * 1e3:.3f} | {r:.1f} | {e:.1e} |" for d, n, f, i, r, e in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
