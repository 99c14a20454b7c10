"""Memory-saving backprop: peak memory and time of one training step, ours beside memcnn's wrapper.

The model is an affine Glow stack on a 64 x 3 x 32 x 32 batch: a squeeze to 12 x 16 x 16, then ``depth`` steps
of ActNorm -> 1x1 convolution -> affine coupling (sigmoid scale, conv net with 128 hidden channels), the same
layer objects for every variant. Variants:

- ``ours, standard``: plain autograd; the loss is the negative log-likelihood (log-dets included);
- ``ours, memory saving``: :class:`invertible.MemorySaving`, same loss; afterwards one extra step inside
  ``checking()`` reports the gradient self-check (angle and relative error against standard autograd);
- ``memcnn, no saving``: each flow step in ``memcnn.InvertibleModuleWrapper(disable=True)``;
- ``memcnn, memory saving``: ``InvertibleModuleWrapper(keep_input=False)``. memcnn has no log-det API, so its
  loss is ``0.5 mean(z^2)`` (the log-dets are computed inside each step and dropped).

Each (variant, depth) runs in a fresh process (memcnn is imported only there: on import it silences all
UserWarnings process-wide). Memory: ``ru_maxrss`` increase over the peak after building the model, the batch
and Adam's state (ENVIRONMENT.md §2), up to the end of the first step's backward pass (the activations) and
up to the end of its Adam step (adding the gradients and the update's temporaries, which grow with the
parameter count).
Time: median over ``--repeats`` further steps, wall clock and the process's CPU time.

Run: ``python benchmarks/memory_saving.py`` (a few minutes; ``--quick`` for depths 4 and 8, one repeat);
writes ``benchmarks/results/memory_saving.md``. Needs ``pip install memcnn`` (the ``benchmarks`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("ours-standard", "ours-memory", "memcnn-none", "memcnn-memory")
LABELS = {
    "ours-standard": "ours, standard backprop",
    "ours-memory": "ours, memory saving",
    "memcnn-none": "memcnn, no saving (disable=True)",
    "memcnn-memory": "memcnn, memory saving (keep_input=False)",
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def worker(variant: str, depth: int, batch: int, repeats: int, hidden: int) -> dict[str, object]:
    """One (variant, depth) in this process: build, measure the first step's peak, time ``repeats`` steps."""
    import torch
    from torch import nn

    import invertible
    from invertible.models import Glow, standard_normal_log_prob

    torch.manual_seed(0)
    glow = Glow((3, 32, 32), levels=1, depth=depth, hidden=hidden, coupling="affine", permutation="conv",
                split=False, scale_fn="sigmoid")
    data = torch.randn(batch, 3, 32, 32)
    with torch.no_grad():
        glow(data)  # ActNorm data initialisation
    dims = data[0].numel()

    if variant.startswith("ours"):
        model: nn.Module = invertible.MemorySaving(glow, enabled=variant == "ours-memory")

        def loss_of(x: torch.Tensor) -> torch.Tensor:
            z, logdet = model(x)
            return -(standard_normal_log_prob(z) + logdet).mean() / dims
    else:
        import memcnn

        class Step(nn.Module):  # one flow step, as memcnn wants it: forward and inverse without log-dets
            def __init__(self, layers: list[nn.Module]) -> None:
                super().__init__()
                self.layers = nn.ModuleList(layers)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                for layer in self.layers:
                    x = layer(x)[0]
                return x

            def inverse(self, y: torch.Tensor) -> torch.Tensor:
                for layer in reversed(self.layers):
                    y = layer.inverse(y)[0]
                return y

        squeeze, steps = glow.layers[0], list(glow.layers[1:])
        wrapped = [memcnn.InvertibleModuleWrapper(Step(steps[i : i + 3]), keep_input=False,
                                                  keep_input_inverse=False, disable=variant == "memcnn-none")
                   for i in range(0, len(steps), 3)]
        stack = nn.Sequential(*wrapped)
        model = stack

        def loss_of(x: torch.Tensor) -> torch.Tensor:
            z = stack(squeeze(x)[0])
            return 0.5 * z.pow(2).mean()

    params = list(glow.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-4)

    marks: list[float] = []

    def step() -> tuple[float, float]:
        x = data.clone()  # memcnn frees its inputs' storage
        start, cpu = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(x)
        loss.backward()
        marks.append(_rss_mb())
        optimizer.step()
        return time.perf_counter() - start, time.process_time() - cpu

    # Adam's state is model-sized memory like the parameters: allocate it before the baseline (a step with
    # zero gradients leaves the parameters unchanged)
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    baseline = _rss_mb()
    first = step()
    peak, peak_fb = _rss_mb() - baseline, marks[0] - baseline
    times = [step() for _ in range(repeats)]
    result: dict[str, object] = {"variant": variant, "depth": depth, "peak_mb": peak, "peak_fb_mb": peak_fb,
                                 "first_s": first[0],
                                 "step_s": statistics.median(t[0] for t in times),
                                 "cpu_s": statistics.median(t[1] for t in times), "times": times,
                                 "baseline_mb": baseline, "params": sum(p.numel() for p in params)}
    if variant == "ours-memory":
        assert isinstance(model, invertible.MemorySaving)
        with model.checking() as run:
            x = data.clone()
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = loss_of(x)
        loss.backward()
        result["check_s"] = time.perf_counter() - start
        check = run.result if run is not None else None
        if check is not None:
            result.update(angle=check.angle, rel_error=check.rel_error, agreed=check.agreed,
                          reconstruction_error=check.reconstruction_error)
    return result


