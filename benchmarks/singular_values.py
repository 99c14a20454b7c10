"""Extreme singular values of a Glow's Jacobian on a 3 x 32 x 32 input: exact against matrix-free, side by side.

Three ways to get ``sigma_max`` and ``sigma_min`` of ``J_f(x)`` at one image, in the same run:

- exact: the full 3072 x 3072 Jacobian (``torch.func.jacrev``, the paper's method up to batching) and an SVD;
- ours: :func:`invertible.diagnostics.extreme_singular_values` with ``method="lanczos"`` (Golub-Kahan-Lanczos on
  JVP/VJP for ``sigma_max``, and on the inverse map for ``1 / sigma_min``);
- peer: ``scipy.sparse.linalg.svds`` (ARPACK) on the same JVP/VJP operators as ours, largest singular value of the
  forward and of the inverse Jacobian.

Goal: ours within 5 % of the exact values at no more than a tenth of the exact computation's time.

Run: ``.venv/bin/python benchmarks/singular_values.py [--depth 4 --hidden 32 --samples 2 --threads 1]``
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, svds

from invertible.diagnostics import extreme_singular_values, singular_values
from invertible.models import Glow
from invertible.testing import randomize_


def build(args: argparse.Namespace) -> Glow:
    torch.manual_seed(args.seed)
    model = Glow((3, 32, 32), levels=args.levels, depth=args.depth, hidden=args.hidden, coupling="affine",
                 scale_fn=args.scale_fn, seed=args.seed)
    randomize_(model, args.noise, args.seed)  # zero-initialised couplings would make the flow almost linear
    with torch.no_grad():
        model(torch.rand(16, 3, 32, 32) - 0.5)  # ActNorm's data-dependent initialisation
    return model.eval()


def scipy_sigma_max(fn, x: torch.Tensor, tol: float) -> float:  # type: ignore[no-untyped-def]
    """Largest singular value of the Jacobian of ``fn`` at one sample, by ARPACK on JVP/VJP operators."""
    shape = x.shape
    y, vjp_fn = torch.func.vjp(fn, x)
    n_in, n_out = x.numel(), y.numel()

    _, jvp_fn = torch.func.vjp(lambda u: vjp_fn(u)[0], torch.zeros_like(y))  # the same JVP as ours

    def matvec(v: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(v.reshape(-1))).to(x.dtype).reshape(shape)
        return jvp_fn(t)[0].detach().reshape(-1).double().numpy()

    def rmatvec(u: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(u.reshape(-1))).to(x.dtype).reshape(y.shape)
        return vjp_fn(t)[0].detach().reshape(-1).double().numpy()

    op = LinearOperator((n_out, n_in), matvec=matvec, rmatvec=rmatvec, dtype=np.float64)
    v0 = np.random.default_rng(0).standard_normal(n_in)
    return float(svds(op, k=1, which="LM", tol=tol, v0=v0, return_singular_vectors=False)[0])


def timed(fn, repeats: int):  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--scale-fn", default="sigmoid")
    parser.add_argument("--noise", type=float, default=0.05, help="std of the noise added to every parameter")
    parser.add_argument("--samples", type=int, default=2, help="images, each measured on its own")
    parser.add_argument("--rtol", type=float, default=1e-2, help="Lanczos residual tolerance (ours)")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats of the matrix-free methods")
    parser.add_argument("--chunk-size", type=int, default=512, help="reverse passes vectorised at once (exact)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "singular_values.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = build(args)
    generator = torch.Generator().manual_seed(args.seed + 1)
    images = torch.rand(args.samples, 3, 32, 32, generator=generator) - 0.5
    title = (f"Glow(3x32x32, levels={args.levels}, depth={args.depth}, hidden={args.hidden}, affine "
             f"{args.scale_fn}), float32, {args.threads} threads, D = 3072")
    print(title)
    header = f"{'sample':>6} {'method':<22} {'sigma_max':>11} {'err':>8} {'sigma_min':>11} {'err':>8} " \
             f"{'time s':>8} {'x exact':>8} {'iters':>6}"
    print(header)
    print("-" * len(header))
    table = ["| sample | method | sigma_max | rel. err | sigma_min | rel. err | time (s) | time / exact | iterations |",
             "|---|---|---|---|---|---|---|---|---|"]
    for i in range(args.samples):
        x = images[i : i + 1]
        sv, t_exact = timed(lambda: singular_values(model, x, chunk_size=args.chunk_size), 1)
        s_max, s_min = float(sv[0, 0]), float(sv[0, -1])
        ours, t_ours = timed(lambda: extreme_singular_values(model, x, method="lanczos", rtol=args.rtol),
                             args.repeats)
        y = model(x)[0].detach()

        def peer() -> tuple[float, float]:
            return (scipy_sigma_max(lambda v: model(v)[0], x, args.rtol),
                    1.0 / scipy_sigma_max(lambda v: model.inverse(v)[0], y, args.rtol))

        (p_max, p_min), t_peer = timed(peer, args.repeats)
        iters = f"{ours.forward.iterations}+{ours.inverse.iterations}"
        rows = [("exact (jacrev + SVD)", s_max, s_min, t_exact, "3072"),
                ("ours (Lanczos)", float(ours.sigma_max[0]), float(ours.sigma_min[0]), t_ours, iters),
                ("scipy svds (ARPACK)", p_max, p_min, t_peer, "-")]
        for name, a, b, t, it in rows:
            print(f"{i:>6} {name:<22} {a:>11.6g} {abs(a / s_max - 1):>8.2e} {b:>11.6g} {abs(b / s_min - 1):>8.2e} "
                  f"{t:>8.2f} {t / t_exact:>8.3f} {it:>6}")
            table.append(f"| {i} | {name} | {a:.6g} | {abs(a / s_max - 1):.2e} | {b:.6g} | {abs(b / s_min - 1):.2e} "
                         f"| {t:.2f} | {t / t_exact:.3f} | {it} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join([
        "# Extreme singular values of a Glow Jacobian: exact SVD, ours (Lanczos), scipy (ARPACK)", "",
        f"{title}; {platform.machine()}, torch {torch.__version__}. Goal: ours within 5 % of exact at no more than a "
        "tenth of its time. Command: `python benchmarks/singular_values.py`.", "", *table, ""]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