#: glibc malloc settings that keep freed blocks in the process instead of returning them to the OS. Without them
#: a memory-saving step, which frees and reallocates its per-layer activations, pays ~150k minor page faults per
#: step (~600 MB of fresh zeroed pages) on this architecture; standard backprop pays ~30k. Peak memory is
#: unchanged in principle (the peak is reached either way); applied to every variant alike.
KEEP_FREED_MEMORY = {"MALLOC_MMAP_THRESHOLD_": "1000000000", "MALLOC_TRIM_THRESHOLD_": "1000000000"}


def run_one(variant: str, depth: int, args: argparse.Namespace) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--worker", variant, str(depth), "--batch", str(args.batch), "--repeats",
           str(args.repeats), "--hidden", str(args.hidden)]
    env = {**os.environ, **(KEEP_FREED_MEMORY if args.keep_freed_memory else {})}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        return {"variant": variant, "depth": depth, "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: list[dict[str, object]], depths: list[int]) -> list[str]:
    by = {(r["variant"], r["depth"]): r for r in results}
    rows = ["| variant | depth | peak +MB forward+backward | peak +MB whole step | s / step | CPU s / step "
            "| vs ours standard (wall / CPU) | log-dets in loss | self-check |",
            "|---|---|---|---|---|---|---|---|---|"]
    for variant in VARIANTS:
        for depth in depths:
            r = by.get((variant, depth))
            if r is None:
                continue
            if "error" in r:
                error = " ".join(r["error"])  # type: ignore[arg-type]
                rows.append(f"| {LABELS[variant]} | {depth} | failed: {error} | | | | | | |")
                continue
            ref = by.get(("ours-standard", depth), {})
            ratio = ""
            if "step_s" in ref:
                ratio = (f"{r['step_s'] / ref['step_s']:.2f}x / "  # type: ignore[operator]
                         f"{r['cpu_s'] / ref['cpu_s']:.2f}x")  # type: ignore[operator]
            logdet = "yes" if variant.startswith("ours") else "no (no API)"
            check = "n/a"
            if "angle" in r:
                verdict = "agree" if r["agreed"] else "DISAGREE"
                check = (f"angle {r['angle']:.1e} rad, rel. error {r['rel_error']:.1e} "
                         f"({verdict}; checked step {r['check_s']:.2f} s)")
            elif variant == "ours-standard":
                check = "(reference)"
            rows.append(f"| {LABELS[variant]} | {depth} | {r['peak_fb_mb']:.0f} | {r['peak_mb']:.0f} | "
                        f"{r['step_s']:.2f} | "
                        f"{r['cpu_s']:.2f} | {ratio} | {logdet} | {check} |")
    return rows


def goals(results: list[dict[str, object]], depths: list[int]) -> list[str]:
    by = {(r["variant"], r["depth"]): r for r in results if "error" not in r}
    lines = []
    lo, hi = min(depths), max(depths)
    for prefix in ("ours", "memcnn"):
        mem = f"{prefix}-memory"
        if (mem, lo) in by and (mem, hi) in by:
            for key, what in (("peak_fb_mb", "forward+backward"), ("peak_mb", "whole step")):
                ratio = by[mem, hi][key] / by[mem, lo][key]  # type: ignore[operator]
                lines.append(f"- {LABELS[mem]}: peak memory ({what}) at depth {hi} is {ratio:.2f}x depth {lo}"
                             + (" (goal: at most 1.2x)" if prefix == "ours" else ""))
        base = "ours-standard" if prefix == "ours" else "memcnn-none"
        for key, what in (("step_s", "wall time"), ("cpu_s", "CPU time")):
            ratios = [by[mem, d][key] / by[base, d][key] for d in depths  # type: ignore[operator]
                      if (mem, d) in by and (base, d) in by]
            if ratios:
                lines.append(f"- {LABELS[mem]}: step {what} {min(ratios):.2f}x-{max(ratios):.2f}x of "
                             f"{LABELS[base]}" + (" (goal: at most 1.5x)" if prefix == "ours" else ""))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--repeats", type=int, default=3, help="timed steps after the measured first step")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--quick", action="store_true", help="depths 4 and 8, one timed step")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "memory_saving.md")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="run every worker with glibc's mmap/trim thresholds raised (see KEEP_FREED_MEMORY)")
    parser.add_argument("--worker", nargs=2, metavar=("VARIANT", "DEPTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.batch, args.repeats, args.hidden)))
        return
    if args.quick:
        args.depths, args.repeats = [4, 8], 1

    import torch

    load = os.getloadavg()[0]
    results = []
    for depth in args.depths:
        for variant in args.variants:
            r = run_one(variant, depth, args)
            results.append(r)
            print(json.dumps(r), file=sys.stderr)
    lines = [
        "# Memory-saving backprop: one training step of an affine Glow stack",
        "",
        f"Command: `python benchmarks/memory_saving.py {' '.join(sys.argv[1:])}`. "
        f"Batch {args.batch} x 3 x 32 x 32, "
        f"squeeze to 12 x 16 x 16, `depth` x (ActNorm, 1x1 conv, affine coupling with {args.hidden} hidden "
        f"channels); one fresh process per row. Peak: `ru_maxrss` increase during the first step over the "
        f"peak after building the model, the batch and Adam's state, up to the end of the backward pass and "
        f"of the whole step (which adds the gradients and the update's temporaries: they grow with the "
        f"parameter count, not the activations); time: median of {args.repeats} further steps (forward, "
        "backward, Adam step), wall "
        "clock and CPU time of the process (the CPU time is less disturbed by other processes on a shared "
        "machine).",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads; load average {load:.1f} at the start (timings are noisy when it "
        "exceeds the core count). glibc malloc: "
        + ("mmap and trim thresholds raised to 1 GB for every variant (`--keep-freed-memory`): freed memory "
           "stays in the process, so steps do not pay page faults for memory returned to the OS."
           if args.keep_freed_memory else
           "default settings (freed large blocks go back to the OS and every step pays page faults to get "
           "them again, which costs memory-saving backprop most; see `--keep-freed-memory`)."),
        "",
        *table(results, args.depths),
        "",
        *goals(results, args.depths),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
